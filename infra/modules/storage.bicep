// One storage account for everything the app keeps: the Activity Log archive that the
// diagnostic setting writes (PT1H.json append blobs), the app's index tables, cursors and
// dead letters, the Functions host's own state, and the Flex Consumption deployment package.
// Keys are off: the app, the host and the deployment all authenticate with the managed
// identity. (That Azure Monitor's archive writes need no key is what this relies on and has
// not been seen working yet: infra/README.md, "Check the export after step 1".)

@description('Name of the storage account (3 to 24 lowercase letters and digits, globally unique).')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region of the account.')
param location string

@description('Tags applied to the account.')
param tags object = {}

@description('Redundancy. Geo-redundant by default: the archive is the system of record for years of audit history.')
@allowed([
  'Standard_LRS'
  'Standard_ZRS'
  'Standard_GRS'
  'Standard_GZRS'
  'Standard_RAGRS'
  'Standard_RAGZRS'
])
param skuName string = 'Standard_GRS'

@description('Blob containers to create: the archive container and the deployment package container.')
param containerNames array

@description('Days a deleted blob or container can still be restored. Guards the archive against a mistaken delete (including a retention run with a wrong setting).')
@minValue(1)
@maxValue(365)
param softDeleteDays int = 7

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: Default action Allow is needed while the Flex app has no VNet integration (it reaches storage over the public endpoint). No key exists to abuse: shared keys are off and every caller needs an Entra ID token and an RBAC role. Private endpoints: see infra/README.md, Hardening.
  // checkov:skip=CKV_AZURE_59: Same reason as CKV_AZURE_35: public network access stays on for the network-free Flex app; access is Entra ID plus RBAC only, and blob public (anonymous) access is off.
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    // Entra ID only: no account keys, no SAS signed with them.
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    dnsEndpointType: 'Standard'
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      // AzureServices lets the Activity Log diagnostic setting and Event Grid in even if
      // defaultAction is later tightened to Deny.
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
  }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [
  for containerName in containerNames: {
    parent: blobService
    name: containerName
    properties: {
      publicAccess: 'None'
    }
  }
]

@description('Resource id of the account.')
output id string = storage.id

@description('Name of the account.')
output name string = storage.name

@description('Blob service endpoint, with a trailing slash (cloud-correct: no hard-coded DNS suffix).')
output blobEndpoint string = storage.properties.primaryEndpoints.blob

@description('Queue service endpoint, with a trailing slash.')
output queueEndpoint string = storage.properties.primaryEndpoints.queue

@description('Table service endpoint, with a trailing slash.')
output tableEndpoint string = storage.properties.primaryEndpoints.table
