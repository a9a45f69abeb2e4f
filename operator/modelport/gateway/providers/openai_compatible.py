"""The shared core of every upstream that already speaks the OpenAI API.

openai, Azure OpenAI, ai21labs, databricks-model-serving, custom and self-hosted vLLM all
take the client's body nearly as is; they differ only in URL and auth headers, which is
all their modules define. Bodies are relayed without re-serialising and streamed events
are passed through untouched (only ``[DONE]`` is held back, so the gateway sends exactly
one at the end whatever the upstream does).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from modelport.gateway.framing import Event
from modelport.gateway.openai_format import Usage
from modelport.gateway.providers.base import Auth, Call, Provider, UpstreamRequest
from modelport.gatewayconfig import EntityConfig, Task

TASK_PATHS = {
    Task.CHAT: "/chat/completions",
    Task.COMPLETIONS: "/completions",
    Task.EMBEDDINGS: "/embeddings",
}


class OpenAICompatible(Provider):
    """Relays OpenAI-format requests; subclasses say where and how to authenticate."""

    tasks = frozenset(Task)

    def url(self, call: Call) -> str:
        """The upstream URL for this call (base URL + the task's OpenAI path)."""
        return self.base_url(call.entity) + TASK_PATHS[call.task]

    def auth_headers(self, entity: EntityConfig, auth: Auth) -> dict[str, str]:
        """The headers that authenticate this entity."""
        return {"authorization": f"Bearer {auth.secret('apiKey')}"}

    def body(self, call: Call) -> dict[str, Any]:
        """The client's body with ``model`` set to the entity's upstream model name."""
        return {**call.raw, "model": call.entity.model_name}

    def build_request(self, call: Call, auth: Auth) -> UpstreamRequest:
        """POST the client's body to the task's path."""
        headers = {"content-type": "application/json", **self.auth_headers(call.entity, auth)}
        if call.stream:
            headers["accept"] = "text/event-stream"
        return UpstreamRequest("POST", self.url(call), headers, orjson.dumps(self.body(call)))

    def parse_response(self, call: Call, body: bytes, headers: Mapping[str, str]) -> bytes:
        """Relay the upstream's body unchanged."""
        return body

    def stream_translator(self, call: Call) -> PassThrough:
        """Relay events unchanged."""
        return PassThrough()


class PassThrough:
    """Relays ``data:`` payloads as they are, noting the usage chunk when one passes."""

    __slots__ = ("usage",)

    def __init__(self) -> None:
        self.usage: Usage | None = None

    def feed(self, event: Event) -> list[bytes]:
        """Relay one event (``[DONE]`` is the gateway's to send)."""
        data = event[1]
        if data == b"[DONE]":
            return []
        # Parse only the chunk that carries usage; every other chunk passes untouched.
        if b'"usage":{' in data or b'"usage": {' in data:
            try:
                found = orjson.loads(data).get("usage")
                if isinstance(found, dict):
                    self.usage = Usage(
                        int(found.get("prompt_tokens") or 0),
                        int(found.get("completion_tokens") or 0),
                    )
            except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
                pass
        return [data]

    def finish(self) -> list[bytes]:
        """Nothing is held back."""
        return []
