// The subscription's Activity Log export: a diagnostic setting at subscription scope that
// sends every category both to the hub (seconds to minutes of delay; the app's main path)
// and to the storage account (hourly PT1H.json blobs; the durable archive and the fallback
// the catch-up timer reads). A subscription holds at most five diagnostic settings.
targetScope = 'subscription'

@description('Name of the diagnostic setting.')
param name string

@description('Resource id of the storage account the archive is written to (container insights-activity-logs, created by Azure Monitor if missing).')
param storageAccountId string

@description('Resource id of the Event Hubs namespace authorization rule Azure Monitor streams with.')
param eventHubAuthorizationRuleId string

@description('Name of the hub to stream to. Without it Azure Monitor would create a hub named insights-activity-logs itself.')
param eventHubName string

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
    logs: [for category in categories: {
      category: category
      enabled: true
    }]
  }
}

@description('Resource id of the diagnostic setting.')
output id string = activityLogExport.id
