"""OpenAI, Azure OpenAI (api-key) and Azure OpenAI with Entra ID (client-credentials token).

- ``apiType: openai`` — ``{base}/chat/completions`` with ``Authorization: Bearer`` and the
  ``OpenAI-Organization`` header when an organization is configured.
- ``apiType: azure`` — ``{base}/openai/deployments/{deployment}/{task path}
  ?api-version={version}`` with the ``api-key`` header.
- ``apiType: azuread`` — the same URL with ``Authorization: Bearer <Entra ID token>``; the
  token comes from a client-credentials grant against the tenant's token endpoint, which
  the I/O layer caches and refreshes before it expires.
"""

from __future__ import annotations

from urllib.parse import urlencode

from modelport.gateway.providers.base import Auth, Call, UpstreamRequest
from modelport.gateway.providers.openai_compatible import TASK_PATHS, OpenAICompatible
from modelport.gatewayconfig import EntityConfig, OpenAISettings

AZURE_STREAM_USAGE_SINCE = "2024-09-01"
"""The first Azure OpenAI API version that takes ``stream_options`` (2024-09-01-preview)."""
ENTRA_SCOPE = "https://cognitiveservices.azure.com/.default"
ENTRA_TOKEN_URL = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"  # noqa: S105


def _settings(entity: EntityConfig) -> OpenAISettings:
    return entity.openai or OpenAISettings()


class OpenAIProvider(OpenAICompatible):
    """openai / azure / azuread."""

    name = "openai"
    default_base_url = "https://api.openai.com/v1"

    def url(self, call: Call) -> str:
        """OpenAI's path, or Azure's deployment path with its api-version."""
        settings = _settings(call.entity)
        if settings.api_type == "openai":
            return super().url(call)
        query = urlencode({"api-version": settings.api_version or ""})
        return (
            f"{self.base_url(call.entity)}/openai/deployments/{settings.deployment_name}"
            f"{TASK_PATHS[call.task]}?{query}"
        )

    def stream_usage(self, call: Call) -> bool:
        """OpenAI always; Azure from the API version that knows ``stream_options``."""
        settings = _settings(call.entity)
        if settings.api_type == "openai":
            return True
        return (settings.api_version or "") >= AZURE_STREAM_USAGE_SINCE

    def auth_headers(self, entity: EntityConfig, auth: Auth) -> dict[str, str]:
        """Bearer key (+ organization), ``api-key``, or the Entra ID bearer token."""
        settings = _settings(entity)
        if settings.api_type == "azure":
            return {"api-key": auth.secret("apiKey")}
        if settings.api_type == "azuread":
            return {"authorization": f"Bearer {auth.token}"}
        headers = {"authorization": f"Bearer {auth.secret('apiKey')}"}
        if settings.organization:
            headers["openai-organization"] = settings.organization
        return headers

    def token_request(self, entity: EntityConfig, auth: Auth) -> UpstreamRequest | None:
        """The Entra ID client-credentials grant, for ``azuread`` only."""
        settings = _settings(entity)
        if settings.api_type != "azuread":
            return None
        url = settings.token_url or ENTRA_TOKEN_URL.format(tenant=settings.tenant_id)
        form = urlencode(
            {
                "grant_type": "client_credentials",
                "client_id": settings.client_id or "",
                "client_secret": auth.secret("clientSecret"),
                "scope": ENTRA_SCOPE,
            }
        )
        return UpstreamRequest(
            "POST",
            url,
            {"content-type": "application/x-www-form-urlencoded", "accept": "application/json"},
            form.encode(),
        )
