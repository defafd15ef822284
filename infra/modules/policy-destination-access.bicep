// What the management-group policy's identity needs on the Activity Log archive's own resources
// (infra/onboard-management-group.bicep): creating a diagnostic setting that names an Event Hub
// authorization rule or a storage account requires ListKeys on them. Learn, "Roles,
// permissions, and security in Azure Monitor", Security considerations for monitoring data
// (https://learn.microsoft.com/azure/azure-monitor/roles-permissions-security): grant
// Microsoft.Storage/storageAccounts/listkeys/action on "that particular storage account. This
// permission is necessary for users who need to set a diagnostic setting to send data to a
// storage account", and the ListKeys action on the event hub's rule, "also necessary for users
// who need to set a diagnostic setting ... to stream to event hubs"; "never grant the ListKeys
// permission ... at subscription scope". The page's own examples are custom roles with exactly
// these actions; this is one, assignable in this resource group only and assigned on the two
// resources only. (The account refuses shared keys, so its keys open nothing.)

@description('Principal id of the policy assignment\'s system-assigned identity.')
param principalId string

@description('Event Hubs namespace the Activity Log streams to.')
param eventHubNamespaceName string

@description('Namespace authorization rule the diagnostic settings stream with.')
param eventHubAuthorizationRuleName string

@description('Storage account the Activity Log is archived to.')
param storageAccountName string

resource namespace 'Microsoft.EventHub/namespaces@2024-01-01' existing = {
  name: eventHubNamespaceName
}

resource rule 'Microsoft.EventHub/namespaces/authorizationRules@2024-01-01' existing = {
  parent: namespace
  name: eventHubAuthorizationRuleName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

// Role names are unique in a tenant: this one names its resource group.
resource listKeysRole 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, 'activitylog-archive-destination-listkeys')
  properties: {
    roleName: 'Activity Log archive destination key lister (${subscription().subscriptionId}/${resourceGroup().name})'
    description: 'Lets the Activity Log archive policy name this resource group\'s Event Hub rule and storage account in subscription diagnostic settings (ListKeys only).'
    type: 'CustomRole'
    assignableScopes: [
      resourceGroup().id
    ]
    permissions: [
      {
        actions: [
          'Microsoft.EventHub/namespaces/read'
          'Microsoft.EventHub/namespaces/authorizationRules/read'
          'Microsoft.EventHub/namespaces/authorizationRules/listkeys/action'
          'Microsoft.Storage/storageAccounts/read'
          'Microsoft.Storage/storageAccounts/listkeys/action'
        ]
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
  }
}

// On the rule: ListKeys of the one rule the diagnostic settings stream with.
resource ruleListKeys 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(rule.id, principalId, listKeysRole.id)
  scope: rule
  properties: {
    roleDefinitionId: listKeysRole.id
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// On the account: ListKeys, which a diagnostic setting with a storage destination requires.
resource storageListKeys 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, principalId, listKeysRole.id)
  scope: storage
  properties: {
    roleDefinitionId: listKeysRole.id
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

@description('Resource id of the custom role.')
output roleDefinitionId string = listKeysRole.id
