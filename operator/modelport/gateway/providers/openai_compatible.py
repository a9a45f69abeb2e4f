"""The shared core of every upstream that already speaks the OpenAI API.

openai, Azure OpenAI, ai21labs, databricks-model-serving, custom and self-hosted vLLM all
take the client's body nearly as is; they differ only in URL and auth headers, which is
all their modules define. Bodies are relayed without re-serialising and streamed events
are passed through untouched (only ``[DONE]`` is held back, so the gateway sends exactly
one at the end whatever the upstream does).

Usage is always asked for: a stream goes upstream with ``stream_options.include_usage``
set, so every streamed request ends with the provider's own token counts. When the
client did not ask for them, the usage-only chunk (``choices: []``) is not relayed, and
the client sees the stream it asked for. Upstreams that may not accept the option
(:attr:`OpenAICompatible.asks_stream_usage` false) are not sent it; their counts are
taken when they send them anyway, and estimated otherwise.
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

    tasks = frozenset(TASK_PATHS)
    asks_stream_usage: bool = True
    """Whether the upstream accepts ``stream_options.include_usage`` (OpenAI's API)."""

    def stream_usage(self, call: Call) -> bool:
        """Whether to ask this call's upstream for a stream's usage."""
        return self.asks_stream_usage

    def url(self, call: Call) -> str:
        """The upstream URL for this call (base URL + the task's OpenAI path)."""
        return self.base_url(call.entity) + TASK_PATHS[call.task]

    def auth_headers(self, entity: EntityConfig, auth: Auth) -> dict[str, str]:
        """The headers that authenticate this entity."""
        return {"authorization": f"Bearer {auth.secret('apiKey')}"}

    def body(self, call: Call) -> dict[str, Any]:
        """The client's body with ``model`` set to the entity's upstream model name, and a
        stream's usage asked for."""
        body = {**call.raw, "model": call.entity.model_name}
        if call.stream and not call.include_usage and self.stream_usage(call):
            body["stream_options"] = {
                **(call.raw.get("stream_options") or {}),
                "include_usage": True,
            }
        return body

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
        return PassThrough(keep_usage_chunk=call.include_usage)


class PassThrough:
    """Relays ``data:`` payloads as they are, noting the usage chunk when one passes.

    With ``keep_usage_chunk`` false (the client did not ask for usage, the gateway did),
    a chunk that carries only usage (no choices) is taken and not relayed.
    """

    __slots__ = ("_keep", "usage")

    def __init__(self, *, keep_usage_chunk: bool = True) -> None:
        self.usage: Usage | None = None
        self._keep = keep_usage_chunk

    def feed(self, event: Event) -> list[bytes]:
        """Relay one event (``[DONE]`` is the gateway's to send)."""
        data = event[1]
        if data == b"[DONE]":
            return []
        # Parse only the chunk that carries usage; every other chunk passes untouched.
        if b'"usage":{' in data or b'"usage": {' in data:
            try:
                chunk = orjson.loads(data)
                found = chunk.get("usage")
                if isinstance(found, dict):
                    self.usage = Usage(
                        int(found.get("prompt_tokens") or 0),
                        int(found.get("completion_tokens") or 0),
                    )
                    if not self._keep and not chunk.get("choices"):
                        return []
            except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
                pass
        return [data]

    def finish(self) -> list[bytes]:
        """Nothing is held back."""
        return []
