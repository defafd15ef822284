#!/usr/bin/env bash
# The whole test suite: lint, types, then every test (the tests start Azurite on loopback
# and stop it afterwards). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
bash infra/check.sh  # checkov over the Bicep, in its own virtual environment
