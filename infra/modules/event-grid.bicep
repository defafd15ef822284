// Event Grid is the only blob trigger source on Flex Consumption. The storage account's
// system topic raises Microsoft.Storage.BlobCreated when Azure Monitor creates an hour's
// PT1H.json (an append blob: later appends raise nothing, which is why the app also runs a
// catch-up timer), and an event subscription delivers it to the Functions blob extension
// webhook.
//
// This module creates the system topic only. The event subscription is created by the
// postdeploy hook (scripts/postdeploy.sh, .ps1), because its webhook URL carries the host's
// `blobs_extension` system key, which exists only once the published app has started with the
// Event Grid blob trigger loaded, and because Event Grid validates the endpoint when the
// subscription is created, which only the running blob extension answers. The hook is the
// pattern of the Azure Functions azd quickstart for the Event Grid blob trigger
// (Azure-Samples/functions-quickstart-python-azd-eventgrid-blob, scripts/post-up.sh) and of
// Learn, "Tutorial: Trigger Azure Functions on blob containers using an event subscription"
// (https://learn.microsoft.com/azure/azure-functions/functions-event-grid-blob-trigger).
// Everything the hook needs to create the subscription is an output below, so this file stays
// the one place its settings are decided. An incremental deployment never deletes the
// subscription the hook made (it is not in the template).

@description('Name of the Event Grid system topic.')
param name string

@description('Azure region: a storage account\'s system topic lives in the account\'s region.')
param location string

@description('Tags applied to the topic.')
param tags object = {}

@description('Resource id of the storage account whose events the topic carries.')
param storageAccountId string

@description('Container whose new blobs trigger the function (the archive container).')
param containerName string

@description('Name the blob-triggered function is registered under (@bp.function_name in functions/archive_blob_trigger.py).')
param functionName string = 'archive_blob'

@description('Delivery attempts before Event Grid drops an event. The catch-up timer indexes the hour regardless, so a dropped event delays records, it does not lose them.')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 30

@description('Minutes Event Grid keeps retrying an event (1 to 1440).')
@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int = 1440

// Event subscription names allow letters, digits and hyphens only.
var subscriptionName = '${replace(functionName, '_', '-')}-blob-created'

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: name
  location: location
  tags: tags
  properties: {
    source: storageAccountId
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

@description('Name of the system topic.')
output systemTopicName string = systemTopic.name

@description('Name of the event subscription the postdeploy hook creates on the topic.')
output subscriptionName string = subscriptionName

@description('Function the subscription delivers to (the webhook\'s functionName=Host.Functions.<this>).')
output functionName string = functionName

@description('Subject filter of the subscription: the archive container only.')
output subjectBeginsWith string = '/blobServices/default/containers/${containerName}/'

@description('Delivery attempts of the subscription.')
output maxDeliveryAttempts int = maxDeliveryAttempts

@description('Event time to live of the subscription, in minutes.')
output eventTimeToLiveInMinutes int = eventTimeToLiveInMinutes
