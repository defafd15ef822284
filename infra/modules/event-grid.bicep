// Event Grid is the only blob trigger source on Flex Consumption. The storage account's
// system topic raises Microsoft.Storage.BlobCreated when Azure Monitor creates an hour's
// PT1H.json (an append blob: later appends raise nothing, which is why the app also runs a
// catch-up timer), and the subscription delivers it to the Functions blob extension webhook.
//
// Two-step deployment: the webhook URL carries the host's `blobs_extension` system key, which
// the host creates only when it first starts with the Event Grid blob trigger loaded, that is
// after the code is published. And Event Grid validates the endpoint when the subscription is
// created, which only the running blob extension answers. So the first deployment creates the
// topic alone (deployEventGridSubscription = false), then `func azure functionapp publish`,
// then a second deployment with deployEventGridSubscription = true adds the subscription.

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

@description('Create the event subscription (second deployment, after the app is published; see above).')
param deploySubscription bool = false

@description('Name of the function app that receives the events.')
param functionAppName string

@description('Name the blob-triggered function is registered under (@bp.function_name in functions/archive_blob_trigger.py).')
param functionName string = 'archive_blob'

@description('Delivery attempts before Event Grid drops an event. The catch-up timer indexes the hour regardless, so a dropped event delays records, it does not lose them.')
@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 30

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

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

// The host's keys; `blobs_extension` exists once the published app has started.
resource functionHost 'Microsoft.Web/sites/host@2024-04-01' existing = {
  parent: functionApp
  name: 'default'
}

resource blobCreated 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = if (deploySubscription) {
  parent: systemTopic
  name: subscriptionName
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        // The blob extension's endpoint. The system key is read at deployment time, never
        // written in this repository; ARM evaluates list functions even for a resource whose
        // condition is false, hence the guard.
        endpointUrl: deploySubscription ? 'https://${functionApp.properties.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions.${functionName}&code=${functionHost.listKeys().systemKeys.blobs_extension}' : ''
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      subjectBeginsWith: '/blobServices/default/containers/${containerName}/'
      enableAdvancedFilteringOnArrays: true
    }
    retryPolicy: {
      maxDeliveryAttempts: maxDeliveryAttempts
      eventTimeToLiveInMinutes: 1440
    }
  }
}

@description('Name of the system topic.')
output systemTopicName string = systemTopic.name

@description('Name of the event subscription, or empty when not deployed yet.')
output subscriptionName string = deploySubscription ? blobCreated.name : ''
