// App Service built-in authentication ("Easy Auth") with Microsoft Entra ID in front of the
// function app: the search page (/api/search, its assets and data) needs a signed-in user;
// automation keeps its function keys on the paths excluded below. infra/README.md, "Sign-in".
//
// What the docs say, and what this relies on:
// - Flex Consumption supports it. The plan's preview-era considerations said "EasyAuth isn't
//   currently supported"; that line is gone from the current "Considerations"
//   (https://learn.microsoft.com/azure/azure-functions/flex-consumption-plan#considerations), and
//   Learn's "Tutorial: Host an MCP server on Azure Functions" creates a Flex Consumption app and
//   turns on built-in authentication with Entra ID ("Require authentication", HTTP 401)
//   (https://learn.microsoft.com/azure/azure-functions/functions-mcp-tutorial).
// - The settings are the V2 API (Microsoft.Web/sites/config 'authsettingsV2'):
//   https://learn.microsoft.com/azure/templates/microsoft.web/sites/config-authsettingsv2.
//   globalValidation.excludedPaths: "The paths for which unauthenticated flow would not be
//   redirected to the login page" (that reference; shown as exact paths in Learn, "File-based
//   configuration in Azure App Service authentication",
//   https://learn.microsoft.com/azure/app-service/configure-authentication-file-based; a
//   trailing /* is the only wildcard, per the product team in MicrosoftDocs/azure-docs#86514).
//   Excluded: the key-protected query API (auth level FUNCTION: the Functions host still
//   demands the key there) and the blob trigger's Event Grid webhook (Event Grid presents no
//   Entra token; Easy Auth would fail its validation handshake, as it does for any extension
//   webhook: Azure/azure-functions-microsoftgraph-extension#36). Nothing else: the page's own
//   routes (auth level ANONYMOUS at the host) are never excluded, tests/test_infra.py holds it.
// - Unauthenticated requests elsewhere: redirected to sign in (a browser opening the page).
// - No client secret: a federated identity credential trusting the app's user-assigned
//   identity stands in for it (clientSecretSettingName OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID,
//   the app setting holding that identity's client id; preview). Learn, "Configure your App
//   Service or Azure Functions app to use Microsoft Entra sign-in", "Use a managed identity
//   instead of a secret" (https://learn.microsoft.com/azure/app-service/configure-authentication-provider-aad).
//   Without any client credential Easy Auth would fall back to the implicit grant, which that
//   page does not recommend. infra/hooks/search_auth.py adds the credential and the redirect URI.
// - Who may use the page (a group, an app role) is decided in code (shared/core/access.py),
//   from the X-MS-CLIENT-PRINCIPAL header Easy Auth sets and strips from client requests: the
//   built-in authorization policy checks only identities (oid) and client applications (same
//   page, "Use a built-in authorization policy").

@description('Name of the function app (already deployed) to put sign-in in front of.')
param siteName string

@description('Client id (appId) of the Microsoft Entra app registration users sign in to.')
@minLength(36)
@maxLength(36)
param clientId string

@description('Microsoft Entra tenant of that registration (single tenant).')
param tenantId string = tenant().tenantId

@description('Name of the app setting that replaces a client secret: OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID (the app\'s identity, trusted by a federated identity credential).')
param clientSecretSettingName string = 'OVERRIDE_USE_MI_FIC_ASSERTION_CLIENTID'

@description('Paths that need no sign-in: the function-key API and the blob trigger\'s Event Grid webhook. Exact paths.')
param excludedPaths array

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: siteName
}

// checkov reads every Microsoft.Web/sites/config child as the site's `web` configuration and
// runs the site's checks on it; on this `authsettingsV2` child they do not apply (each skip).
resource authSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov:skip=CKV_AZURE_13: This resource is App Service authentication itself (V2 API: platform.enabled, requireAuthentication); the check looks for the V1 shape.
  // checkov:skip=CKV_AZURE_63: HTTP logging is a `web`/`logs` config setting, not an authentication one; the app's requests are traced to Application Insights (OpenTelemetry).
  // checkov:skip=CKV_AZURE_65: Detailed error messages are a `web`/`logs` config setting, not an authentication one.
  // checkov:skip=CKV_AZURE_66: Failed request tracing is a `web`/`logs` config setting (IIS, Windows), not an authentication one; Flex Consumption runs on Linux.
  // checkov:skip=CKV_AZURE_222: Same reason as on the function app: Event Grid and key-holding clients must reach it; sign-in guards the page. Private endpoints: see infra/README.md, Hardening.
  // checkov:skip=CKV_AZURE_80: .NET Framework version: a `web` config setting; the app is Python.
  // checkov:skip=CKV_AZURE_88: Azure Files: a site storage setting; Flex Consumption mounts none and this resource holds no storage.
  parent: site
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'RedirectToLoginPage'
      redirectToProvider: 'azureactivedirectory'
      excludedPaths: excludedPaths
    }
    httpSettings: {
      requireHttps: true
      forwardProxy: {
        convention: 'NoProxy'
      }
    }
    login: {
      tokenStore: {
        enabled: true
      }
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: clientId
          clientSecretSettingName: clientSecretSettingName
          // The tenant's v2.0 issuer, in this cloud (environment() knows its login endpoint).
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenantId}/v2.0'
        }
      }
    }
  }
}

@description('Where users sign in: the redirect URI the app registration needs (the hook sets it).')
output redirectPath string = '/.auth/login/aad/callback'

@description('The issuer users are signed in by.')
output openIdIssuer string = '${environment().authentication.loginEndpoint}${tenantId}/v2.0'
