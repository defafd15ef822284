// Alerts on the app's own telemetry: a log search alert rule that fires when a function run was
// stopped or degraded by a bad app setting (the OpenTelemetry counter activitylog.settings.invalid,
// shared/adapters/telemetry.py SETTINGS_INVALID, attributes `function` and `setting`), and, when
// alertEmail is set, an action group that emails it.
//
// Where the counter lands: the Azure Monitor exporter sends OpenTelemetry metrics as Application
// Insights custom metrics, the customMetrics table (name, valueSum, customDimensions). In the Log
// Analytics workspace of a workspace-based component the same rows are AppMetrics (Name, Sum or
// ValueSum, Properties): Learn, "Migrate to workspace-based Application Insights resources",
// Table structure and AppMetrics (https://learn.microsoft.com/azure/azure-monitor/app/convert-classic-resource),
// and Learn, "AppMetrics" (https://learn.microsoft.com/azure/azure-monitor/reference/tables/appmetrics).
// The same page: "We still provide full backwards compatibility for your Application Insights
// classic resource queries, workbooks, and log-based alerts within the Application Insights
// experience." So the rule is scoped to the component and queries customMetrics, as the
// workbook does (infra/workbook/activitylog.workbook.json); scoped to the component it only sees
// this app's telemetry, with no _ResourceId filter.

@description('Name of the log search alert rule on activitylog.settings.invalid.')
param settingsInvalidAlertName string

@description('Name of the action group, created only when alertEmail is set.')
param actionGroupName string

@description('Resource id of the workspace-based Application Insights component the app reports to (the rule\'s scope).')
param applicationInsightsId string

@description('Azure region of the alert rule (action groups are global).')
param location string

@description('Tags applied to every resource here.')
param tags object = {}

@description('Email address the alert is sent to. Empty (the default): no action group; the alert still fires and shows under Azure Monitor, Alerts.')
param alertEmail string = ''

@description('Metric the rule counts (shared/adapters/telemetry.py SETTINGS_INVALID).')
param metricName string = 'activitylog.settings.invalid'

var notify = !empty(alertEmail)

// KQL on the component's classic schema. `function` is the function whose run was stopped or
// degraded; each value is its own alert (dimension FunctionName). Counters are never incremented
// by 0, and valueSum carries the increments, so any row means at least one bad setting.
var settingsInvalidQuery = 'customMetrics | where name == "${metricName}" | extend FunctionName = tostring(customDimensions["function"]) | summarize Invalid = sum(valueSum) by FunctionName'

// Learn, "Microsoft.Insights actionGroups" (https://learn.microsoft.com/azure/templates/microsoft.insights/actiongroups):
// groupShortName is at most 12 characters; action groups live in location 'global'.
resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (notify) {
  name: actionGroupName
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'activitylog'
    enabled: true
    emailReceivers: [
      {
        name: 'alertEmail'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// Learn, "Microsoft.Insights scheduledQueryRules" (https://learn.microsoft.com/azure/templates/microsoft.insights/scheduledqueryrules):
// 2023-12-01 is the current GA version (later ones are previews). Learn, "Create or edit a log
// search alert rule" (https://learn.microsoft.com/azure/azure-monitor/alerts/alerts-create-log-alert-rule):
// a rule is scoped to a resource such as an Application Insights component; dimensions split it
// into one alert per value; frequency and window as below; severity 1 is Error.
resource settingsInvalidAlert 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = {
  name: settingsInvalidAlertName
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'Activity Log archive: invalid app setting'
    description: 'A function run was stopped or degraded by a bad app setting (${metricName}) in the last 15 minutes. The function is the FunctionName dimension; the setting is in customDimensions.setting of customMetrics, and the app logs it. See infra/README.md, "App settings".'
    severity: 1
    enabled: true
    scopes: [
      applicationInsightsId
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: settingsInvalidQuery
          timeAggregation: 'Total'
          metricMeasureColumn: 'Invalid'
          dimensions: [
            {
              name: 'FunctionName'
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    // Resolves itself once a window passes without a bad setting.
    autoMitigate: true
    actions: {
      actionGroups: notify ? [
        actionGroup.id
      ] : []
    }
  }
}

@description('Resource id of the alert rule.')
output settingsInvalidAlertId string = settingsInvalidAlert.id

@description('Resource id of the action group; empty when alertEmail is empty.')
output actionGroupId string = notify ? actionGroup.id : ''
