// The Flex Consumption plan and the Python function app, with every app setting the code
// reads (shared/settings.py is the single source of the names; tests/test_infra.py holds the
// set in siteConfig.appSettings below equal to it). Every connection is identity-based: the app authenticates as the
// user-assigned identity everywhere, and no setting holds a key or a connection string except
// APPLICATIONINSIGHTS_CONNECTION_STRING, which carries no secret (an ingestion endpoint and an
// instrumentation key that Entra ID authentication makes useless on its own).

@description('Name of the function app (globally unique: it is the azurewebsites.net host name).')
param name string

@description('Name of the Flex Consumption plan.')
param planName string

@description('Azure region of the plan and the app. Must offer Flex Consumption.')
param location string

@description('Tags applied to the plan and the app.')
param tags object = {}

@description('Resource id of the user-assigned identity the app runs as.')
param identityId string

@description('Client id of that identity: every `__clientId` setting names it.')
param identityClientId string

@description('Blob endpoint of that account (with trailing slash).')
param blobEndpoint string

@description('Queue endpoint of that account (with trailing slash).')
param queueEndpoint string

@description('Table endpoint of that account (with trailing slash).')
param tableEndpoint string

@description('Container Flex Consumption deploys the app package to.')
param deploymentContainerName string

@description('Name of the Application Insights component the app reports to.')
param applicationInsightsName string

// Python 3.12 by default; 3.11 stays allowed (both are supported on Flex Consumption: Learn,
// "Supported languages in Azure Functions", https://learn.microsoft.com/azure/azure-functions/supported-languages,
// and `az functionapp list-flexconsumption-runtimes`). The azd Flex Consumption quickstarts
// deploy Python 3.12 too (Azure-Samples/functions-quickstart-python-http-azd).
@description('Python version of the app (functionAppConfig.runtime.version).')
@allowed([
  '3.11'
  '3.12'
])
param pythonVersion string = '3.12'

// Learn's Flex Consumption pages disagree on the lowest maximum instance count: "Flex
// Consumption plan", Considerations, says "The lowest maximum scale is currently 40"
// (https://learn.microsoft.com/azure/azure-functions/flex-consumption-plan#considerations),
// and versions of "Event-driven scaling", Limit scale-out, have said 40 and 1
// (https://learn.microsoft.com/azure/azure-functions/event-driven-scaling#limit-scale-out).
// 40 is this template's floor, so a deployment succeeds under either rule. The maximum
// applies per function group (the Event Hub function alone reads at most one partition per
// instance, so it never needs more instances than the hub has partitions).
@description('Most instances each function group scales out to (40 to 1000).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory per instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Spread the plan\'s instances over availability zones. Only in regions where Flex Consumption offers zone redundancy.')
param zoneRedundant bool = false

@description('ACTIVITYLOG_EVENTHUB__fullyQualifiedNamespace: the namespace host name.')
param eventHubFullyQualifiedNamespace string

@description('ACTIVITYLOG_EVENTHUB_NAME: the hub the Activity Log streams to.')
param eventHubName string

@description('ACTIVITYLOG_EVENTHUB_CONSUMER_GROUP: the app\'s consumer group.')
param eventHubConsumerGroup string

@description('ACTIVITYLOG_ARCHIVE_CONTAINER: the container the diagnostic setting writes PT1H.json blobs to.')
param archiveContainerName string

@description('ACTIVITYLOG_STORE_PREFIX: prefix of every table and container the app owns.')
param storePrefix string

@description('ACTIVITYLOG_ARCHIVE_TIER: access tier the app uploads its record blobs at.')
@allowed([
  'Hot'
  'Cool'
  'Cold'
])
param archiveTier string = 'Cold'

@description('ACTIVITYLOG_CATCHUP_SCHEDULE: NCRONTAB (six fields, UTC) of the archive catch-up timer.')
param catchupSchedule string

@description('ACTIVITYLOG_CATCHUP_LOOKBACK_HOURS: hours of archive the catch-up re-reads.')
param catchupLookbackHours int

@description('ACTIVITYLOG_SEAL_AFTER_MINUTES: minutes after its hour ends that a PT1H.json is taken as complete.')
param sealAfterMinutes int

@description('ACTIVITYLOG_RETENTION_SCHEDULE: NCRONTAB (six fields, UTC) of the retention timer.')
param retentionSchedule string

@description('ACTIVITYLOG_RETENTION_DAYS: days records and archive blobs are kept (0 keeps forever).')
param retentionDays int

@description('ACTIVITYLOG_RETENTION_CATEGORY_DAYS: per-category overrides, already in the "Category=days,..." form.')
param retentionCategoryDays string

@description('ACTIVITYLOG_RETENTION_DRY_RUN: report what retention would delete without deleting it.')
param retentionDryRun bool

@description('ACTIVITYLOG_RETENTION_TIME_BUDGET_SECONDS: seconds one retention run may take.')
param retentionTimeBudgetSeconds int

@description('ACTIVITYLOG_LOGS_INGESTION_ENDPOINT: logs ingestion endpoint; empty turns forwarding off.')
param logsIngestionEndpoint string

@description('ACTIVITYLOG_LOGS_INGESTION_RULE_ID: immutable id of the data collection rule; empty with the endpoint.')
param logsIngestionRuleId string

@description('ACTIVITYLOG_LOGS_INGESTION_STREAM: stream name (Custom-...); empty with the endpoint.')
param logsIngestionStream string

@description('ACTIVITYLOG_PAGE_ALLOWED_GROUP: object id of the Entra group allowed to use the search page; empty: no group check.')
param pageAllowedGroup string = ''

@description('ACTIVITYLOG_PAGE_ALLOWED_ROLE: app role a user must be assigned to use the search page; empty: no role check.')
param pageAllowedRole string = ''

@description('Name of the service in azure.yaml: `azd deploy` finds the app by its azd-service-name tag.')
param serviceName string = 'api'

// Telemetry, as Learn, "Use OpenTelemetry with Azure Functions" (Python, Application Insights)
// says: https://learn.microsoft.com/azure/azure-functions/opentelemetry-howto?pivots=programming-language-python
// - host.json has "telemetryMode": "OpenTelemetry"; APPLICATIONINSIGHTS_CONNECTION_STRING names
//   the destination.
// - PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true: "the Functions host allows the Python worker
//   process to stream OpenTelemetry logs directly, which prevents duplicate host-level entries",
//   and the worker itself configures the Azure Monitor distro (configure_azure_monitor() at
//   worker start), which is why the page says of the app's own configure_azure_monitor() call:
//   "If you already added PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true in your application
//   settings, you can skip this step". Also Learn, "App settings reference for Azure Functions",
//   PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY. Not PYTHON_ENABLE_OPENTELEMETRY: that one is
//   for OTLP endpoints, and alone it leaves the worker's trace propagator unset (open issue
//   Azure/azure-functions-python-worker#1881: every async invocation fails).
// - APPLICATIONINSIGHTS_AUTHENTICATION_STRING: "When you use Microsoft Entra authentication with
//   OpenTelemetry, you must configure authentication separately for both the host process and
//   the worker process" (same page). The host reads it (Learn, "Configure monitoring for Azure
//   Functions", Require Microsoft Entra authentication); so does the worker's exporter, which
//   builds a ManagedIdentityCredential from it when it is not handed a credential
//   (azure-monitor-opentelemetry-exporter, credential option).
// - The distro honours the standard OpenTelemetry variables (same page, "Configure
//   OpenTelemetry with environment variables"), so the worker's exporter makes the choices
//   the app's code makes when it configures the distro itself (shared/adapters/azure_monitor.py):
//   no library auto-instrumentation (each storage call would be reported by azure_sdk and again
//   by urllib3/requests; keep the list equal to the code's INSTRUMENTATIONS, tests/test_infra.py
//   holds them equal) and every span kept (the distro's default is a rate-limited sampler;
//   always_on is a value both the Python distro and the host's .NET SDK accept, and the host
//   kept every request before too: its samplingSettings excluded Request).
var disabledInstrumentations = 'azure_sdk,django,fastapi,flask,httpx,psycopg2,requests,urllib,urllib3'
var tracesSampler = 'always_on'

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Zone redundancy is the zoneRedundant parameter (off by default) because only some regions offer it for Flex Consumption. A zonal outage delays processing but loses nothing: the hub keeps 7 days and the archive is in (geo-redundant) storage.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    // Linux: Flex Consumption runs on Linux only.
    reserved: true
    zoneRedundant: zoneRedundant
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_78: Flex Consumption has no FTP/FTPS endpoint; code is deployed only through the deployment storage container, with the managed identity.
  // checkov:skip=CKV_AZURE_222: The app must be reachable: Event Grid delivers blob events to its webhook and clients call GET /api/activity (function key required). Private endpoints: see infra/README.md, Hardening.
  // checkov:skip=CKV_AZURE_17: Client certificates would break Event Grid webhook delivery, which presents none; the query API is protected by function keys (auth_level FUNCTION), the search page by Entra ID sign-in (site-auth.bicep).
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero; no minimum instance count exists for failover. Event Hub and Event Grid redeliver, so an instance loss delays work, it does not lose it.
  // checkov:skip=CKV_AZURE_213: Health check is not supported on Flex Consumption; the platform replaces unhealthy instances itself.
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': serviceName })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
      http20Enabled: true
      // Every setting the app and its bindings read, and nothing else: the names are the
      // constants of shared/settings.py, connection prefixes expanded to their identity-based
      // forms. Set with the app (not as a separate config resource) so that the host's first
      // start already has its storage connection.
      appSettings: [
        // Host storage and the blob trigger's connection (STORAGE_CONNECTION). The service URIs,
        // not __accountName, because the blob trigger needs the queue service too (poison queue)
        // and the app's own clients read the blob and table URIs.
        {
          name: 'AzureWebJobsStorage__blobServiceUri'
          value: blobEndpoint
        }
        {
          name: 'AzureWebJobsStorage__queueServiceUri'
          value: queueEndpoint
        }
        {
          name: 'AzureWebJobsStorage__tableServiceUri'
          value: tableEndpoint
        }
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: identityClientId
        }
        // Event Hub trigger connection (EVENTHUB_CONNECTION).
        {
          name: 'ACTIVITYLOG_EVENTHUB__fullyQualifiedNamespace'
          value: eventHubFullyQualifiedNamespace
        }
        {
          name: 'ACTIVITYLOG_EVENTHUB__credential'
          value: 'managedidentity'
        }
        {
          name: 'ACTIVITYLOG_EVENTHUB__clientId'
          value: identityClientId
        }
        {
          name: 'ACTIVITYLOG_EVENTHUB_NAME'
          value: eventHubName
        }
        {
          name: 'ACTIVITYLOG_EVENTHUB_CONSUMER_GROUP'
          value: eventHubConsumerGroup
        }
        {
          name: 'ACTIVITYLOG_ARCHIVE_CONTAINER'
          value: archiveContainerName
        }
        {
          name: 'ACTIVITYLOG_STORE_PREFIX'
          value: storePrefix
        }
        {
          name: 'ACTIVITYLOG_ARCHIVE_TIER'
          value: archiveTier
        }
        {
          name: 'ACTIVITYLOG_CATCHUP_SCHEDULE'
          value: catchupSchedule
        }
        {
          name: 'ACTIVITYLOG_CATCHUP_LOOKBACK_HOURS'
          value: string(catchupLookbackHours)
        }
        {
          name: 'ACTIVITYLOG_SEAL_AFTER_MINUTES'
          value: string(sealAfterMinutes)
        }
        {
          name: 'ACTIVITYLOG_RETENTION_SCHEDULE'
          value: retentionSchedule
        }
        {
          name: 'ACTIVITYLOG_RETENTION_DAYS'
          value: string(retentionDays)
        }
        {
          name: 'ACTIVITYLOG_RETENTION_CATEGORY_DAYS'
          value: retentionCategoryDays
        }
        {
          name: 'ACTIVITYLOG_RETENTION_DRY_RUN'
          value: retentionDryRun ? 'true' : 'false'
        }
        {
          name: 'ACTIVITYLOG_RETENTION_TIME_BUDGET_SECONDS'
          value: string(retentionTimeBudgetSeconds)
        }
        {
          name: 'ACTIVITYLOG_LOGS_INGESTION_ENDPOINT'
          value: logsIngestionEndpoint
        }
        {
          name: 'ACTIVITYLOG_LOGS_INGESTION_RULE_ID'
          value: logsIngestionRuleId
        }
        {
          name: 'ACTIVITYLOG_LOGS_INGESTION_STREAM'
          value: logsIngestionStream
        }
        // The search page: signed-in only, behind App Service authentication (site-auth.bicep).
        {
          name: 'ACTIVITYLOG_PAGE_ACCESS'
          value: 'signed-in'
        }
        {
          name: 'ACTIVITYLOG_PAGE_ALLOWED_GROUP'
          value: pageAllowedGroup
        }
        {
          name: 'ACTIVITYLOG_PAGE_ALLOWED_ROLE'
          value: pageAllowedRole
        }
        // App Service authentication's client credential: this identity, no secret (site-auth.bicep).
        {
          name: 'OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID'
          value: identityClientId
        }
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: applicationInsights.properties.ConnectionString
        }
        // Entra ID auth of telemetry (local auth off), read by the host and by the worker's
        // exporter; both need it (Learn OpenTelemetry page, Microsoft Entra authentication).
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'ClientId=${identityClientId};Authorization=AAD'
        }
        // The worker configures the Azure Monitor distro; the host stops forwarding its logs.
        {
          name: 'PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY'
          value: 'true'
        }
        // No library auto-instrumentation (see disabledInstrumentations).
        {
          name: 'OTEL_PYTHON_DISABLED_INSTRUMENTATIONS'
          value: disabledInstrumentations
        }
        // Keep every span (see tracesSampler).
        {
          name: 'OTEL_TRACES_SAMPLER'
          value: tracesSampler
        }
      ]
    }
    functionAppConfig: {
      // `func azure functionapp publish` uploads the package here, and instances load it from
      // here, both with the user-assigned identity: no storage key anywhere.
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      // Flex Consumption takes the runtime here; FUNCTIONS_WORKER_RUNTIME and
      // FUNCTIONS_EXTENSION_VERSION are not allowed as app settings on this plan.
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

@description('Name of the function app.')
output name string = functionApp.name

@description('Default host name of the app (Flex Consumption may add a unique suffix, so read it, never build it).')
output defaultHostName string = functionApp.properties.defaultHostName

@description('Resource id of the function app.')
output id string = functionApp.id
