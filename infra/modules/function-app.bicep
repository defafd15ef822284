// The Flex Consumption plan and the Python function app, with every app setting the code
// reads (shared/settings.py is the single source of the names; tests/test_infra.py holds the
// set below equal to it). Every connection is identity-based: the app authenticates as the
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

@description('Python version of the app.')
@allowed([
  '3.11'
  '3.12'
])
param pythonVersion string = '3.11'

@description('Most instances the app scales out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory per instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

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

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
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
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  // azd-service-name lets `azd deploy` find the app; harmless without azd.
  tags: union(tags, { 'azd-service-name': 'api' })
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

// Every setting the app and its bindings read, and nothing else. Names on the left are the
// constants of shared/settings.py (connection prefixes expanded to their identity-based forms).
resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: functionApp
  name: 'appsettings'
  properties: {
    // Host storage and the blob trigger's connection (STORAGE_CONNECTION). The service URIs,
    // not __accountName, because the blob trigger needs the queue service too (poison queue)
    // and the app's own clients read the blob and table URIs.
    AzureWebJobsStorage__blobServiceUri: blobEndpoint
    AzureWebJobsStorage__queueServiceUri: queueEndpoint
    AzureWebJobsStorage__tableServiceUri: tableEndpoint
    AzureWebJobsStorage__credential: 'managedidentity'
    AzureWebJobsStorage__clientId: identityClientId
    // Event Hub trigger connection (EVENTHUB_CONNECTION).
    ACTIVITYLOG_EVENTHUB__fullyQualifiedNamespace: eventHubFullyQualifiedNamespace
    ACTIVITYLOG_EVENTHUB__credential: 'managedidentity'
    ACTIVITYLOG_EVENTHUB__clientId: identityClientId
    ACTIVITYLOG_EVENTHUB_NAME: eventHubName
    ACTIVITYLOG_EVENTHUB_CONSUMER_GROUP: eventHubConsumerGroup
    ACTIVITYLOG_ARCHIVE_CONTAINER: archiveContainerName
    ACTIVITYLOG_STORE_PREFIX: storePrefix
    ACTIVITYLOG_CATCHUP_SCHEDULE: catchupSchedule
    ACTIVITYLOG_CATCHUP_LOOKBACK_HOURS: string(catchupLookbackHours)
    ACTIVITYLOG_SEAL_AFTER_MINUTES: string(sealAfterMinutes)
    ACTIVITYLOG_RETENTION_SCHEDULE: retentionSchedule
    ACTIVITYLOG_RETENTION_DAYS: string(retentionDays)
    ACTIVITYLOG_RETENTION_CATEGORY_DAYS: retentionCategoryDays
    ACTIVITYLOG_RETENTION_DRY_RUN: retentionDryRun ? 'true' : 'false'
    ACTIVITYLOG_RETENTION_TIME_BUDGET_SECONDS: string(retentionTimeBudgetSeconds)
    ACTIVITYLOG_LOGS_INGESTION_ENDPOINT: logsIngestionEndpoint
    ACTIVITYLOG_LOGS_INGESTION_RULE_ID: logsIngestionRuleId
    ACTIVITYLOG_LOGS_INGESTION_STREAM: logsIngestionStream
    APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
    // Read by the Functions host (not the Python code): send telemetry with an Entra ID token
    // of the user-assigned identity, which Application Insights requires when local auth is off.
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  }
}

@description('Name of the function app.')
output name string = functionApp.name

@description('Default host name of the app (Flex Consumption may add a unique suffix, so read it, never build it).')
output defaultHostName string = functionApp.properties.defaultHostName

@description('Resource id of the function app.')
output id string = functionApp.id
