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
# AZURE_SUBSCRIPTION_ID: the subscription every `az` call (and the publish) names; azd sets it,
# else the Azure CLI's current subscription is used.
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
if (-not $Deployment -and -not $env:FUNCTION_APP_NAME -and (Get-Command azd -ErrorAction SilentlyContinue)) {
    foreach ($line in (& azd env get-values)) {
        if ($line -match '^([A-Za-z0-9_]+)=(.*)$') {
            [Environment]::SetEnvironmentVariable($matches[1], ($matches[2] -replace '^"|"$'))
        }
    }
}
# The subscription every az call names (--subscription), as in postdeploy.sh: azd's
# AZURE_SUBSCRIPTION_ID, else the Azure CLI's current subscription, named once here.
$subscription = $env:AZURE_SUBSCRIPTION_ID
if (-not $subscription) {
    # az's own error, if any, goes to the console as it is.
    $subscription = az account show --query id --output tsv
    if ($LASTEXITCODE -ne 0 -or -not $subscription) {
        Fail "AZURE_SUBSCRIPTION_ID is not set and the Azure CLI has no current subscription (az's error above): run 'az login', or set AZURE_SUBSCRIPTION_ID to the deployment's subscription"
    }
    Say "AZURE_SUBSCRIPTION_ID is not set: using the Azure CLI's current subscription $subscription (set AZURE_SUBSCRIPTION_ID to use another)"
}
if ($Deployment) {
    foreach ($name in $names) {
        $value = az deployment sub show --subscription $subscription --name $Deployment --query "properties.outputs.$name.value" --output tsv
        if ($LASTEXITCODE -ne 0) { Fail "cannot read output $name of deployment $Deployment in subscription $subscription (az's error above); list the deployments with: az deployment sub list --subscription $subscription --output table" }
        [Environment]::SetEnvironmentVariable($name, $value)
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
        $output = & func azure functionapp publish $app --subscription $subscription 2>&1 | Out-String
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
    # az's error is shown (masked), never hidden; a failed lookup is retried like a missing key
    # (the host may not answer yet), unless no wait can fix it (postdeploy.sh says why).
    $output = az functionapp keys list --subscription $subscription --resource-group $group --name $app --query "systemKeys.blobs_extension" --output tsv 2>&1
    $failed = $LASTEXITCODE -ne 0
    $keyError = ($output | Where-Object { $_ -is [System.Management.Automation.ErrorRecord] }) -join "`n"
    $key = (($output | Where-Object { $_ -isnot [System.Management.Automation.ErrorRecord] }) -join "").Trim()
    if (-not $failed -and $key) { break }
    if ($failed) {
        [Console]::Error.WriteLine((Mask $keyError))
        if ($keyError -match "az login|doesn't exist in cloud|SubscriptionNotFound") {
            Fail "az functionapp keys list failed (az's error above) and waiting cannot fix it: log in with 'az login', and check that subscription $subscription is the deployment's (AZURE_SUBSCRIPTION_ID)"
        }
    }
    if ($n -ge $attempts) {
        if ($failed) { Fail "az functionapp keys list still fails after $attempts attempts (az's error above): check that you are logged in to subscription $subscription ('az account show'), that $app exists in resource group $group, and that your account may list its keys (Microsoft.Web/sites/host/listkeys/action, e.g. Contributor or Website Contributor). Then run this script again." }
        Fail "the host of $app has not created its blobs_extension key after $attempts attempts; is the app published? Then run this script again."
    }
    if ($failed) {
        Say "az could not read the keys of $app (error above): the host may still be starting; retrying in ${pause}s ($n/$attempts)"
    }
    else {
        Say "no blobs_extension key yet: the host has not started with the blob trigger (or cannot reach storage yet); retrying in ${pause}s ($n/$attempts)"
    }
    # A request starts an idle host; 401 without a function key is expected (and throws here).
    # Optional: it only hastens the start, so a failure to connect is reported, never fatal.
    try { Invoke-WebRequest -Uri "$url/api/activity" -Method Get -TimeoutSec 60 -UseBasicParsing | Out-Null }
    catch {
        if (-not $_.Exception.Response) { Say "could not call $url/api/activity to wake the host (optional): $($_.Exception.Message)" }
    }
    Start-Sleep -Seconds $pause
}

# The extra quotes keep az.cmd from splitting the URL at '&' (as the quickstart's script does).
$endpoint = """$url/runtime/webhooks/blobs?functionName=Host.Functions.$($env:BLOB_TRIGGER_FUNCTION_NAME)&code=$key"""

Say "creating Event Grid subscription $($env:EVENTGRID_SUBSCRIPTION_NAME) on $($env:EVENTGRID_SYSTEM_TOPIC_NAME)"
for ($n = 1; ; $n++) {
    # Create or update (the API is create-or-update): the same settings on every run.
    $errors = az eventgrid system-topic event-subscription create `
        --subscription $subscription `
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
