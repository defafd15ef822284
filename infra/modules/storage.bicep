// One storage account for everything the app keeps: the Activity Log archive that the
// diagnostic setting writes (PT1H.json append blobs), the app's own archive of normalized records
// (container {storePrefix}-records, below), its index tables (one a month, which the app creates
// and drops itself: no table is declared here), cursors and dead letters, the Functions host's
// own state, and the Flex Consumption deployment package.
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

@description('Blob containers to create: the archive container and the deployment package container. The app\'s records container is recordsContainerName.')
param containerNames array

@description('The app\'s own archive of normalized records (ACTIVITYLOG_STORE_PREFIX + \'-records\'): gzip JSON Lines blobs class=<category class>/y=YYYY/m=MM/d=DD/<id>.jsonl.gz, each uploaded once at ACTIVITYLOG_ARCHIVE_TIER.')
@minLength(3)
@maxLength(63)
param recordsContainerName string

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

// Archive is an offline tier: "While a blob is in the Archive tier, it can't be read or
// modified" until it is rehydrated to an online tier, which "can take up to 15 hours"; data there
// "must remain in the Archive tier for at least 180 days or be subject to an early deletion
// charge"; and "The Archive tier is not supported for ZRS, GZRS, or RA-GZRS accounts" (Learn,
// "Access tiers for blob data": https://learn.microsoft.com/azure/storage/blobs/access-tiers-overview).
@description('Days after upload that the app\'s record blobs move to the Archive tier by a lifecycle rule. 0 (the default) creates no rule: archived blobs are offline, and the app\'s query and `verify` cannot read them until they are rehydrated (hours). Below 90 days a Cold blob pays Cold\'s early-deletion charge when it moves; an archived blob deleted by retention within 180 days of moving pays Archive\'s. Not supported on ZRS, GZRS or RA-GZRS accounts.')
@minValue(0)
@maxValue(36500)
param archiveToArchiveTierAfterDays int = 0

// Learn, "Time-based retention policies for immutable blob data"
// (https://learn.microsoft.com/azure/storage/blobs/immutable-time-based-retention-policy-overview):
// "The minimum retention interval for a time-based retention policy is one day, and the maximum
// is 146,000 days (400 years)", counted from each blob's creation.
@description('Days each blob in the records container stays immutable (WORM: no overwrite, no delete) after its creation, by a container-level time-based retention policy. 0 (the default) sets no policy. Created unlocked; lock it after review (infra/README.md, "Records archive"). Keep it at most the shortest retention (ACTIVITYLOG_RETENTION_DAYS and every ACTIVITYLOG_RETENTION_CATEGORY_DAYS value): retention skips protected blobs and reports them.')
@minValue(0)
@maxValue(146000)
param archiveImmutabilityDays int = 0

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

// The app's own archive, the system of record for normalized records: each blob is written
// once, at ACTIVITYLOG_ARCHIVE_TIER (Cold by default), and read rarely (queries past the index,
// `verify`). Declared on its own, not in containerNames, because the optional immutability
// policy below is its child. Private, like every container here.
resource recordsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: recordsContainerName
  properties: {
    publicAccess: 'None'
  }
}

// Optional WORM on the records container (archiveImmutabilityDays > 0): a container-level
// time-based retention policy, as in Learn's template reference ("Microsoft.Storage
// storageAccounts/blobServices/containers/immutabilityPolicies":
// https://learn.microsoft.com/azure/templates/microsoft.storage/storageaccounts/blobservices/containers/immutabilitypolicies).
// "When a time-based retention policy is set, clients can create and read blobs, but cannot
// modify or delete them", and it covers the blobs already there (time-based retention page,
// linked above). The app's retention deletes whole day prefixes per category class: it skips
// blobs still protected and reports them, and deletes them on a later run once their period has
// passed, so the period should not exceed the shortest retention. Changing a protected blob's
// tier stays allowed ("All blob access tiers support immutable storage. You can change the
// access tier of a blob with the Set Blob Tier operation": Learn, "Store business-critical blob
// data with immutable storage": https://learn.microsoft.com/azure/storage/blobs/immutable-storage-overview),
// so the Archive lifecycle rule works with it. No protected append writes: the app uploads
// block blobs, each once. It must not overwrite one: even after the period, an overwrite (and
// Set Blob Metadata or Set Blob Properties) is refused (Learn, "Container-level WORM policies for immutable blob
// data": https://learn.microsoft.com/azure/storage/blobs/immutable-container-level-worm-policies).
// Deployed unlocked, "for testing purposes": both states protect, but only a
// locked policy is compliant (SEC 17a-4(f)), and "The only action allowed on a Locked policy is
// ExtendImmutabilityPolicy action" (Learn, "Blob Containers - Lock Immutability Policy":
// https://learn.microsoft.com/rest/api/storagerp/blob-containers/lock-immutability-policy). So
// the user locks it after review, and from then on deploys with archiveImmutabilityDays = 0,
// which leaves the locked policy as it is (infra/README.md, "Records archive").
resource recordsImmutability 'Microsoft.Storage/storageAccounts/blobServices/containers/immutabilityPolicies@2023-05-01' = if (archiveImmutabilityDays > 0) {
  parent: recordsContainer
  name: 'default'
  properties: {
    immutabilityPeriodSinceCreationInDays: archiveImmutabilityDays
    allowProtectedAppendWrites: false
  }
}

// Lifecycle management (Learn, "Azure Blob Storage lifecycle management overview":
// https://learn.microsoft.com/azure/storage/blobs/lifecycle-management-overview). One policy per
// account, with up to two optional rules; it exists only when one of them does (a policy needs
// at least one rule).
//
// Rule 1, Azure's own raw export (container insights-activity-logs): once a PT1H.json is
// indexed, its records live in the index and in the app's records archive whether or not the
// raw blob stays. Deleting it early is opt-in (rawArchiveExpiryDays > 0) because the raw blobs
// are the only byte-exact copy of the events as Azure wrote them (the app keeps normalized
// records), and a backfill after a normalization fix re-reads them. Only the delete action
// exists for append blobs ("Currently blockBlob supports all tiering and delete actions. Only
// delete actions are supported for appendBlob."; Learn, "Microsoft.Storage
// storageAccounts/managementPolicies", ManagementPolicyFilter:
// https://learn.microsoft.com/azure/templates/microsoft.storage/storageaccounts/managementpolicies).
// Block blobs are included for archives copied into the container. With blob soft delete on,
// a deleted blob stays restorable for softDeleteDays (Learn, "Lifecycle management policies
// that delete blobs": https://learn.microsoft.com/azure/storage/blobs/lifecycle-management-policy-delete).
var rawExportRules = (rawArchiveExpiryDays > 0) ? [
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
] : []

// Rule 2, the app's records archive (container {storePrefix}-records): tier to Archive after
// archiveToArchiveTierAfterDays (> 0), the one tiering step the app does not take itself (it
// uploads each blob at ACTIVITYLOG_ARCHIVE_TIER). Off by default because archived blobs are
// offline: the app's query and `verify` cannot read them until they are rehydrated, and Learn
// warns "If a data set needs to be readable, do not set a policy to move blobs to the archive
// tier" (its own example, a tierToArchive action on the block blobs of one container, is this
// rule: "Configure a lifecycle management policy to move blobs between access tiers",
// https://learn.microsoft.com/azure/storage/blobs/lifecycle-management-policy-access-tiers).
// The prefix is the container ("A prefix string must start with a container name"; Learn,
// "Azure Blob Storage lifecycle management policy structure":
// https://learn.microsoft.com/azure/storage/blobs/lifecycle-management-policy-structure). The
// same page: rehydrating a blob does not update its last modified time, so this rule moves a
// blob rehydrated in place back to Archive; rehydrate by copying instead (infra/README.md).
// Deliberately no delete action, here or anywhere for this container: the app enforces
// retention itself, per category class (ACTIVITYLOG_RETENTION_DAYS and
// ACTIVITYLOG_RETENTION_CATEGORY_DAYS), deleting whole day prefixes together with its month
// index tables, which one age for the whole container cannot express.
var recordsArchiveRules = (archiveToArchiveTierAfterDays > 0) ? [
  {
    name: 'archive-tier-app-records'
    enabled: true
    type: 'Lifecycle'
    definition: {
      filters: {
        blobTypes: [
          'blockBlob'
        ]
        prefixMatch: [
          '${recordsContainerName}/'
        ]
      }
      actions: {
        baseBlob: {
          tierToArchive: {
            // A record blob is written once, so its last write is its upload.
            daysAfterModificationGreaterThan: archiveToArchiveTierAfterDays
          }
        }
      }
    }
  }
] : []

var lifecycleRules = concat(rawExportRules, recordsArchiveRules)

resource lifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = if (!empty(lifecycleRules)) {
  parent: storage
  name: 'default'
  properties: {
    policy: {
      rules: lifecycleRules
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

@description('Name of the app\'s records container.')
output recordsContainerName string = recordsContainer.name

@description('Days after upload that record blobs move to the Archive tier; 0 when no lifecycle rule does.')
output archiveToArchiveTierAfterDays int = archiveToArchiveTierAfterDays

@description('Days each record blob stays immutable after creation; 0 when the template sets no policy.')
output archiveImmutabilityDays int = archiveImmutabilityDays
