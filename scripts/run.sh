#!/usr/bin/env bash
# The main job on this machine: installs what it needs, starts Azurite on loopback, runs the
# whole pipeline on a generated day of Activity Log traffic, prints what it indexed, then how to
# open the search page on it (`python -m shared serve`).
# Arguments go to `python -m shared run` (e.g. --json, --events 10000, --source DIR).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
status=0
.venv/bin/python -m shared run "$@" || status=$?
if [ "$status" -eq 0 ]; then
  # The data just indexed stays where `serve` looks for it: AzureWebJobsStorage when set, else
  # Azurite's default ports with its data in .azurite/. On standard error: --json keeps
  # standard output one JSON object.
  {
    echo
    echo "Search it in a browser: start the page on this data with"
    echo "  cd $(pwd) && .venv/bin/python -m shared serve"
    echo "then open http://127.0.0.1:7071/api/search (Ctrl-C stops it)."
  } >&2
fi
exit "$status"
