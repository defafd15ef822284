#!/bin/sh
# postdeploy: wires what needs the published app. Run by `azd up` / `azd deploy` (azure.yaml,
# hooks.postdeploy), or by hand after `az deployment sub create` (infra/README.md).
#
# The blob trigger's Event Grid subscription can only be made once the app is published and its
# host has started: the webhook URL carries the host's `blobs_extension` system key, which the
# host creates when it first loads the Event Grid blob trigger, and Event Grid validates the
# endpoint when the subscription is created. This is the pattern of the Azure Functions azd
# quickstart for that trigger (Azure-Samples/functions-quickstart-python-azd-eventgrid-blob,
# scripts/post-up.sh), with retries: right after a deployment the app's role assignments may
# still be propagating, and the host cannot start (nor the key exist) until they have.
#
# Usage:
#   scripts/postdeploy.sh                         values from the environment (azd sets them)
#                                                 or from `azd env get-values`
#   scripts/postdeploy.sh --deployment NAME       values from `az deployment sub show --name NAME`
#   scripts/postdeploy.sh --deployment NAME --publish
#                                                 first `func azure functionapp publish`, again
#                                                 while storage answers 403 (a role assignment
#                                                 still propagating), then the wiring
# Environment: POSTDEPLOY_ATTEMPTS (default 30) and POSTDEPLOY_RETRY_SECONDS (default 20) bound
# every wait: 10 minutes by default. AZURE_SUBSCRIPTION_ID: the subscription every `az` call
# (and the publish) names; azd sets it, else the Azure CLI's current subscription is used.
#
# POSIX sh (azure.yaml runs it with `sh`). It never prints the key.
set -eu

usage() {
  sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'
}

deployment=""
publish=false
while [ $# -gt 0 ]; do
  case "$1" in
    --deployment)
      [ $# -ge 2 ] || { echo "postdeploy: --deployment needs a deployment name" >&2; exit 2; }
      deployment=$2
      shift 2
      ;;
    --deployment=*)
      deployment=${1#*=}
      shift
      ;;
    --publish)
      publish=true
      shift
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *)
      echo "postdeploy: unknown argument: $1" >&2
      usage >&2
      exit 2
      ;;
  esac
done

attempts=${POSTDEPLOY_ATTEMPTS:-30}
pause=${POSTDEPLOY_RETRY_SECONDS:-20}

say() { echo "postdeploy: $*" >&2; }
fail() {
  say "$*"
  exit 1
}
# An error output with any key in it masked.
mask() { sed 's/code=[^&"'"'"' ]*/code=***/g'; }

command -v az >/dev/null 2>&1 || fail "the Azure CLI (az) is required: https://learn.microsoft.com/cli/azure/install-azure-cli"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# --- the deployment's outputs ------------------------------------------------------------------

if [ -z "$deployment" ] && [ -z "${FUNCTION_APP_NAME:-}" ] && command -v azd >/dev/null 2>&1; then
  # azd passes the environment's values to hooks; this also covers a run by hand.
  azd env get-values >"$scratch/env"
  while IFS='=' read -r key value; do
    case "$key" in
      '' | *[!A-Za-z0-9_]*) continue ;;
    esac
    value=${value#\"}
    value=${value%\"}
    export "$key=$value"
  done <"$scratch/env"
fi

# The subscription every az call names (--subscription), so that none depends on the Azure CLI's
# current one: azd gives its hooks the environment's values, AZURE_SUBSCRIPTION_ID among them
# (Learn, "Work with Azure Developer CLI environment variables"; main.bicep outputs it too).
# Without azd, and unless it is set, the CLI's current subscription, named once here.
subscription=${AZURE_SUBSCRIPTION_ID:-}
if [ -z "$subscription" ]; then
  # az's own error, if any, goes to stderr as it is.
  subscription=$(az account show --query id --output tsv) ||
    fail "AZURE_SUBSCRIPTION_ID is not set and the Azure CLI has no current subscription (az's error above): run 'az login', or set AZURE_SUBSCRIPTION_ID to the deployment's subscription"
  [ -n "$subscription" ] || fail "AZURE_SUBSCRIPTION_ID is not set and 'az account show' named no subscription: set AZURE_SUBSCRIPTION_ID"
  say "AZURE_SUBSCRIPTION_ID is not set: using the Azure CLI's current subscription $subscription (set AZURE_SUBSCRIPTION_ID to use another)"
fi

# NAME=value from the deployment's outputs (main.bicep), one `az` call each.
from_deployment() {
  az deployment sub show --subscription "$subscription" --name "$deployment" \
    --query "properties.outputs.$1.value" --output tsv
}

if [ -n "$deployment" ]; then
  for name in AZURE_RESOURCE_GROUP FUNCTION_APP_NAME FUNCTION_APP_URL EVENTGRID_SYSTEM_TOPIC_NAME \
    EVENTGRID_SUBSCRIPTION_NAME EVENTGRID_SUBJECT_BEGINS_WITH EVENTGRID_MAX_DELIVERY_ATTEMPTS \
    EVENTGRID_EVENT_TTL_MINUTES BLOB_TRIGGER_FUNCTION_NAME; do
    value=$(from_deployment "$name") ||
      fail "cannot read output $name of deployment $deployment in subscription $subscription (az's error above); list the deployments with: az deployment sub list --subscription $subscription --output table"
    export "$name=$value"
  done
fi

for name in AZURE_RESOURCE_GROUP FUNCTION_APP_NAME FUNCTION_APP_URL EVENTGRID_SYSTEM_TOPIC_NAME \
  EVENTGRID_SUBSCRIPTION_NAME EVENTGRID_SUBJECT_BEGINS_WITH BLOB_TRIGGER_FUNCTION_NAME; do
  eval "value=\${$name:-}"
  [ -n "$value" ] || fail "$name is not set: run under azd, or pass --deployment <name of the az deployment sub create run>"
done
group=$AZURE_RESOURCE_GROUP
app=$FUNCTION_APP_NAME
url=${FUNCTION_APP_URL%/}

# Retry "$@" until it succeeds, at most $attempts times, $pause seconds apart. The command's
# error output is shown with any key in it masked.
retry() {
  what=$1
  shift
  n=1
  while :; do
    if "$@" 2>"$scratch/err"; then
      return 0
    fi
    mask <"$scratch/err" >&2
    [ "$n" -lt "$attempts" ] || fail "$what: still failing after $attempts attempts"
    say "$what failed; retrying in ${pause}s ($n/$attempts): role assignments can take minutes to propagate"
    sleep "$pause"
    n=$((n + 1))
  done
}

# --- publish (the script path; azd publishes the app itself) -----------------------------------

publish_once() {
  if func azure functionapp publish "$app" --subscription "$subscription" >"$scratch/publish" 2>&1; then
    cat "$scratch/publish"
    return 0
  fi
  cat "$scratch/publish"
  # Only a 403 from storage is worth waiting for: the app's identity cannot write its
  # deployment container until its Storage Blob Data Owner assignment has propagated.
  if grep -Eq '403|Forbidden|AuthorizationPermissionMismatch|AuthorizationFailure' "$scratch/publish"; then
    return 1
  fi
  fail "func azure functionapp publish failed (not a 403: not retried)"
}

if [ "$publish" = true ]; then
  command -v func >/dev/null 2>&1 || fail "Azure Functions Core Tools (func) are required for --publish"
  say "publishing $app"
  retry "func azure functionapp publish (storage answered 403)" publish_once
fi

# --- the blob trigger's Event Grid subscription ------------------------------------------------

# Prints the key, or nothing: while the host has not created it (az succeeds, the key is empty),
# or when az fails, whose error is then shown (masked) and kept in $scratch/key-error. Always
# returns 0, as the wait below decides: the first minutes after a deployment the host may not
# answer yet, so a failed lookup is retried like a missing key, and only an error no wait can
# fix (not logged in, no such subscription) stops it at once.
blobs_extension_key() {
  if az functionapp keys list --subscription "$subscription" --resource-group "$group" --name "$app" \
    --query "systemKeys.blobs_extension" --output tsv 2>"$scratch/key-error"; then
    rm -f "$scratch/key-error"
  else
    mask <"$scratch/key-error" >&2
  fi
}

key_lookup_failed() { [ -s "$scratch/key-error" ]; }

say "waiting for the host's blobs_extension key"
n=1
key=$(blobs_extension_key)
while [ -z "$key" ]; do
  if key_lookup_failed && grep -Eq "az login|doesn't exist in cloud|SubscriptionNotFound" "$scratch/key-error"; then
    fail "az functionapp keys list failed (az's error above) and waiting cannot fix it: log in with 'az login', and check that subscription $subscription is the deployment's (AZURE_SUBSCRIPTION_ID)"
  fi
  if [ "$n" -ge "$attempts" ]; then
    key_lookup_failed && fail "az functionapp keys list still fails after $attempts attempts (az's error above): check that you are logged in to subscription $subscription ('az account show'), that $app exists in resource group $group, and that your account may list its keys (Microsoft.Web/sites/host/listkeys/action, e.g. Contributor or Website Contributor). Then run this script again."
    fail "the host of $app has not created its blobs_extension key after $attempts attempts; is the app published? Then run this script again."
  fi
  if key_lookup_failed; then
    say "az could not read the keys of $app (error above): the host may still be starting; retrying in ${pause}s ($n/$attempts)"
  else
    say "no blobs_extension key yet: the host has not started with the blob trigger (or cannot reach storage yet); retrying in ${pause}s ($n/$attempts)"
  fi
  # A request starts an idle host; 401 without a function key is expected. Optional: it only
  # hastens the start, so a failure is reported, never fatal.
  if command -v curl >/dev/null 2>&1; then
    curl --silent --show-error --output /dev/null --max-time 60 "$url/api/activity" ||
      say "could not call $url/api/activity to wake the host (optional; curl's error above)"
  fi
  sleep "$pause"
  n=$((n + 1))
  key=$(blobs_extension_key)
done

endpoint="$url/runtime/webhooks/blobs?functionName=Host.Functions.$BLOB_TRIGGER_FUNCTION_NAME&code=$key"

# Create or update (the API is create-or-update): the same settings on every run.
create_subscription() {
  az eventgrid system-topic event-subscription create \
    --subscription "$subscription" \
    --name "$EVENTGRID_SUBSCRIPTION_NAME" \
    --resource-group "$group" \
    --system-topic-name "$EVENTGRID_SYSTEM_TOPIC_NAME" \
    --endpoint-type webhook \
    --endpoint "$endpoint" \
    --event-delivery-schema eventgridschema \
    --included-event-types Microsoft.Storage.BlobCreated \
    --subject-begins-with "$EVENTGRID_SUBJECT_BEGINS_WITH" \
    --max-delivery-attempts "${EVENTGRID_MAX_DELIVERY_ATTEMPTS:-30}" \
    --event-ttl "${EVENTGRID_EVENT_TTL_MINUTES:-1440}" \
    --max-events-per-batch 1 \
    --preferred-batch-size-in-kilobytes 64 \
    --output none
}

say "creating Event Grid subscription $EVENTGRID_SUBSCRIPTION_NAME on $EVENTGRID_SYSTEM_TOPIC_NAME"
# Event Grid validates the webhook now; the blob extension answers once the host is up.
retry "creating the Event Grid subscription" create_subscription
say "the blob trigger of $app is wired: Event Grid delivers BlobCreated for $EVENTGRID_SUBJECT_BEGINS_WITH"
