// Azure Monitor side of the app: a Log Analytics workspace holding the forwarded records in
// the custom table ActivityLog_CL, the data collection rule the app sends them through (the
// Logs Ingestion API), and the workspace-based Application Insights the app reports to.

@description('Name of the Log Analytics workspace.')
param workspaceName string

@description('Name of the Application Insights component.')
param applicationInsightsName string

@description('Name of the data collection rule.')
param dataCollectionRuleName string

@description('Azure region of the monitoring resources.')
param location string

@description('Tags applied to every resource here.')
param tags object = {}

@description('Days data stays in interactive (analytics) retention, for the workspace and for ActivityLog_CL.')
@minValue(30)
@maxValue(730)
param retentionInDays int = 90

@description('Days ActivityLog_CL keeps records in total: interactive retention plus long-term retention, which is cheaper and searchable with search jobs. 30 to 730, or one of 1095, 1460, 1826, 2191, 2556, 2922, 3288, 3653, 4018, 4383 (the values the Tables API accepts; any other fails validation). Raised to the table\'s interactive retention when below it.')
@minValue(30)
@maxValue(4383)
param totalRetentionInDays int = 365

// Learn, "Select a table plan based on data usage in a Log Analytics workspace"
// (https://learn.microsoft.com/azure/azure-monitor/logs/logs-table-plans): every DCR-based custom
// table supports Analytics and Basic; switching between them applies to the data already in the
// table, at most once a week. Auxiliary is left out: it doesn't support dynamic columns (Learn,
// "Set up a table with the Auxiliary plan in your Log Analytics workspace",
// https://learn.microsoft.com/azure/azure-monitor/logs/create-custom-table-auxiliary), and
// ActivityLog_CL has six.
@description('Plan of ActivityLog_CL: Basic or Analytics (README.md, "Log Analytics", "Cost").')
@allowed([
  'Basic'
  'Analytics'
])
param tablePlan string = 'Basic'

@description('Require Entra ID for telemetry ingestion into Application Insights (the app then needs APPLICATIONINSIGHTS_AUTHENTICATION_STRING and Monitoring Metrics Publisher, both set by this template).')
param appInsightsDisableLocalAuth bool = true

// Custom tables must exist before the Logs Ingestion API accepts records for them, and the
// DCR's stream must declare the columns it receives. Both come from one list, the columns of
// the normalized record (shared/core/records.py COLUMNS; tests/test_infra.py holds them equal).
// Types use the DCR spelling; tables spell datetime as dateTime.
var columns = loadJsonContent('activitylog-columns.json')
var tableName = 'ActivityLog_CL'
// A Basic table's interactive retention is fixed at 30 days: Learn, "Manage data retention in a
// Log Analytics workspace" (https://learn.microsoft.com/azure/azure-monitor/logs/data-retention-configure):
// retentionInDays "Setting this property to null applies the workspace retention period. For a
// Basic and Auxiliary Logs table, the value is always 30." Total retention applies to every plan
// ("To add long-term retention to a table with any data plan, set total retention to up to 12
// years"). The table's API version is the one that page's Bicep example uses: the reference of
// 2022-10-01 described totalRetentionInDays as "between 4 and 2555" only.
var isAnalyticsTable = tablePlan == 'Analytics'
var basicTableRetentionInDays = 30
// totalRetentionInDays: the same page, Tables API: "This value can be between 4 and 730; or 1095,
// 1460, 1826, 2191, 2556, 2922, 3288, 3653, 4018, or 4383". Past 730, a value that is not a key
// below fails the template's validation (ARM resolves only the branch the condition selects; why
// not fail(): main.bicep, logAnalyticsTotalRetentionDaysChecked). The total sent is at least the
// interactive retention, and the larger of two accepted values is accepted.
var totalRetentionYears = {
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
var totalRetentionInDaysChecked = (totalRetentionInDays <= 730) ? totalRetentionInDays : totalRetentionYears[string(totalRetentionInDays)]
var tableTotalRetentionInDays = max(totalRetentionInDaysChecked, isAnalyticsTable ? retentionInDays : basicTableRetentionInDays)
var streamName = 'Custom-${tableName}'

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: workspaceName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionInDays
    features: {
      // Only Entra ID callers (the Logs Ingestion API, Application Insights) write here;
      // the legacy agent keys are not needed.
      disableLocalAuth: true
      enableLogAccessUsingOnlyResourcePermissions: true
    }
    publicNetworkAccessForIngestion: 'Enabled'
    publicNetworkAccessForQuery: 'Enabled'
  }
}

resource table 'Microsoft.OperationalInsights/workspaces/tables@2025-07-01' = {
  parent: workspace
  name: tableName
  properties: {
    plan: tablePlan
    retentionInDays: isAnalyticsTable ? retentionInDays : null
    totalRetentionInDays: tableTotalRetentionInDays
    schema: {
      name: tableName
      description: 'Azure Activity Log records normalized by the Activity Log function app (docs: shared/spec normalized-record.md).'
      columns: [for column in columns: {
        name: column.name
        type: column.type == 'datetime' ? 'dateTime' : column.type
      }]
    }
  }
}

// Kind Direct gives the rule its own logs ingestion endpoint, so no data collection endpoint
// is needed. The transform is the identity: the app sends records in the table's shape.
resource dataCollectionRule 'Microsoft.Insights/dataCollectionRules@2023-03-11' = {
  name: dataCollectionRuleName
  location: location
  tags: tags
  kind: 'Direct'
  properties: {
    description: 'Logs Ingestion API route for the Activity Log function app into ${tableName}.'
    streamDeclarations: {
      '${streamName}': {
        columns: columns
      }
    }
    destinations: {
      logAnalytics: [
        {
          name: 'workspace'
          workspaceResourceId: workspace.id
        }
      ]
    }
    dataFlows: [
      {
        streams: [
          streamName
        ]
        destinations: [
          'workspace'
        ]
        transformKql: 'source'
        outputStream: streamName
      }
    ]
  }
  // The table must exist before a data flow can target it.
  dependsOn: [
    table
  ]
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: applicationInsightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    IngestionMode: 'LogAnalytics'
    DisableLocalAuth: appInsightsDisableLocalAuth
    publicNetworkAccessForIngestion: 'Enabled'
    publicNetworkAccessForQuery: 'Enabled'
  }
}

@description('Resource id of the workspace.')
output workspaceId string = workspace.id

@description('Name of the workspace.')
output workspaceName string = workspace.name

@description('Name of the custom table.')
output tableName string = tableName

@description('Stream the app posts to (ACTIVITYLOG_LOGS_INGESTION_STREAM).')
output streamName string = streamName

@description('Name of the data collection rule.')
output dataCollectionRuleName string = dataCollectionRule.name

@description('Immutable id of the rule (ACTIVITYLOG_LOGS_INGESTION_RULE_ID).')
output dataCollectionRuleImmutableId string = dataCollectionRule.properties.immutableId

@description('The rule\'s own logs ingestion endpoint (ACTIVITYLOG_LOGS_INGESTION_ENDPOINT).')
output logsIngestionEndpoint string = dataCollectionRule.properties.endpoints.logsIngestion

@description('Resource id of Application Insights.')
output applicationInsightsId string = applicationInsights.id

@description('Name of Application Insights.')
output applicationInsightsName string = applicationInsights.name
