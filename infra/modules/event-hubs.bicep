// The Event Hubs namespace the subscription's Activity Log streams into, the hub it streams
// to, and the app's own consumer group. The app reads with its managed identity (Azure Event
// Hubs Data Receiver on the hub, see rbac.bicep); the only key-based principal is the
// namespace authorization rule that the Activity Log diagnostic setting must name, because
// that is how Azure Monitor's streaming authenticates:
//   Learn, "Diagnostic settings in Azure Monitor", Destination requirements (Event Hubs):
//   https://learn.microsoft.com/azure/azure-monitor/essentials/diagnostic-settings#destination-requirements
// "The shared access policy for the namespace defines the permissions that the streaming
// mechanism has. Streaming to Event Hubs requires Manage, Send, and Listen permissions."
// So SAS (local) authentication stays on by default: with it off the diagnostic setting's rule
// cannot be used, and users report that streaming stops (MicrosoftDocs/azure-docs issue 119932).
// Where a secure default breaks a documented path, the path wins (infra/README.md, "Event Hubs
// local authentication").

@description('Name of the Event Hubs namespace (globally unique).')
@minLength(6)
@maxLength(50)
param name string

@description('Azure region of the namespace.')
param location string

@description('Tags applied to the namespace.')
param tags object = {}

@description('Name of the hub the Activity Log is streamed to.')
param eventHubName string

@description('Name of the consumer group the function app reads with (its own, so other readers never move its position).')
param consumerGroupName string

// Capacity, as Learn gives it (links in infra/README.md, "Event Hubs capacity"):
// - Standard: 1 to 40 throughput units (TUs), each 1 MB/s or 1,000 events/s of ingress and
//   2 MB/s or 4,096 events/s of egress; auto-inflate (Standard only) raises TUs up to a
//   maximum when traffic needs them, and never lowers them again by itself.
// - Premium: processing units (PUs) 1, 2, 4, 8 or 16 (the service refuses other counts); no
//   auto-inflate. Dedicated clusters are another resource type, not offered here.
// - Partitions: 1 to 32 per hub on Standard, up to 100 on Premium (the service refuses more
//   than its tier allows); fixed after creation on Standard, only increased on Premium.
// Named namespaceSku, not skuName: checkov's graph mixes up parameters of the same name across
// modules, and storage.bicep's skuName then sometimes reads 'Standard' (CKV_AZURE_206 fails).
@description('Pricing tier of the namespace: Standard (throughput units, auto-inflate) or Premium (processing units). Basic is not offered: it allows only the $Default consumer group and one day of retention.')
@allowed([
  'Standard'
  'Premium'
])
param namespaceSku string = 'Standard'

@description('Throughput units (Standard, 1 to 40) or processing units (Premium: 1, 2, 4, 8 or 16) the namespace starts with. One TU takes 1 MB/s or 1,000 events/s of ingress.')
@minValue(1)
@maxValue(40)
param capacity int = 1

@description('Standard only: let Event Hubs raise the throughput units up to maximumThroughputUnits when traffic needs them (it never lowers them by itself). Ignored on Premium.')
param autoInflate bool = true

@description('Standard with autoInflate only: the most throughput units auto-inflate may reach, 1 to 40; raised to capacity when below it.')
@minValue(1)
@maxValue(40)
param maximumThroughputUnits int = 4

@description('Partitions of the hub: the upper bound on how many instances read in parallel. 1 to 32 on Standard, up to 100 on Premium. Cannot be changed after creation on Standard (Premium can only increase it).')
@minValue(1)
@maxValue(100)
param partitionCount int = 4

@description('Days the hub keeps events: how long the app can be down without losing the stream (the blob archive keeps everything regardless). 7 is the Standard tier maximum.')
@minValue(1)
@maxValue(7)
param messageRetentionInDays int = 7

@description('Disable SAS (key) authentication on the namespace. False by default: the Activity Log diagnostic setting streams only through the authorization rule below (a SAS key). The app never uses keys either way. See infra/README.md, "Event Hubs local authentication".')
param disableLocalAuth bool = false

@description('Name of the namespace authorization rule the Activity Log diagnostic setting streams with.')
param diagnosticsRuleName string = 'activitylog-diagnostic-setting'

// Auto-inflate exists on Standard only; its maximum is 0 when it is off (the API's convention)
// and never below the starting capacity when it is on. The parentheses are for checkov's
// parser (pycep-parser 0.5.1), which otherwise reads `a == 'b' && c` as `a == ('b' && c)`.
var autoInflateEnabled = (namespaceSku == 'Standard') && autoInflate
var autoInflateMaximum = autoInflateEnabled ? max(maximumThroughputUnits, capacity) : 0

resource namespace 'Microsoft.EventHub/namespaces@2024-01-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: namespaceSku
    tier: namespaceSku
    capacity: capacity
  }
  properties: {
    disableLocalAuth: disableLocalAuth
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
    isAutoInflateEnabled: autoInflateEnabled
    maximumThroughputUnits: autoInflateMaximum
  }
}

resource hub 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' = {
  parent: namespace
  name: eventHubName
  properties: {
    partitionCount: partitionCount
    messageRetentionInDays: messageRetentionInDays
  }
}

resource consumerGroup 'Microsoft.EventHub/namespaces/eventhubs/consumergroups@2024-01-01' = {
  parent: hub
  name: consumerGroupName
  properties: {
    userMetadata: 'Read by the Activity Log function app (ACTIVITYLOG_EVENTHUB_CONSUMER_GROUP).'
  }
}

// The diagnostic setting's own rule, at namespace level (a diagnostic setting names a
// namespace rule: eventHubAuthorizationRuleId, .../namespaces/{ns}/authorizationRules/{rule}).
// Least privilege as documented: Send alone would be the least, but the documented minimum for
// streaming is Manage, Send and Listen (Learn, "Diagnostic settings in Azure Monitor",
// Destination requirements, link above). A dedicated rule, not RootManageSharedAccessKey: it can be rotated or removed without
// touching anything else, and nothing in the app uses it. Whoever creates or updates a
// diagnostic setting with it needs ListKeys on this rule (same page), which is why the
// management-group onboarding grants exactly that (infra/onboard-management-group.bicep).
resource diagnosticsRule 'Microsoft.EventHub/namespaces/authorizationRules@2024-01-01' = {
  parent: namespace
  name: diagnosticsRuleName
  properties: {
    rights: [
      'Listen'
      'Send'
      'Manage'
    ]
  }
}

@description('Name of the namespace.')
output namespaceName string = namespace.name

@description('Fully qualified namespace host name, for ACTIVITYLOG_EVENTHUB__fullyQualifiedNamespace. Taken from the service endpoint so sovereign clouds get their own DNS suffix.')
output fullyQualifiedNamespace string = replace(replace(namespace.properties.serviceBusEndpoint, 'https://', ''), ':443/', '')

@description('Name of the hub.')
output eventHubName string = hub.name

@description('Name of the app\'s consumer group.')
output consumerGroupName string = consumerGroup.name

@description('Resource id of the authorization rule the diagnostic setting streams with.')
output diagnosticsRuleId string = diagnosticsRule.id

@description('Name of that authorization rule (the management-group onboarding names it).')
output diagnosticsRuleName string = diagnosticsRule.name
