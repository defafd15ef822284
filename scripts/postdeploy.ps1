# postdeploy: wires what needs the published app. Run by `azd up` / `azd deploy` on Windows
# (azure.yaml, hooks.postdeploy); the same steps as scripts/postdeploy.sh, which documents them.
#
# The blob trigger's Event Grid subscription can only be made once the app is published and its
# host has started: the webhook URL carries the host's `blobs_extension` system key, and Event
# Grid validates the endpoint when the subscription is created. Pattern of the Azure Functions
# azd quickstart for that trigger (Azure-Samples/functions-quickstart-python-azd-eventgrid-blob,
# scripts/post-up.ps1), with retries while role assignments propagate.
#
#   scripts/postdeploy.ps1                          values from the environment or azd
#   scripts/postdeploy.ps1 -Deployment NAME         values from `az deployment sub show`
#   scripts/postdeploy.ps1 -Deployment NAME -Publish
#                                                   `func azure functionapp publish` first, again
#                                                   while storage answers 403
# POSTDEPLOY_ATTEMPTS (default 30) and POSTDEPLOY_RETRY_SECONDS (default 20) bound every wait.
param(
    [string]$Deployment = "",
    [switch]$Publish
)
$ErrorActionPreference = "Stop"

$attempts = if ($env:POSTDEPLOY_ATTEMPTS) { [int]$env:POSTDEPLOY_ATTEMPTS } else { 30 }
$pause = if ($env:POSTDEPLOY_RETRY_SECONDS) { [int]$env:POSTDEPLOY_RETRY_SECONDS } else { 20 }

function Say([string]$Message) { [Console]::Error.WriteLine("postdeploy: $Message") }
function Fail([string]$Message) { Say $Message; exit 1 }
function Mask([string]$Text) { $Text -replace 'code=[^&"'' ]*', 'code=***' }

if (-not (Get-Command az -ErrorAction SilentlyContinue)) {
    Fail "the Azure CLI (az) is required: https://learn.microsoft.com/cli/azure/install-azure-cli"
}

$names = @(
    "AZURE_RESOURCE_GROUP", "FUNCTION_APP_NAME", "FUNCTION_APP_URL", "EVENTGRID_SYSTEM_TOPIC_NAME",
    "EVENTGRID_SUBSCRIPTION_NAME", "EVENTGRID_SUBJECT_BEGINS_WITH", "EVENTGRID_MAX_DELIVERY_ATTEMPTS",
    "EVENTGRID_EVENT_TTL_MINUTES", "BLOB_TRIGGER_FUNCTION_NAME"
)
if ($Deployment) {
    foreach ($name in $names) {
        $value = az deployment sub show --name $Deployment --query "properties.outputs.$name.value" --output tsv
        if ($LASTEXITCODE -ne 0) { Fail "cannot read output $name of deployment $Deployment" }
        [Environment]::SetEnvironmentVariable($name, $value)
    }
}
elseif (-not $env:FUNCTION_APP_NAME -and (Get-Command azd -ErrorAction SilentlyContinue)) {
    foreach ($line in (& azd env get-values)) {
        if ($line -match '^([A-Za-z0-9_]+)=(.*)$') {
            [Environment]::SetEnvironmentVariable($matches[1], ($matches[2] -replace '^"|"$'))
        }
    }
}
$required = @(
    "AZURE_RESOURCE_GROUP", "FUNCTION_APP_NAME", "FUNCTION_APP_URL", "EVENTGRID_SYSTEM_TOPIC_NAME",
    "EVENTGRID_SUBSCRIPTION_NAME", "EVENTGRID_SUBJECT_BEGINS_WITH", "BLOB_TRIGGER_FUNCTION_NAME"
)
foreach ($name in $required) {
    if (-not [Environment]::GetEnvironmentVariable($name)) {
        Fail "$name is not set: run under azd, or pass -Deployment <name of the az deployment sub create run>"
    }
}
$group = $env:AZURE_RESOURCE_GROUP
$app = $env:FUNCTION_APP_NAME
$url = $env:FUNCTION_APP_URL.TrimEnd("/")
$maxDelivery = if ($env:EVENTGRID_MAX_DELIVERY_ATTEMPTS) { $env:EVENTGRID_MAX_DELIVERY_ATTEMPTS } else { "30" }
$ttl = if ($env:EVENTGRID_EVENT_TTL_MINUTES) { $env:EVENTGRID_EVENT_TTL_MINUTES } else { "1440" }

# --- publish (the script path; azd publishes the app itself) ----------------------------------
if ($Publish) {
    if (-not (Get-Command func -ErrorAction SilentlyContinue)) { Fail "Azure Functions Core Tools (func) are required for -Publish" }
    for ($n = 1; ; $n++) {
        $output = & func azure functionapp publish $app 2>&1 | Out-String
        Write-Output $output
        if ($LASTEXITCODE -eq 0) { break }
        # Only a 403 from storage is worth waiting for: a role assignment still propagating.
        if ($output -notmatch '403|Forbidden|AuthorizationPermissionMismatch|AuthorizationFailure') {
            Fail "func azure functionapp publish failed (not a 403: not retried)"
        }
        if ($n -ge $attempts) { Fail "func azure functionapp publish: storage still answers 403 after $attempts attempts" }
        Say "storage refused the upload (403): a role assignment is still propagating; retrying in ${pause}s ($n/$attempts)"
        Start-Sleep -Seconds $pause
    }
}

# --- the blob trigger's Event Grid subscription -----------------------------------------------
Say "waiting for the host's blobs_extension key"
for ($n = 1; ; $n++) {
    $key = az functionapp keys list --resource-group $group --name $app --query "systemKeys.blobs_extension" --output tsv 2>$null
    if ($LASTEXITCODE -eq 0 -and $key) { break }
    if ($n -ge $attempts) { Fail "the host of $app has not created its blobs_extension key after $attempts attempts; is the app published? Then run this script again." }
    Say "no blobs_extension key yet: the host has not started with the blob trigger (or cannot reach storage yet); retrying in ${pause}s ($n/$attempts)"
    # A request starts an idle host; 401 without a function key is expected.
    try { Invoke-WebRequest -Uri "$url/api/activity" -Method Get -TimeoutSec 60 -UseBasicParsing | Out-Null } catch { }
    Start-Sleep -Seconds $pause
}

# The extra quotes keep az.cmd from splitting the URL at '&' (as the quickstart's script does).
$endpoint = """$url/runtime/webhooks/blobs?functionName=Host.Functions.$($env:BLOB_TRIGGER_FUNCTION_NAME)&code=$key"""

Say "creating Event Grid subscription $($env:EVENTGRID_SUBSCRIPTION_NAME) on $($env:EVENTGRID_SYSTEM_TOPIC_NAME)"
for ($n = 1; ; $n++) {
    # Create or update (the API is create-or-update): the same settings on every run.
    $errors = az eventgrid system-topic event-subscription create `
        --name $env:EVENTGRID_SUBSCRIPTION_NAME `
        --resource-group $group `
        --system-topic-name $env:EVENTGRID_SYSTEM_TOPIC_NAME `
        --endpoint-type webhook `
        --endpoint $endpoint `
        --event-delivery-schema eventgridschema `
        --included-event-types Microsoft.Storage.BlobCreated `
        --subject-begins-with $env:EVENTGRID_SUBJECT_BEGINS_WITH `
        --max-delivery-attempts $maxDelivery `
        --event-ttl $ttl `
        --max-events-per-batch 1 `
        --preferred-batch-size-in-kilobytes 64 `
        --output none 2>&1 | Out-String
    if ($LASTEXITCODE -eq 0) { break }
    [Console]::Error.WriteLine((Mask $errors))
    if ($n -ge $attempts) { Fail "creating the Event Grid subscription: still failing after $attempts attempts" }
    Say "creating the Event Grid subscription failed (Event Grid validates the webhook; the host may still be starting); retrying in ${pause}s ($n/$attempts)"
    Start-Sleep -Seconds $pause
}
Say "the blob trigger of $app is wired: Event Grid delivers BlobCreated for $($env:EVENTGRID_SUBJECT_BEGINS_WITH)"
