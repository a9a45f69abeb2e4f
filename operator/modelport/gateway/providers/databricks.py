"""Another serving endpoint of the reference service (or of Modelport itself).

``POST {workspaceUrl}/serving-endpoints/{name}/invocations`` with the API token as a
bearer; the body is the OpenAI-format request without ``model`` (the path names it).
"""

from __future__ import annotations

from typing import Any

from modelport.gateway.providers.base import Call
from modelport.gateway.providers.openai_compatible import OpenAICompatible


class DatabricksModelServingProvider(OpenAICompatible):
    """Bearer token; the endpoint name is ``modelName``."""

    name = "databricks-model-serving"
    asks_stream_usage = False  # not in its documented parameters; counted if sent

    def url(self, call: Call) -> str:
        """The named endpoint's invocations URL."""
        return (
            f"{self.base_url(call.entity)}/serving-endpoints/{call.entity.model_name}/invocations"
        )

    def body(self, call: Call) -> dict[str, Any]:
        """The client's body without ``model``: the path names the endpoint."""
        return {k: v for k, v in call.raw.items() if k != "model"}
