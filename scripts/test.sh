#!/usr/bin/env bash
# The whole test suite: lint, types, then every test (the tests start Azurite on loopback
# and stop it afterwards). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh

# The browser tests (tests/test_page_browser.py) drive Debian's Chromium through Playwright:
# Playwright's own browser download is not reachable from where this runs. Never skipped, so
# installed here when missing, or the run stops and says why.
chromium=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
  echo "installing Debian's chromium for the browser tests" >&2
  if [ "$(id -u)" -eq 0 ]; then
    as_root=()
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
  else
    echo "chromium is missing at $chromium and cannot be installed without root: run" \
      "'apt-get install chromium' as root (or set CHROMIUM to a Chromium binary)" >&2
    exit 2
  fi
  if ! { "${as_root[@]}" apt-get update -qq &&
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; then
    echo "could not install chromium with apt-get (its error above): the browser tests need it" >&2
    exit 2
  fi
fi

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
bash infra/check.sh  # checkov over the Bicep, in its own virtual environment
