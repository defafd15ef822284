// What the app's identity may do, each role on the narrowest resource that works, each with the
// Learn page that documents it. Names are guid(scope, principal, role): deterministic, so
// redeploying finds the same assignment instead of failing with RoleAssignmentExists.

@description('Principal (object) id of the app\'s user-assigned identity.')
param principalId string

@description('Name of the storage account (host state, raw export, records archive, month index tables, deployment package).')
param storageAccountName string

@description('Name of the Event Hubs namespace.')
param eventHubNamespaceName string

@description('Name of the hub the app reads.')
param eventHubName string

@description('Name of the data collection rule the app forwards through.')
param dataCollectionRuleName string

@description('Name of the Application Insights component the app reports to.')
param applicationInsightsName string

@description('Also grant Storage Account Contributor on the storage account. Off by default: see the comment on storageAccountContributor below.')
param grantStorageAccountContributor bool = false

// Built-in role definition ids (the same in every tenant; Learn, "Azure built-in roles",
// https://learn.microsoft.com/azure/role-based-access-control/built-in-roles).
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  storageAccountContributor: '17d1049b-9a84-46fb-8f53-869881c3d3ab'
  eventHubsDataReceiver: 'a638d3c7-ab3a-418d-83e6-5f17a39d4fde'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource namespace 'Microsoft.EventHub/namespaces@2024-01-01' existing = {
  name: eventHubNamespaceName
}

resource hub 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' existing = {
  parent: namespace
  name: eventHubName
}

resource dataCollectionRule 'Microsoft.Insights/dataCollectionRules@2023-03-11' existing = {
  name: dataCollectionRuleName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

// Storage Blob Data Owner, on the account:
// - host storage (AzureWebJobsStorage): "The Storage Blob Data Owner role covers the basic needs
//   of Functions host storage", and Event Hubs checkpoints and timer locks are blobs there
//   (Learn, "Azure Functions developer guide", Connecting to host storage with an identity:
//   https://learn.microsoft.com/azure/azure-functions/functions-reference#connecting-to-host-storage-with-an-identity);
// - the blob trigger: "Storage Blob Data Owner and Storage Queue Data Contributor" (Learn, "Azure
//   Blob storage trigger for Azure Functions", identity-based connections:
//   https://learn.microsoft.com/azure/azure-functions/functions-bindings-storage-blob-trigger#identity-based-connections);
// - the Flex Consumption deployment container: the platform grants Storage Blob Data
//   Contributor on it to a user-assigned deployment identity, which Owner includes (Learn,
//   "Create and manage function apps in the Flex Consumption plan", Configure deployment
//   settings: https://learn.microsoft.com/azure/azure-functions/flex-consumption-how-to#configure-deployment-settings);
// - the app's own containers: the records archive ({storePrefix}-records), where it uploads
//   each blob at ACTIVITYLOG_ARCHIVE_TIER (Put Blob with a tier, and Set Blob Tier, are blob
//   writes), lists and deletes whole day prefixes for retention, and reads for queries and
//   `verify`; the dead letters; and reading Azure's raw export. Owner's data actions are every
//   blob action (Learn, "Azure built-in roles for Storage", Storage Blob Data Owner:
//   https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/storage#storage-blob-data-owner).
//   No data role can delete a blob an immutability policy protects: retention skips those.
resource blobDataOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, roles.storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Queue Data Contributor, on the account: the blob trigger "handles failure across
// multiple retries by writing poison blobs to a queue" and uses queues internally (Learn, blob
// trigger identity-based connections, and the host storage table, both linked above).
resource queueDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, roles.storageQueueDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Table Data Contributor, on the account: the app's index tables, one a month
// ({storePrefix}idxYYYYMM), which the app creates as a month begins and deletes whole when the
// month passes retention (the role's actions include tableServices/tables/write, "Create
// tables", and tables/delete, "Delete tables": Learn, "Azure built-in roles for Storage",
// https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/storage#storage-table-data-contributor),
// and its cursor and run tables (azure-data-tables with the identity; Learn, "Authorize access
// to tables using Microsoft Entra ID": https://learn.microsoft.com/azure/storage/tables/authorize-access-azure-active-directory),
// and the host's diagnostic events, which "are persisted in table storage using the
// AzureWebJobsStorage connection" (host storage table, linked above).
resource tableDataContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, roles.storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Azure Event Hubs Data Receiver, on the hub, not the namespace: the identity can read this one
// stream and nothing else. "The scope of the role assignment can be for an Event Hubs namespace,
// or the event hub itself"; example roles for the trigger: Azure Event Hubs Data Receiver
// (Learn, "Azure Event Hubs trigger for Azure Functions", identity-based connections:
// https://learn.microsoft.com/azure/azure-functions/functions-bindings-event-hubs-trigger#identity-based-connections).
resource eventHubsDataReceiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hub.id, principalId, roles.eventHubsDataReceiver)
  scope: hub
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventHubsDataReceiver)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Monitoring Metrics Publisher, on the data collection rule: what the Logs Ingestion API
// requires of the caller (Learn, "Logs Ingestion API in Azure Monitor", and its tutorial, Assign
// permissions to the DCR: https://learn.microsoft.com/azure/azure-monitor/logs/tutorial-logs-ingestion-portal#assign-permissions-to-the-dcr).
resource dcrMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(dataCollectionRule.id, principalId, roles.monitoringMetricsPublisher)
  scope: dataCollectionRule
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Monitoring Metrics Publisher, on Application Insights: Entra ID-authenticated telemetry from
// the host and the worker ("Although the Monitoring Metrics Publisher role says 'metrics,' it
// publishes all telemetry"; Learn, "Microsoft Entra authentication for Application Insights":
// https://learn.microsoft.com/azure/azure-monitor/app/azure-ad-authentication).
resource appInsightsMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, principalId, roles.monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Account Contributor: Learn's host storage table lists it, with Storage Blob Data Owner
// and Storage Queue Data Contributor, for the blob trigger with an identity-based
// AzureWebJobsStorage (linked above). It is a management role: it could turn shared keys back
// on for the account that holds the audit archive. The Flex Consumption azd quickstart for the
// Event Grid-sourced blob trigger, identity-based like this app, grants it no such role
// (Azure-Samples/functions-quickstart-python-azd-eventgrid-blob, infra/app/rbac.bicep), so it is
// opt-in here: set grantStorageAccountContributor=true if the host reports an authorization
// failure for the blob trigger. Meanwhile the catch-up timer still indexes every blob.
resource storageAccountContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantStorageAccountContributor) {
  name: guid(storage.id, principalId, roles.storageAccountContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageAccountContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
