// The subscription's Activity Log export: a diagnostic setting at subscription scope that
// sends every category both to the hub (seconds to minutes of delay; the app's main path)
// and to the storage account (hourly PT1H.json blobs; the durable archive and the fallback
// the catch-up timer reads), and optionally to a Log Analytics workspace (its AzureActivity
// table). A subscription holds at most five diagnostic settings.
targetScope = 'subscription'

@description('Name of the diagnostic setting.')
param name string

@description('Resource id of the storage account the archive is written to (container insights-activity-logs, created by Azure Monitor if missing).')
param storageAccountId string

@description('Resource id of the Event Hubs namespace authorization rule Azure Monitor streams with.')
param eventHubAuthorizationRuleId string

@description('Name of the hub to stream to. Without it Azure Monitor would create a hub named insights-activity-logs itself.')
param eventHubName string

// Learn, "Activity log in Azure Monitor" (https://learn.microsoft.com/azure/azure-monitor/platform/activity-log),
// Export activity log, Log Analytics workspace: "There is no data ingestion charges for activity
// logs. Retention charges for activity logs are only applied to the period extended past the
// default retention period of 90 days." The records land in the AzureActivity table.
@description('Resource id of a Log Analytics workspace to also send the Activity Log to (its AzureActivity table); empty sends it to none.')
param workspaceId string = ''

// Every Activity Log category (the same eight as shared/settings.py CATEGORIES).
var categories = [
  'Administrative'
  'Security'
  'ServiceHealth'
  'Alert'
  'Recommendation'
  'Policy'
  'Autoscale'
  'ResourceHealth'
]

resource activityLogExport 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: name
  properties: {
    storageAccountId: storageAccountId
    eventHubAuthorizationRuleId: eventHubAuthorizationRuleId
    eventHubName: eventHubName
    workspaceId: empty(workspaceId) ? null : workspaceId
    logs: [for category in categories: {
      category: category
      enabled: true
    }]
  }
}

@description('Resource id of the diagnostic setting.')
output id string = activityLogExport.id
