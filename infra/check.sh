#!/usr/bin/env bash
# Static checks of the Bicep templates: checkov, in its own virtualenv (.venv-infra) so that its
# many dependencies stay out of the app's .venv. Fails on any failed check and on any file
# checkov could not parse (checkov itself only logs those and scans the rest).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python=${PYTHON:-python3}
venv=.venv-infra
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
stamp=$venv/.requirements.sha256
wanted=$(sha256sum requirements-infra.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements-infra.txt
  echo "$wanted" > "$stamp"
fi

report=$(mktemp)
trap 'rm -f "$report" "$report.log"' EXIT
# --skip-download: no calls to Prisma Cloud (no account is used; offline runs stay quiet).
# Exit status comes from the summary below, not from checkov.
"$venv/bin/checkov" --directory infra --framework bicep --skip-download --output json \
  > "$report" 2> "$report.log" || true

"$venv/bin/python" - "$report" "$report.log" <<'EOF'
import json
import sys

path, log = sys.argv[1], sys.argv[2]
try:
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
except (OSError, ValueError):
    sys.stderr.write(open(log, encoding="utf-8").read())
    sys.exit("checkov produced no JSON report")
reports = data if isinstance(data, list) else [data]
failed = parse_errors = 0
for report in reports:
    summary = report.get("summary", {})
    results = report.get("results", {})
    print(
        f"checkov {summary.get('checkov_version', '?')} {report.get('check_type', '')}: "
        f"{summary.get('resource_count', 0)} resources, {summary.get('passed', 0)} passed, "
        f"{summary.get('failed', 0)} failed, {summary.get('skipped', 0)} skipped, "
        f"{summary.get('parsing_errors', 0)} parsing errors"
    )
    for check in results.get("failed_checks", []):
        print(f"  FAILED {check['check_id']} {check['resource']} ({check['file_path']}): {check['check_name']}")
    for check in results.get("skipped_checks", []):
        reason = (check.get("check_result") or {}).get("suppress_comment", "")
        print(f"  skipped {check['check_id']} {check['resource']}: {reason}")
    for name in results.get("parsing_errors", []):
        print(f"  PARSING ERROR (file not scanned): {name}")
    failed += summary.get("failed", 0)
    parse_errors += summary.get("parsing_errors", 0)
if not reports or not any(r.get("summary", {}).get("resource_count") for r in reports):
    sys.exit("checkov scanned no Bicep resources")
sys.exit(1 if failed or parse_errors else 0)
EOF
