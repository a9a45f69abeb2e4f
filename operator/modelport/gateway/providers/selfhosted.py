"""Self-hosted entities: the in-cluster Service of their inference pods (vLLM and friends).

The runtime serves the OpenAI API at ``baseUrl`` (``http://<svc>.<ns>.svc:<port>/v1``)
under the served model name the operator gave it; no credentials cross the cluster
network.
"""

from __future__ import annotations

from modelport.gateway.providers.base import Auth
from modelport.gateway.providers.openai_compatible import OpenAICompatible
from modelport.gatewayconfig import EntityConfig


class SelfHostedProvider(OpenAICompatible):
    """No auth headers; everything else is the OpenAI API."""

    name = "self-hosted"

    def auth_headers(self, entity: EntityConfig, auth: Auth) -> dict[str, str]:
        """In-cluster: none."""
        return {}
