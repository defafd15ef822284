// An Azure Monitor workbook over the custom table and the app's telemetry: throughput, lag,
// failed operations, rejections and dead letters, retention. The content is the JSON that
// the portal's workbook editor exports (infra/workbook/activitylog.workbook.json): edit it in
// the portal, export it, replace the file, keeping the two resource id placeholders.

@description('Display name of the workbook.')
param displayName string

@description('Azure region of the workbook resource.')
param location string

@description('Tags applied to the workbook.')
param tags object = {}

@description('Resource id of the Log Analytics workspace holding ActivityLog_CL.')
param workspaceId string

@description('Resource id of the Application Insights component holding the activitylog.* metrics and traces.')
param applicationInsightsId string

var template = loadTextContent('../workbook/activitylog.workbook.json')
var content = replace(replace(template, '__WORKSPACE_ID__', workspaceId), '__APPINSIGHTS_ID__', applicationInsightsId)

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  // Workbook names must be GUIDs; this one is stable per resource group and workspace.
  name: guid(resourceGroup().id, workspaceId, 'activitylog-workbook')
  location: location
  // The portal shows hidden-title in resource lists, where the GUID name says nothing.
  tags: union(tags, { 'hidden-title': displayName })
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    version: 'Notebook/1.0'
    sourceId: workspaceId
    serializedData: content
  }
}

@description('Resource id of the workbook.')
output id string = workbook.id
