// The one user-assigned identity the function app runs as. User-assigned rather than
// system-assigned so that its role assignments can be made before the app exists (the app
// starts reading storage and the hub as soon as it is created) and survive recreating the app.

@description('Name of the user-assigned managed identity.')
param name string

@description('Azure region of the identity.')
param location string

@description('Tags applied to the identity.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

@description('Resource id of the identity, for the function app and its deployment storage.')
output resourceId string = identity.id

@description('Client id: what the `__clientId` app settings name.')
output clientId string = identity.properties.clientId

@description('Principal (object) id: what the role assignments name.')
output principalId string = identity.properties.principalId

@description('Name of the identity.')
output name string = identity.name
