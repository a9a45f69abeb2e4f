"""The shared core of every upstream that already speaks the OpenAI API.

openai, Azure OpenAI, ai21labs, databricks-model-serving, custom and self-hosted vLLM all
take the client's body nearly as is; they differ in URL, auth headers and (AI21) which
fields go upstream, which is what their modules define. Bodies are relayed without
re-serialising and streamed events are passed through untouched, but each is read:

- a 200 whose body is not a JSON object is the upstream's fault (502), never relayed;
- a streamed event that is not JSON, or that carries an ``error``, ends the stream with
  the gateway's error event;
- ``[DONE]`` is held back, and the gateway sends exactly one at the end, but only when
  every choice that appeared got its ``finish_reason``: a stream that ends before that
  (the upstream closed the body early, or cut it mid-event) ends with an error event,
  so that the client never takes half an answer for a whole one.

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

from modelport.gateway.errors import INTERNAL_ERROR, TEMPORARILY_UNAVAILABLE, GatewayError
from modelport.gateway.framing import Event
from modelport.gateway.openai_format import Usage
from modelport.gateway.providers.base import (
    Auth,
    Call,
    Provider,
    Relayed,
    UpstreamRequest,
    truncated,
)
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

    def parse_response(self, call: Call, body: bytes, headers: Mapping[str, str]) -> Relayed:
        """Relay the upstream's body unchanged, once it is known to be a JSON object."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            raise not_json(self.name, "answered with a body that is not JSON")
        return Relayed(body, usage_of(data.get("usage")))

    def stream_translator(self, call: Call) -> PassThrough:
        """Relay events unchanged."""
        return PassThrough(self.name, keep_usage_chunk=call.include_usage)


class PassThrough:
    """Relays ``data:`` payloads as they are, checking each and noting the usage.

    With ``keep_usage_chunk`` false (the client did not ask for usage, the gateway did),
    a chunk that carries only usage (no choices) is taken and not relayed. The stream is
    complete once every choice index seen has had a ``finish_reason``.
    """

    __slots__ = ("_finished", "_keep", "_open", "_provider", "usage")

    def __init__(self, provider: str = "upstream", *, keep_usage_chunk: bool = True) -> None:
        self.usage: Usage | None = None
        self._provider = provider
        self._keep = keep_usage_chunk
        self._open: set[int] = set()
        """Choice indices seen without their finish_reason yet."""
        self._finished = False

    def feed(self, event: Event) -> list[bytes]:
        """Relay one event (``[DONE]`` is the gateway's to send)."""
        data = event[1]
        if data == b"[DONE]":
            return []
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            chunk = None
        if not isinstance(chunk, dict):
            raise not_json(self._provider, "sent a stream event that is not JSON")
        if "error" in chunk:
            raise GatewayError(
                502, TEMPORARILY_UNAVAILABLE, f"{self._provider}: {_error_text(chunk['error'])}"
            )
        choices = chunk.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if not isinstance(choice, dict):
                    continue
                index = choice.get("index", 0)
                if choice.get("finish_reason") is not None:
                    self._open.discard(index)
                    self._finished = True
                else:
                    self._open.add(index)
        found = chunk.get("usage")
        if isinstance(found, dict):
            self.usage = usage_of(found)
            if not self._keep and not choices:
                return []
        return [data]

    def finish(self) -> list[bytes]:
        """Nothing is held back; a stream without its last finish_reason is cut."""
        if not self._finished or self._open:
            raise truncated(self._provider)
        return []


def usage_of(found: Any) -> Usage | None:
    """OpenAI's ``usage`` object as :class:`Usage` (None when absent or malformed)."""
    if not isinstance(found, dict):
        return None
    try:
        return Usage(int(found.get("prompt_tokens") or 0), int(found.get("completion_tokens") or 0))
    except (TypeError, ValueError):
        return None


def not_json(provider: str, what: str) -> GatewayError:
    """A 200 with a body the client could not use: the upstream's fault."""
    return GatewayError(
        502,
        INTERNAL_ERROR,
        f"{provider} {what}; the gateway does not relay it (check the entity's baseUrl "
        "points at an OpenAI-compatible API)",
    )


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error.get("type") or "stream error")[:500]
    return str(error)[:500]
