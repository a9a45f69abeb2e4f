"""Any OpenAI-compatible URL: ``customProviderUrl`` plus the task's OpenAI path.

Auth is ``bearerTokenAuth`` (``Authorization: Bearer <apiKey>``) or ``apiKeyAuth``
(the configured header name carrying the key as is).
"""

from __future__ import annotations

from modelport.gateway.providers.base import Auth
from modelport.gateway.providers.openai_compatible import OpenAICompatible
from modelport.gatewayconfig import EntityConfig


class CustomProvider(OpenAICompatible):
    """An OpenAI-compatible server with a key in a header of the user's choosing."""

    name = "custom"

    def auth_headers(self, entity: EntityConfig, auth: Auth) -> dict[str, str]:
        """The configured API-key header, or a bearer token."""
        header = entity.custom.api_key_header if entity.custom else None
        if header:
            return {header.lower(): auth.secret("apiKey")}
        return {"authorization": f"Bearer {auth.secret('apiKey')}"}
