// Activity Log archive: keeps, searches and forwards a subscription's Azure Activity Log.
//
// Deploys at subscription scope because the Activity Log export is a subscription-level
// diagnostic setting; everything else goes into one resource group. See infra/README.md for
// the deployment steps (two deployments around `func azure functionapp publish`).
targetScope = 'subscription'

// ---------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------

@description('Name of the environment (dev, prod, ...): names the resource group and seeds the unique suffix of every other name.')
@minLength(1)
@maxLength(40)
param environmentName string

@description('Azure region of every resource; defaults to the deployment\'s --location. Must offer the Flex Consumption plan (`az functionapp list-flexconsumption-locations`).')
@minLength(1)
param location string = deployment().location

@description('Resource group to create or reuse. Empty: rg-<environmentName>.')
param resourceGroupName string = ''

@description('Tags applied to every resource.')
param tags object = {}

@description('Create the Event Grid subscription that fires the blob trigger. Leave false on the first deployment; set true once the app has been published (see infra/README.md).')
param deployEventGridSubscription bool = false

@description('Days the app keeps records and archive blobs (ACTIVITYLOG_RETENTION_DAYS). 0 keeps forever; otherwise 90 to 36500 (100 years), as Azure itself keeps 90 days (the app refuses other values at startup).')
@minValue(0)
@maxValue(36500)
param retentionDays int = 365

@description('Per-category retention overrides (ACTIVITYLOG_RETENTION_CATEGORY_DAYS), as the app reads them: "Category=days" pairs joined by commas, e.g. "Administrative=2555,Security=2555". Categories: Administrative, Security, ServiceHealth, Alert, Recommendation, Policy, Autoscale, ResourceHealth; days 0 (forever) or at least 90. Empty: every category keeps retentionDays.')
param retentionCategoryDays string = ''

@description('Only report what retention would delete (ACTIVITYLOG_RETENTION_DRY_RUN). Useful for the first runs after changing retention.')
param retentionDryRun bool = false

@description('When retention runs: NCRONTAB with six fields, UTC (ACTIVITYLOG_RETENTION_SCHEDULE).')
param retentionSchedule string = '0 0 2 * * *'

@description('Seconds one retention run may take before it stops and leaves the rest for the next run (ACTIVITYLOG_RETENTION_TIME_BUDGET_SECONDS).')
@minValue(10)
@maxValue(86400)
param retentionTimeBudgetSeconds int = 540

@description('When the archive catch-up runs: NCRONTAB with six fields, UTC (ACTIVITYLOG_CATCHUP_SCHEDULE).')
param catchupSchedule string = '0 */5 * * * *'

@description('Hours of archive the catch-up looks back over (ACTIVITYLOG_CATCHUP_LOOKBACK_HOURS).')
@minValue(1)
@maxValue(168)
param catchupLookbackHours int = 3

@description('Minutes after its hour ends that a PT1H.json blob is taken as complete (ACTIVITYLOG_SEAL_AFTER_MINUTES).')
@minValue(1)
@maxValue(10080)
param sealAfterMinutes int = 120

@description('Prefix of every table and container the app creates (ACTIVITYLOG_STORE_PREFIX): 3 to 30 lowercase letters and digits, starting with a letter.')
@minLength(3)
@maxLength(30)
param storePrefix string = 'activitylog'

@description('Forward normalized records to the ActivityLog_CL table in Log Analytics. False leaves the three ACTIVITYLOG_LOGS_INGESTION_* settings empty (the table and rule are still created).')
param forwardToLogAnalytics bool = true

@description('Days of interactive retention in Log Analytics (workspace and ActivityLog_CL).')
@minValue(30)
@maxValue(730)
param logAnalyticsRetentionDays int = 90

@description('Days ActivityLog_CL keeps records in total, interactive plus long-term retention (up to 12 years).')
@minValue(30)
@maxValue(4383)
param logAnalyticsTotalRetentionDays int = 365

@description('Partitions of the Activity Log hub (1 to 32; fixed after creation on Standard).')
@minValue(1)
@maxValue(32)
param eventHubPartitionCount int = 4

@description('Days the hub keeps events (1 to 7): how long the app can be stopped without missing the stream.')
@minValue(1)
@maxValue(7)
param eventHubMessageRetentionDays int = 7

@description('Disable SAS authentication on the Event Hubs namespace. The app is identity-based either way; the diagnostic setting streams with an authorization rule (SAS). See infra/README.md, "Event Hubs local authentication", before deploying with true.')
param eventHubsDisableLocalAuth bool = true

@description('Require Entra ID for telemetry ingestion into Application Insights. The Functions host authenticates with APPLICATIONINSIGHTS_AUTHENTICATION_STRING; Python OpenTelemetry code must pass a credential (see infra/README.md).')
param appInsightsDisableLocalAuth bool = true

@description('Most instances the function app scales out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Memory per function app instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Storage redundancy of the account holding the archive.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
  'Standard_RAGRS'
  'Standard_RAGZRS'
])
param storageSkuName string = 'Standard_GRS'

// ---------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------

// One short, stable suffix per subscription, environment and region keeps global names unique.
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var allTags = union(tags, { 'activitylog-environment': environmentName })

// The container Azure Monitor writes the Activity Log archive to: its name is fixed by the
// platform, and the app's ACTIVITYLOG_ARCHIVE_CONTAINER must match it.
var archiveContainerName = 'insights-activity-logs'
// The hub name: any name works; the platform's default one is the least surprising.
var eventHubName = 'insights-activity-logs'
var consumerGroupName = 'activitylog-app'
var deploymentContainerName = 'app-package-${resourceToken}'
var functionAppName = 'func-activitylog-${resourceToken}'

// ---------------------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------------------

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : 'rg-${environmentName}'
  location: location
  tags: allTags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-activitylog-${resourceToken}'
    location: location
    tags: allTags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: allTags
    skuName: storageSkuName
    containerNames: [
      archiveContainerName
      deploymentContainerName
    ]
  }
}

module eventHubs 'modules/event-hubs.bicep' = {
  name: 'event-hubs'
  scope: rg
  params: {
    name: 'evhns-activitylog-${resourceToken}'
    location: location
    tags: allTags
    eventHubName: eventHubName
    consumerGroupName: consumerGroupName
    partitionCount: eventHubPartitionCount
    messageRetentionInDays: eventHubMessageRetentionDays
    disableLocalAuth: eventHubsDisableLocalAuth
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    workspaceName: 'log-activitylog-${resourceToken}'
    applicationInsightsName: 'appi-activitylog-${resourceToken}'
    dataCollectionRuleName: 'dcr-activitylog-${resourceToken}'
    location: location
    tags: allTags
    retentionInDays: logAnalyticsRetentionDays
    totalRetentionInDays: logAnalyticsTotalRetentionDays
    appInsightsDisableLocalAuth: appInsightsDisableLocalAuth
  }
}

// The subscription's Activity Log, every category, to the hub and to the archive.
module activityLogExport 'modules/activity-log-export.bicep' = {
  name: 'activity-log-export-${environmentName}'
  params: {
    name: 'activitylog-${environmentName}'
    storageAccountId: storage.outputs.id
    eventHubAuthorizationRuleId: eventHubs.outputs.diagnosticsRuleId
    eventHubName: eventHubs.outputs.eventHubName
  }
}

module rbac 'modules/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    principalId: identity.outputs.principalId
    storageAccountName: storage.outputs.name
    eventHubNamespaceName: eventHubs.outputs.namespaceName
    eventHubName: eventHubs.outputs.eventHubName
    dataCollectionRuleName: monitoring.outputs.dataCollectionRuleName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
  }
}

module functionApp 'modules/function-app.bicep' = {
  name: 'function-app'
  scope: rg
  params: {
    name: functionAppName
    planName: 'plan-activitylog-${resourceToken}'
    location: location
    tags: allTags
    identityId: identity.outputs.resourceId
    identityClientId: identity.outputs.clientId
    blobEndpoint: storage.outputs.blobEndpoint
    queueEndpoint: storage.outputs.queueEndpoint
    tableEndpoint: storage.outputs.tableEndpoint
    deploymentContainerName: deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    eventHubFullyQualifiedNamespace: eventHubs.outputs.fullyQualifiedNamespace
    eventHubName: eventHubs.outputs.eventHubName
    eventHubConsumerGroup: eventHubs.outputs.consumerGroupName
    archiveContainerName: archiveContainerName
    storePrefix: storePrefix
    catchupSchedule: catchupSchedule
    catchupLookbackHours: catchupLookbackHours
    sealAfterMinutes: sealAfterMinutes
    retentionSchedule: retentionSchedule
    retentionDays: retentionDays
    retentionCategoryDays: retentionCategoryDays
    retentionDryRun: retentionDryRun
    retentionTimeBudgetSeconds: retentionTimeBudgetSeconds
    logsIngestionEndpoint: forwardToLogAnalytics ? monitoring.outputs.logsIngestionEndpoint : ''
    logsIngestionRuleId: forwardToLogAnalytics ? monitoring.outputs.dataCollectionRuleImmutableId : ''
    logsIngestionStream: forwardToLogAnalytics ? monitoring.outputs.streamName : ''
  }
  // The host reads storage and the hub as soon as it starts: grant access first. (Role
  // assignments can still take minutes to propagate; the host retries meanwhile.)
  dependsOn: [
    rbac
  ]
}

module eventGrid 'modules/event-grid.bicep' = {
  name: 'event-grid'
  scope: rg
  params: {
    name: 'evgt-activitylog-${resourceToken}'
    location: location
    tags: allTags
    storageAccountId: storage.outputs.id
    containerName: archiveContainerName
    deploySubscription: deployEventGridSubscription
    functionAppName: functionApp.outputs.name
  }
}

module workbook 'modules/workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    displayName: 'Activity Log archive (${environmentName})'
    location: location
    tags: allTags
    workspaceId: monitoring.outputs.workspaceId
    applicationInsightsId: monitoring.outputs.applicationInsightsId
  }
}

// ---------------------------------------------------------------------------------------
// Outputs: what `func azure functionapp publish`, the second deployment and operators need.
// ---------------------------------------------------------------------------------------

@description('Region of the deployment.')
output AZURE_LOCATION string = location

@description('Resource group holding everything but the subscription diagnostic setting.')
output AZURE_RESOURCE_GROUP string = rg.name

@description('Function app name: `func azure functionapp publish <this>`.')
output FUNCTION_APP_NAME string = functionApp.outputs.name

@description('Base URL of the app; the query API is GET <this>/api/activity?code=<function key>.')
output FUNCTION_APP_URL string = 'https://${functionApp.outputs.defaultHostName}'

@description('Client id of the app\'s managed identity (every __clientId setting).')
output AZURE_CLIENT_ID string = identity.outputs.clientId

@description('Storage account holding the archive, the index and host state.')
output STORAGE_ACCOUNT_NAME string = storage.outputs.name

@description('Container the Activity Log archive is written to.')
output ARCHIVE_CONTAINER string = archiveContainerName

@description('Event Hubs namespace the Activity Log streams to.')
output EVENTHUB_NAMESPACE string = eventHubs.outputs.namespaceName

@description('Hub the Activity Log streams to.')
output EVENTHUB_NAME string = eventHubs.outputs.eventHubName

@description('Log Analytics workspace holding ActivityLog_CL and the app\'s telemetry.')
output LOG_ANALYTICS_WORKSPACE_NAME string = monitoring.outputs.workspaceName

@description('Immutable id of the data collection rule (ACTIVITYLOG_LOGS_INGESTION_RULE_ID).')
output DCR_IMMUTABLE_ID string = monitoring.outputs.dataCollectionRuleImmutableId

@description('Logs ingestion endpoint of the rule (ACTIVITYLOG_LOGS_INGESTION_ENDPOINT).')
output LOGS_INGESTION_ENDPOINT string = monitoring.outputs.logsIngestionEndpoint

@description('Stream the app posts to (ACTIVITYLOG_LOGS_INGESTION_STREAM).')
output LOGS_INGESTION_STREAM string = monitoring.outputs.streamName

@description('Application Insights component the app reports to.')
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName

@description('Resource id of the workbook.')
output WORKBOOK_ID string = workbook.outputs.id

@description('Name of the Event Grid subscription, empty until deployed with deployEventGridSubscription=true.')
output EVENTGRID_SUBSCRIPTION_NAME string = eventGrid.outputs.subscriptionName
