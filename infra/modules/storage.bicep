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

@description('Days a deleted blob or container can still be restored. Guards the archive against a mistaken delete (including a retention run with a wrong setting, or the lifecycle rule below).')
@minValue(1)
@maxValue(365)
param softDeleteDays int = 7

@description('Container Azure Monitor writes the raw Activity Log export to (PT1H.json append blobs).')
param archiveContainerName string = 'insights-activity-logs'

@description('Days after its last write that a raw PT1H.json export blob is deleted by the lifecycle rule. 0 (the default) creates no rule: the app\'s own retention timer deletes raw blobs past its longest retention limit. Values from 1 to 29 are raised to 30 (see rawArchiveExpiryFloorDays).')
@minValue(0)
@maxValue(36500)
param rawArchiveExpiryDays int = 0

// A raw blob may be deleted only once it can no longer be needed to index it: the app reads a
// PT1H.json until it is final, which is its hour plus ACTIVITYLOG_SEAL_AFTER_MINUTES (at most 7
// days), and its catch-up looks back ACTIVITYLOG_CATCHUP_LOOKBACK_HOURS (at most 7 days) and
// past any outage from its watermark. 30 days is twice the longest configurable window, which
// leaves weeks to notice and fix an app that stopped indexing before its input disappears.
var rawArchiveExpiryFloorDays = 30

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

// Lifecycle management for Azure's own raw export only (container insights-activity-logs):
// once a PT1H.json is indexed, its records live in the index for ACTIVITYLOG_RETENTION_DAYS
// whether or not the raw blob stays. Deleting it early is opt-in (rawArchiveExpiryDays > 0)
// because until the app writes its own compressed archive (a later issue; its tiering and
// immutability are deliberately not configured here) the raw blobs are the only byte-exact
// copy of the events: the index holds normalized records, and a backfill after a fix re-reads
// the raw blobs. Only the delete action exists for append blobs ("Currently blockBlob supports
// all tiering and delete actions. Only delete actions are supported for appendBlob."; Learn,
// "Microsoft.Storage storageAccounts/managementPolicies", ManagementPolicyFilter:
// https://learn.microsoft.com/azure/templates/microsoft.storage/storageaccounts/managementpolicies).
// Block blobs are included for archives copied into the container. With blob soft delete on,
// a deleted blob stays restorable for softDeleteDays (Learn, "Lifecycle management policies
// that delete blobs": https://learn.microsoft.com/azure/storage/blobs/lifecycle-management-policy-delete).
resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = if (rawArchiveExpiryDays > 0) {
  parent: storage
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'expire-raw-activity-log-export'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'appendBlob'
                'blockBlob'
              ]
              prefixMatch: [
                '${archiveContainerName}/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  // Counted from the blob's last write (Azure appends during its hour), never
                  // from its creation or its last read.
                  daysAfterModificationGreaterThan: max(rawArchiveExpiryDays, rawArchiveExpiryFloorDays)
                }
              }
            }
          }
        }
      ]
    }
  }
}

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

@description('Days after their last write that raw export blobs are deleted; 0 when no lifecycle rule exists.')
output rawArchiveExpiryDays int = rawArchiveExpiryDays > 0 ? max(rawArchiveExpiryDays, rawArchiveExpiryFloorDays) : 0
