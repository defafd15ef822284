// Activity Log archive: keeps, searches and forwards a subscription's Azure Activity Log.
//
// Deploys at subscription scope because the Activity Log export is a subscription-level
// diagnostic setting; everything else goes into one resource group. `azd up` (azure.yaml)
// provisions this file, publishes the app and runs scripts/postdeploy.sh; without azd:
// `az deployment sub create` with this file, then scripts/postdeploy.sh --deployment <name>
// --publish. See infra/README.md. Every subscription of a management group:
// infra/onboard-management-group.bicep.
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

@description('Prefix of every table and container the app creates (ACTIVITYLOG_STORE_PREFIX): 3 to 30 lowercase letters and digits, starting with a letter. Names the records container (<prefix>-records) and the month index tables (<prefix>idxYYYYMM).')
@minLength(3)
@maxLength(30)
param storePrefix string = 'activitylog'

// The app's records archive is written once and read rarely (queries past the index, `verify`),
// so Cold by default: the cheapest tier that is still online, unlike Archive, whose blobs must
// be rehydrated (hours) before they can be read. Cold has a 90-day early-deletion period (Learn,
// "Access tiers for blob data": https://learn.microsoft.com/azure/storage/blobs/access-tiers-overview),
// which the app's shortest retention, 90 days, already respects (0 keeps forever).
@description('Access tier the app uploads its record blobs at (ACTIVITYLOG_ARCHIVE_TIER): Cold (default; written once, read rarely, still online unlike Archive; its 90-day early-deletion period is the app\'s minimum retention), Cool or Hot.')
@allowed([
  'Hot'
  'Cool'
  'Cold'
])
param archiveAccessTier string = 'Cold'

@description('Forward normalized records to the ActivityLog_CL table in Log Analytics. False leaves the three ACTIVITYLOG_LOGS_INGESTION_* settings empty (the table and rule are still created).')
param forwardToLogAnalytics bool = true

// The custom table's plan decides most of what Log Analytics costs (README.md, "Log Analytics",
// "Cost"). Learn, "Select a table plan based on data usage in a Log Analytics workspace"
// (https://learn.microsoft.com/azure/azure-monitor/logs/logs-table-plans): DCR-based custom
// tables support every plan; a table switches plan at most once a week. Auxiliary is not offered:
// Learn, "Set up a table with the Auxiliary plan in your Log Analytics workspace"
// (https://learn.microsoft.com/azure/azure-monitor/logs/create-custom-table-auxiliary): "Tables
// with the Auxiliary plan don't support columns with dynamic data", and ActivityLog_CL has six;
// an Auxiliary table can't change plan afterwards either.
@description('Plan of the ActivityLog_CL table: Basic (default; ingestion about a fifth of Analytics, queries billed per GB scanned, interactive queries over 30 days, simple log alerts only) or Analytics (full features and alerts, queries included, interactive retention logAnalyticsRetentionDays). A table switches plan at most once a week. See README.md, "Log Analytics", "Cost".')
@allowed([
  'Basic'
  'Analytics'
])
param logAnalyticsTablePlan string = 'Basic'

@description('Also send the subscription\'s Activity Log to the workspace\'s AzureActivity table (Activity Log ingestion is free, and so is its retention up to 90 days: logAnalyticsRetentionDays above 90 is billed). Independent of forwardToLogAnalytics.')
param sendActivityLogToWorkspace bool = true

@description('Days of interactive retention in Log Analytics (the workspace default, so AzureActivity and telemetry; and ActivityLog_CL on the Analytics plan, as Basic tables keep 30).')
@minValue(30)
@maxValue(730)
param logAnalyticsRetentionDays int = 90

// Total retention takes only what the Tables API accepts for totalRetentionInDays: "between 4
// and 730; or 1095, 1460, 1826, 2191, 2556, 2922, 3288, 3653, 4018, or 4383" (Learn, "Manage data
// retention in a Log Analytics workspace", Configure table-level retention, REST:
// https://learn.microsoft.com/azure/azure-monitor/logs/data-retention-configure), here from 30: a
// table keeps at least its interactive retention (30 on Basic, logAnalyticsRetentionDays >= 30 on
// Analytics; modules/monitoring.bicep raises a smaller total to it). The decorators bound the
// range; logAnalyticsTotalRetentionDaysChecked below refuses the gap between 730 and 4383.
@description('Days ActivityLog_CL keeps records in total, interactive plus long-term retention: 30 to 730, or one of 1095, 1460, 1826, 2191, 2556, 2922, 3288, 3653, 4018, 4383 (whole years up to 12), the values the Log Analytics Tables API accepts; any other value fails the deployment\'s validation. Raised to the table\'s interactive retention when below it (30 days on the Basic plan, logAnalyticsRetentionDays on Analytics).')
@minValue(30)
@maxValue(4383)
param logAnalyticsTotalRetentionDays int = 365

// Event Hubs capacity. The defaults carry 10 million Activity Log events a day with 10x peaks:
// about 2.4 KB an event, so 0.28 MB/s on average and 2.8 MB/s at peak; one throughput unit
// takes 1 MB/s of ingress, so 1 TU with auto-inflate up to 4, and 4 partitions at about
// 0.7 MB/s each at peak (Learn recommends at most 1 MB/s a partition). The Event Hub function
// runs on at most one instance per partition. Sizes for 1, 10 and 100 million events a day and
// the pages behind every number: README.md, "Scale", and infra/README.md, "Event Hubs capacity".
@description('Event Hubs tier: Standard (throughput units, auto-inflate; 1 to 32 partitions, fixed after creation) or Premium (processing units; up to 100 partitions, which can be increased later).')
@allowed([
  'Standard'
  'Premium'
])
param eventHubsSku string = 'Standard'

@description('Throughput units the namespace starts with on Standard (1 to 40; one TU takes 1 MB/s or 1,000 events/s of ingress), or processing units on Premium (1, 2, 4, 8 or 16).')
@minValue(1)
@maxValue(40)
param eventHubsCapacity int = 1

@description('Standard only: auto-inflate raises throughput units up to eventHubsMaximumThroughputUnits when traffic needs them; it never lowers them by itself (lower eventHubsCapacity again by redeploying or in the portal).')
param eventHubsAutoInflate bool = true

@description('Standard with auto-inflate only: the most throughput units it may reach (1 to 40; raised to eventHubsCapacity when below it).')
@minValue(1)
@maxValue(40)
param eventHubsMaximumThroughputUnits int = 4

@description('Partitions of the Activity Log hub: the most instances the Event Hub function reads with in parallel. 1 to 32 on Standard, where it is fixed after creation; up to 100 on Premium, where it can only be increased.')
@minValue(1)
@maxValue(100)
param eventHubPartitionCount int = 4

@description('Days the hub keeps events (1 to 7): how long the app can be stopped without missing the stream.')
@minValue(1)
@maxValue(7)
param eventHubMessageRetentionDays int = 7

@description('Disable SAS authentication on the Event Hubs namespace. False by default: the Activity Log diagnostic setting can stream only through a namespace authorization rule (SAS), and streaming is reported to stop with SAS off. The app is identity-based either way. See infra/README.md, "Event Hubs local authentication".')
param eventHubsDisableLocalAuth bool = false

@description('Require Entra ID for telemetry ingestion into Application Insights. The Functions host authenticates with APPLICATIONINSIGHTS_AUTHENTICATION_STRING; Python OpenTelemetry code must pass a credential (see infra/README.md).')
param appInsightsDisableLocalAuth bool = true

@description('Most instances each function group of the app scales out to (40 to 1000; see modules/function-app.bicep).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Python version of the function app.')
@allowed([
  '3.11'
  '3.12'
])
param pythonVersion string = '3.12'

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

@description('Days after its last write that a raw PT1H.json export blob in insights-activity-logs is deleted by a lifecycle rule. 0 (the default) keeps them until the app\'s retention deletes them; otherwise at least 30 (smaller values are raised to 30). See infra/README.md, "Raw export lifecycle".')
@minValue(0)
@maxValue(36500)
param rawArchiveExpiryDays int = 0

@description('Days after upload that the app\'s record blobs ({storePrefix}-records) move to the Archive tier by a lifecycle rule. 0 (the default) creates no rule: archived blobs are offline, and the app\'s query and `verify` cannot read them until they are rehydrated (hours). Not supported on ZRS, GZRS or RA-GZRS accounts. See infra/README.md, "Records archive".')
@minValue(0)
@maxValue(36500)
param archiveToArchiveTierAfterDays int = 0

@description('Days each record blob stays immutable (WORM) after its creation, by a time-based retention policy on the records container. 0 (the default) sets none. Created unlocked: lock it after review. At most the shortest retention: retention skips protected blobs and reports them. See infra/README.md, "Records archive".')
@minValue(0)
@maxValue(146000)
param archiveImmutabilityDays int = 0

@description('Also grant the app\'s identity Storage Account Contributor on the storage account, which Learn lists for the blob trigger with identity-based host storage. Off by default (see modules/rbac.bicep).')
param grantStorageAccountContributor bool = false

@description('Email address for the alert on invalid app settings (modules/alerts.bicep). Empty (the default): no action group is created; the alert rule still fires and shows under Azure Monitor, Alerts.')
param alertEmail string = ''

// Sign-in (modules/site-auth.bicep; infra/README.md, "Sign-in"). The registration is made by
// azd's preprovision hook (infra/hooks/search_auth.py): no deployment goes out without sign-in.
@description('Client id (appId) of the Microsoft Entra app registration the search page signs in with (App Service authentication). azd: SEARCH_AUTH_CLIENT_ID, set by the preprovision hook (infra/hooks/search_auth.py), which creates the registration. Required. See infra/README.md, "Sign-in".')
@minLength(36)
@maxLength(36)
param searchAuthClientId string

@description('Object id of the Entra group whose members may use the search page (ACTIVITYLOG_PAGE_ALLOWED_GROUP); empty: no group check. azd: SEARCH_ALLOWED_GROUP_ID (the hook then puts security groups in the token).')
param searchAllowedGroupId string = ''

@description('App role a user must be assigned to use the search page (ACTIVITYLOG_PAGE_ALLOWED_ROLE); `none` (or empty): no role check. The hook defines it on the registration, requires assignment, and assigns the deployer. azd: SEARCH_ALLOWED_ROLE (azd gives the default for an empty value: use `none`).')
param searchAllowedRole string = 'ActivityLog.Reader'

// ---------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------

// One short, stable suffix per subscription, environment and region keeps global names unique.
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var allTags = union(tags, { 'activitylog-environment': environmentName })

// The container Azure Monitor writes the Activity Log archive to: its name is fixed by the
// platform, and the app's ACTIVITYLOG_ARCHIVE_CONTAINER must match it.
var archiveContainerName = 'insights-activity-logs'
// The app's own archive of normalized records; the name is the app's (shared/settings.py,
// Settings.records_container), so it follows storePrefix. The app creates its month index
// tables (<prefix>idxYYYYMM) itself and drops a whole month for retention: no table is declared.
var recordsContainerName = '${storePrefix}-records'
// The hub name: any name works; the platform's default one is the least surprising.
var eventHubName = 'insights-activity-logs'
var consumerGroupName = 'activitylog-app'
var deploymentContainerName = 'app-package-${resourceToken}'
var functionAppName = 'func-activitylog-${resourceToken}'

// logAnalyticsTotalRetentionDays, checked before anything is deployed. Bicep's fail() would say it
// in words (Learn, "Bicep functions - flow control":
// https://learn.microsoft.com/azure/azure-resource-manager/bicep/bicep-functions-flow-control),
// but checkov's Bicep parser (pycep-parser 0.5.1) cannot read a fail() call, and infra/check.sh
// then fails; assert is still an experimental feature. So a lookup that ARM cannot resolve: ARM
// evaluates only the branch a condition selects (Learn, "Logical functions for ARM templates",
// if: https://learn.microsoft.com/azure/azure-resource-manager/templates/template-functions-logical#if),
// and a value past 730 that is not a key below stops the template's validation with "The
// language expression property '1000' doesn't exist, available properties are '1095, 1460, ...'".
var logAnalyticsTotalRetentionYears = {
  '1095': 1095
  '1460': 1460
  '1826': 1826
  '2191': 2191
  '2556': 2556
  '2922': 2922
  '3288': 3288
  '3653': 3653
  '4018': 4018
  '4383': 4383
}
var logAnalyticsTotalRetentionDaysChecked = (logAnalyticsTotalRetentionDays <= 730) ? logAnalyticsTotalRetentionDays : logAnalyticsTotalRetentionYears[string(logAnalyticsTotalRetentionDays)]

// Paths App Service authentication lets through without sign-in (modules/site-auth.bicep): the
// query API, which keeps its function keys for automation, and the blob trigger's Event Grid
// webhook (its system key). tests/test_infra.py holds them to the app's key-protected routes.
var signInExcludedPaths = [
  '/api/activity'
  '/api/activity/histogram'
  '/runtime/webhooks/blobs'
]

// ---------------------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------------------

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : 'rg-${environmentName}'
  location: location
  // azd finds the environment's resource group by this tag (and the AZURE_RESOURCE_GROUP output).
  tags: union(allTags, { 'azd-env-name': environmentName })
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
    archiveContainerName: archiveContainerName
    rawArchiveExpiryDays: rawArchiveExpiryDays
    recordsContainerName: recordsContainerName
    archiveToArchiveTierAfterDays: archiveToArchiveTierAfterDays
    archiveImmutabilityDays: archiveImmutabilityDays
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
    namespaceSku: eventHubsSku
    capacity: eventHubsCapacity
    autoInflate: eventHubsAutoInflate
    maximumThroughputUnits: eventHubsMaximumThroughputUnits
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
    totalRetentionInDays: logAnalyticsTotalRetentionDaysChecked
    tablePlan: logAnalyticsTablePlan
    appInsightsDisableLocalAuth: appInsightsDisableLocalAuth
  }
}

// The subscription's Activity Log, every category, to the hub and to the archive, and (unless
// sendActivityLogToWorkspace is false) to the workspace's AzureActivity table.
module activityLogExport 'modules/activity-log-export.bicep' = {
  name: 'activity-log-export-${environmentName}'
  params: {
    name: 'activitylog-${environmentName}'
    storageAccountId: storage.outputs.id
    eventHubAuthorizationRuleId: eventHubs.outputs.diagnosticsRuleId
    eventHubName: eventHubs.outputs.eventHubName
    workspaceId: sendActivityLogToWorkspace ? monitoring.outputs.workspaceId : ''
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
    grantStorageAccountContributor: grantStorageAccountContributor
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
    pythonVersion: pythonVersion
    eventHubFullyQualifiedNamespace: eventHubs.outputs.fullyQualifiedNamespace
    eventHubName: eventHubs.outputs.eventHubName
    eventHubConsumerGroup: eventHubs.outputs.consumerGroupName
    archiveContainerName: archiveContainerName
    storePrefix: storePrefix
    archiveTier: archiveAccessTier
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
    pageAllowedGroup: searchAllowedGroupId
    pageAllowedRole: toLower(searchAllowedRole) == 'none' ? '' : searchAllowedRole
  }
  // The host reads storage and the hub as soon as it starts: grant access first. (Role
  // assignments can still take minutes to propagate; the host retries meanwhile.)
  dependsOn: [
    rbac
  ]
}

// Entra ID sign-in in front of the app, but for the key-protected API and the blob webhook.
module siteAuth 'modules/site-auth.bicep' = {
  name: 'site-auth'
  scope: rg
  params: {
    siteName: functionApp.outputs.name
    clientId: searchAuthClientId
    excludedPaths: signInExcludedPaths
  }
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

// A log search alert on the app's activitylog.settings.invalid counter, per function, and an
// action group emailing alertEmail when it is set.
module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    settingsInvalidAlertName: 'alert-activitylog-settings-invalid-${resourceToken}'
    actionGroupName: 'ag-activitylog-${resourceToken}'
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    location: location
    tags: allTags
    alertEmail: alertEmail
  }
}

// ---------------------------------------------------------------------------------------
// Outputs: what azd, scripts/postdeploy.sh, the management-group onboarding and operators
// need (azd stores each one in the environment; the hook reads them from there or from
// `az deployment sub show`).
// ---------------------------------------------------------------------------------------

@description('Subscription the deployment went to.')
output AZURE_SUBSCRIPTION_ID string = subscription().subscriptionId

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

@description('Object (principal) id of the app\'s managed identity: the subject of the sign-in registration\'s federated identity credential.')
output APP_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId

@description('The search page: sign in with Microsoft Entra ID.')
output SEARCH_PAGE_URL string = 'https://${functionApp.outputs.defaultHostName}/api/search'

@description('Client id of the app registration the page signs in with (the searchAuthClientId parameter).')
output SEARCH_AUTH_CLIENT_ID string = searchAuthClientId

@description('Redirect URI of that registration (set by infra/hooks/search_auth.py postprovision).')
output SEARCH_AUTH_REDIRECT_URI string = 'https://${functionApp.outputs.defaultHostName}${siteAuth.outputs.redirectPath}'

@description('Issuer of sign-in, and of the federated identity credential\'s tokens: the tenant\'s v2.0 endpoint.')
output SEARCH_AUTH_ISSUER string = siteAuth.outputs.openIdIssuer

@description('Paths reachable without sign-in (function key or system key instead).')
output SIGN_IN_EXCLUDED_PATHS array = signInExcludedPaths

@description('Storage account holding the archive, the index and host state.')
output STORAGE_ACCOUNT_NAME string = storage.outputs.name

@description('Container the Activity Log archive is written to.')
output ARCHIVE_CONTAINER string = archiveContainerName

@description('Container the app keeps its own archive of normalized records in.')
output RECORDS_CONTAINER string = storage.outputs.recordsContainerName

@description('Event Hubs namespace the Activity Log streams to.')
output EVENTHUB_NAMESPACE string = eventHubs.outputs.namespaceName

@description('Hub the Activity Log streams to.')
output EVENTHUB_NAME string = eventHubs.outputs.eventHubName

@description('Namespace authorization rule the Activity Log diagnostic setting streams with (infra/onboard-management-group.bicep names it too).')
output EVENTHUB_AUTHORIZATION_RULE_NAME string = eventHubs.outputs.diagnosticsRuleName

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

@description('Resource id of the log search alert rule on invalid app settings.')
output SETTINGS_INVALID_ALERT_ID string = alerts.outputs.settingsInvalidAlertId

@description('Event Grid system topic of the storage account (the hook adds the subscription to it).')
output EVENTGRID_SYSTEM_TOPIC_NAME string = eventGrid.outputs.systemTopicName

@description('Name of the Event Grid subscription scripts/postdeploy.sh creates for the blob trigger.')
output EVENTGRID_SUBSCRIPTION_NAME string = eventGrid.outputs.subscriptionName

@description('Subject filter of that subscription (the archive container).')
output EVENTGRID_SUBJECT_BEGINS_WITH string = eventGrid.outputs.subjectBeginsWith

@description('Delivery attempts of that subscription.')
output EVENTGRID_MAX_DELIVERY_ATTEMPTS int = eventGrid.outputs.maxDeliveryAttempts

@description('Event time to live of that subscription, in minutes.')
output EVENTGRID_EVENT_TTL_MINUTES int = eventGrid.outputs.eventTimeToLiveInMinutes

@description('Blob-triggered function the subscription delivers to.')
output BLOB_TRIGGER_FUNCTION_NAME string = eventGrid.outputs.functionName

@description('Days after their last write that raw export blobs are deleted; 0 when they are kept.')
output RAW_ARCHIVE_EXPIRY_DAYS int = storage.outputs.rawArchiveExpiryDays

@description('Days after upload that record blobs move to the Archive tier; 0 when they stay at ACTIVITYLOG_ARCHIVE_TIER.')
output ARCHIVE_TO_ARCHIVE_TIER_AFTER_DAYS int = storage.outputs.archiveToArchiveTierAfterDays

@description('Days each record blob stays immutable after creation; 0 when the template sets no policy.')
output ARCHIVE_IMMUTABILITY_DAYS int = storage.outputs.archiveImmutabilityDays
