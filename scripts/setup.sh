#!/usr/bin/env bash
# Installs what the project needs, once: a virtual environment with the pinned requirements,
# and Azurite from npm. Re-runs only what changed (sourced by run.sh and test.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "Python 3.11 or newer is needed (found: $("$python" --version 2>&1))" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=.venv/.requirements.sha256
wanted=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
  echo "$wanted" > "$stamp"
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "Node.js 18 or newer with npm is needed for Azurite" >&2
  exit 2
fi
lock_stamp=node_modules/.package-lock.sha256
wanted_lock=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -x node_modules/.bin/azurite ] || [ "$(cat "$lock_stamp" 2>/dev/null)" != "$wanted_lock" ]; then
  npm ci --silent --no-audit --no-fund
  echo "$wanted_lock" > "$lock_stamp"
fi
