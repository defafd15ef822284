#!/usr/bin/env bash
# The main job on this machine: installs what it needs, starts Azurite on loopback, runs the
# whole pipeline on a generated day of Activity Log traffic and prints what it indexed.
# Arguments go to `python -m shared run` (e.g. --json, --events 10000, --source DIR).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
exec .venv/bin/python -m shared run "$@"
