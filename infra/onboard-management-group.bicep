// Every subscription of a management group streams its Activity Log to this deployment's hub
// and archive: an Azure Policy assignment at management-group scope, effect DeployIfNotExists,
// that gives every subscription under the group the Activity Log diagnostic setting main.bicep
// gives its own subscription. Deploy after main.bicep, with its outputs (infra/README.md,
// "Onboarding a management group"):
//
//   az deployment mg create --management-group-id <group> --location <region> \
//     --template-file infra/onboard-management-group.bicep --parameters \
//     destinationSubscriptionId=<AZURE_SUBSCRIPTION_ID> destinationResourceGroup=<AZURE_RESOURCE_GROUP> \
//     eventHubNamespaceName=<EVENTHUB_NAMESPACE> eventHubAuthorizationRuleName=<EVENTHUB_AUTHORIZATION_RULE_NAME> \
//     eventHubName=<EVENTHUB_NAME> storageAccountName=<STORAGE_ACCOUNT_NAME>
//
// Why a custom definition: the built-in "Configure Azure Activity logs to stream to specified
// Log Analytics workspace" (2465583e-4e78-4c15-b6be-a36cbc7c8b0f, Azure/azure-policy
// built-in-policies/policyDefinitions/Monitoring/DataConnectorsAzureActivity.json) sends to a
// workspace only, and no built-in sends the subscription Activity Log to an Event Hub or a
// storage account (the built-in Event Hub and storage diagnostic-setting policies are per
// resource type; Learn, "Built-in policies for Azure Monitor":
// https://learn.microsoft.com/azure/azure-monitor/essentials/diagnostics-settings-policies-deployifnotexists).
// policies/activity-log-diagnostic-setting.json follows the built-in's shape (subscription
// existence and deployment scope) with the hub and the archive as destinations, as Learn,
// "Create diagnostic settings at scale using Azure Policies and Initiatives", Custom policy
// definitions, suggests: https://learn.microsoft.com/azure/azure-monitor/essentials/diagnostic-settings-policy
//
// Remediation access (Learn, "Remediate non-compliant resources with Azure Policy":
// https://learn.microsoft.com/azure/governance/policy/how-to/remediate-resources): the
// assignment's system-assigned identity deploys the setting, so it gets the roles the
// definition lists in roleDefinitionIds, at the assignment's scope, and, because creating a
// diagnostic setting that names an Event Hub rule or a storage account needs ListKeys on them
// (Learn, "Roles, permissions, and security in Azure Monitor", Security considerations:
// https://learn.microsoft.com/azure/azure-monitor/roles-permissions-security), a custom role
// with exactly those ListKeys actions on the rule and the account, nothing at subscription scope.
targetScope = 'managementGroup'

@description('Region of the policy assignment\'s managed identity and of the DeployIfNotExists deployments.')
@minLength(1)
param location string = deployment().location

@description('Subscription of the Activity Log archive deployment (its AZURE_SUBSCRIPTION_ID output).')
@minLength(36)
@maxLength(36)
param destinationSubscriptionId string

@description('Resource group of that deployment (its AZURE_RESOURCE_GROUP output).')
@minLength(1)
param destinationResourceGroup string

@description('Event Hubs namespace the Activity Log streams to (EVENTHUB_NAMESPACE output).')
@minLength(6)
param eventHubNamespaceName string

@description('Namespace authorization rule the diagnostic settings stream with (EVENTHUB_AUTHORIZATION_RULE_NAME output).')
@minLength(1)
param eventHubAuthorizationRuleName string

@description('Hub the Activity Log streams to (EVENTHUB_NAME output).')
@minLength(1)
param eventHubName string

@description('Storage account the Activity Log is archived to (STORAGE_ACCOUNT_NAME output).')
@minLength(3)
@maxLength(24)
param storageAccountName string

@description('Name of the diagnostic setting created in each subscription. A subscription that already sends every category to this hub and account (the deployment\'s own, for one) counts as compliant whatever its setting is named.')
param diagnosticSettingName string = 'activitylog-archive'

@description('DeployIfNotExists creates the settings; AuditIfNotExists only reports the subscriptions without one.')
@allowed([
  'DeployIfNotExists'
  'AuditIfNotExists'
])
param effect string = 'DeployIfNotExists'

@description('Name of a remediation task that deploys the setting to subscriptions already non-compliant. Empty: none. Compliance must have been evaluated first (up to about 30 minutes after the assignment), so deploy once without it, then again with a new name for each run.')
param remediationName string = ''

// Built-in roles: Monitoring Contributor, the one role the definition lists in roleDefinitionIds
// (it writes Microsoft.Insights/DiagnosticSettings and deployments; Learn, "Azure built-in
// roles for Monitor": https://learn.microsoft.com/azure/role-based-access-control/built-in-roles/monitor#monitoring-contributor).
var roles = {
  monitoringContributor: '749f88d5-cbae-40b8-bcfc-e573ddc772fa'
}

var eventHubAuthorizationRuleId = '/subscriptions/${destinationSubscriptionId}/resourceGroups/${destinationResourceGroup}/providers/Microsoft.EventHub/namespaces/${eventHubNamespaceName}/authorizationRules/${eventHubAuthorizationRuleName}'
var storageAccountId = '/subscriptions/${destinationSubscriptionId}/resourceGroups/${destinationResourceGroup}/providers/Microsoft.Storage/storageAccounts/${storageAccountName}'

// The definition's DeployIfNotExists template runs at subscription scope and needs a region.
var definition = json(replace(loadTextContent('policies/activity-log-diagnostic-setting.json'), '__LOCATION__', location))

resource policyDefinition 'Microsoft.Authorization/policyDefinitions@2023-04-01' = {
  name: 'activitylog-archive-diagnostic-setting'
  properties: {
    displayName: definition.properties.displayName
    description: definition.properties.description
    policyType: 'Custom'
    mode: definition.properties.mode
    metadata: definition.properties.metadata
    parameters: definition.properties.parameters
    policyRule: definition.properties.policyRule
  }
}

// At this management group: every subscription under it, now and later.
resource policyAssignment 'Microsoft.Authorization/policyAssignments@2024-04-01' = {
  name: 'activitylog-archive'
  location: location
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    displayName: 'Activity Log archive: stream every subscription\'s Activity Log'
    description: 'Deploys a subscription diagnostic setting sending every Activity Log category to ${eventHubNamespaceName}/${eventHubName} and ${storageAccountName}.'
    policyDefinitionId: policyDefinition.id
    enforcementMode: 'Default'
    parameters: {
      effect: {
        value: effect
      }
      diagnosticSettingName: {
        value: diagnosticSettingName
      }
      eventHubAuthorizationRuleId: {
        value: eventHubAuthorizationRuleId
      }
      eventHubName: {
        value: eventHubName
      }
      storageAccountId: {
        value: storageAccountId
      }
    }
    nonComplianceMessages: [
      {
        message: 'This subscription\'s Activity Log is not sent to the Activity Log archive (${eventHubNamespaceName}/${eventHubName}, ${storageAccountName}).'
      }
    ]
  }
}

// The roleDefinitionIds of the definition (Monitoring Contributor), at the assignment's scope:
// the identity writes the diagnostic setting of each subscription under the group.
resource monitoringContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(managementGroup().id, policyAssignment.id, roles.monitoringContributor)
  properties: {
    roleDefinitionId: tenantResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringContributor)
    principalId: policyAssignment.identity.principalId
    principalType: 'ServicePrincipal'
    description: 'Activity Log archive policy: write each subscription\'s Activity Log diagnostic setting.'
  }
}

// ListKeys on the hub's authorization rule and on the archive account, in their own resource
// group (which may sit outside this management group).
module destinationAccess 'modules/policy-destination-access.bicep' = {
  name: 'activitylog-policy-destination-access'
  scope: resourceGroup(destinationSubscriptionId, destinationResourceGroup)
  params: {
    principalId: policyAssignment.identity.principalId
    eventHubNamespaceName: eventHubNamespaceName
    eventHubAuthorizationRuleName: eventHubAuthorizationRuleName
    storageAccountName: storageAccountName
  }
}

// Existing subscriptions: a remediation task deploys the setting to every subscription the
// last compliance evaluation found non-compliant (ExistingNonCompliant: re-evaluating compliance
// within the task is for subscription scope and below). DeployIfNotExists itself acts when a
// subscription is created or updated; any other non-compliant one waits for the next task.
resource remediation 'Microsoft.PolicyInsights/remediations@2021-10-01' = if (!empty(remediationName)) {
  name: !empty(remediationName) ? remediationName : 'none'
  properties: {
    policyAssignmentId: policyAssignment.id
    resourceDiscoveryMode: 'ExistingNonCompliant'
  }
  dependsOn: [
    monitoringContributor
    destinationAccess
  ]
}

@description('Resource id of the policy definition.')
output policyDefinitionId string = policyDefinition.id

@description('Resource id of the policy assignment.')
output policyAssignmentId string = policyAssignment.id

@description('Principal id of the assignment\'s system-assigned identity.')
output policyPrincipalId string = policyAssignment.identity.principalId
