"""The interface every provider module implements: pure translation, no I/O.

The I/O layer (:mod:`modelport.gateway.upstream`) asks a provider to

1. describe a token exchange, when its auth needs one (:meth:`Provider.token_request`,
   :meth:`Provider.parse_token`) — the I/O layer performs and caches it; or name the
   AWS region whose ambient credentials sign the request
   (:meth:`Provider.aws_identity_region`) — the I/O layer resolves them;
2. name the image links whose bytes it must send (:meth:`Provider.remote_images`) — the
   I/O layer fetches them, within limits, into :attr:`Call.fetched`;
3. translate a validated OpenAI request into an :class:`UpstreamRequest`;
4. translate the upstream's answer back: a whole body (:meth:`Provider.parse_response`),
   a stream of decoded events (:meth:`Provider.stream_translator`), or an error body
   (:meth:`Provider.error_message`).

Everything a provider needs arrives in arguments, so each step is testable on its own.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

import orjson

from modelport.gateway.context import new_request_id
from modelport.gateway.errors import BAD_REQUEST, GatewayError
from modelport.gateway.framing import Event
from modelport.gateway.invocations import InvocationRequest
from modelport.gateway.media import Fetched, Image
from modelport.gateway.openai_format import ChunkWriter, Usage
from modelport.gateway.protocol import ChatRequest, CompletionRequest, EmbeddingRequest
from modelport.gatewayconfig import EntityConfig, Task


@dataclass(slots=True)
class Call:
    """One client request, validated, bound to the entity that will answer it."""

    entity: EntityConfig
    task: Task
    raw: dict[str, Any]
    """The validated body as the client sent it (what OpenAI-compatible upstreams get)."""
    request: ChatRequest | CompletionRequest | EmbeddingRequest | InvocationRequest
    stream: bool = False
    include_usage: bool = False
    # Unique, not secret: the request-id scheme (a tenth of a uuid4's cost per request).
    response_id: str = field(default_factory=lambda: f"chatcmpl-{new_request_id()}")
    created: int = field(default_factory=lambda: int(time.time()))
    fetched: dict[str, Fetched] = field(default_factory=dict)
    """Image links fetched by the I/O layer for a provider that needs bytes, by URL."""
    traceparent: str | None = None
    """A W3C ``traceparent`` for the upstream request (the tracing stage sets it for
    in-cluster entities when tracing is configured); None: none is sent."""

    def chat(self) -> ChatRequest:
        """The request as a chat, for providers whose completions go through chat."""
        if isinstance(self.request, ChatRequest):
            return self.request
        if isinstance(self.request, CompletionRequest):
            return self.request.as_chat()
        raise GatewayError(400, BAD_REQUEST, "an embeddings request has no chat form")

    def chunk_writer(self) -> ChunkWriter:
        """The writer of this call's OpenAI stream chunks (its id, model and usage choice)."""
        return ChunkWriter(
            self.task, self.response_id, self.created, self.entity.model_name, self.include_usage
        )

    def embedding(self) -> EmbeddingRequest:
        """The request as an embeddings request."""
        if not isinstance(self.request, EmbeddingRequest):
            raise GatewayError(400, BAD_REQUEST, "not an embeddings request")
        return self.request


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """An HTTP request to a provider, ready to send."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class Relayed:
    """A body relayed as the upstream sent it (OpenAI-compatible), with its usage."""

    body: bytes
    usage: Usage | None


@dataclass(frozen=True, slots=True)
class Auth:
    """What an entity authenticates with: its credential values and any exchanged token."""

    secrets: dict[str, str]
    token: str | None = None

    def secret(self, name: str) -> str:
        """A credential by its config field name (``apiKey``, ``privateKey``, ...)."""
        return self.secrets[name]


class StreamTranslator(Protocol):
    """Turns decoded upstream events into OpenAI chunk payloads (bytes after ``data: ``).

    ``usage`` holds the provider's token counts once the stream has reported them (for
    metrics); it stays None for an upstream that did not report any.
    """

    usage: Usage | None

    def feed(self, event: Event) -> list[bytes]:
        """Translate one event; may return nothing or several chunks."""
        ...

    def finish(self) -> list[bytes]:
        """The upstream stream ended; return the remaining chunks (finish, usage)."""
        ...


class Provider(ABC):
    """A provider adapter. Subclasses are stateless singletons registered by name."""

    name: ClassVar[str]
    tasks: ClassVar[frozenset[Task]]
    """The tasks this provider can serve."""
    framing: ClassVar[Literal["sse", "eventstream"]] = "sse"
    default_base_url: ClassVar[str | None] = None

    def base_url(self, entity: EntityConfig) -> str:
        """The entity's base URL override, else the provider's public API."""
        url = entity.base_url or self.default_base_url
        if url is None:
            raise GatewayError(400, BAD_REQUEST, f"entity {entity.name!r} has no baseUrl")
        return url

    def token_request(self, entity: EntityConfig, auth: Auth) -> UpstreamRequest | None:
        """The token exchange this entity's auth needs, or None when it needs none."""
        return None

    def aws_identity_region(self, entity: EntityConfig) -> str | None:
        """The region whose ambient AWS credentials (the pod's identity) sign this
        entity's requests, or None when it brings its own credentials."""
        return None

    def remote_images(self, call: Call) -> list[Image]:
        """Image links whose bytes this provider must send itself (none: providers that
        take links fetch them on their side)."""
        return []

    def parse_token(self, body: bytes) -> tuple[str, float]:
        """An OAuth token response: ``(access_token, expires_in seconds)``."""
        data = orjson.loads(body)
        return str(data["access_token"]), float(data.get("expires_in", 3600))

    @abstractmethod
    def build_request(self, call: Call, auth: Auth) -> UpstreamRequest:
        """Translate the client's request into the provider's."""

    @abstractmethod
    def parse_response(
        self, call: Call, body: bytes, headers: Mapping[str, str]
    ) -> dict[str, Any] | Relayed:
        """Translate a successful body; a :class:`Relayed` one goes to the client as it
        is (OpenAI-compatible)."""

    @abstractmethod
    def stream_translator(self, call: Call) -> StreamTranslator:
        """A fresh translator for one streamed response."""

    def error_message(self, status: int, body: bytes) -> str:
        """The human-readable message in an error body; the I/O layer redacts secrets."""
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return body[:300].decode("utf-8", "replace") or f"HTTP {status}"
        return _find_message(data) or body[:300].decode("utf-8", "replace")


def _find_message(data: Any) -> str | None:
    # Providers nest it differently: {"error": {"message"}}, {"message"}, {"error": "..."}.
    if isinstance(data, dict):
        for key in ("message", "Message", "detail", "error_message"):
            if isinstance(data.get(key), str):
                return str(data[key])
        err = data.get("error")
        if isinstance(err, str):
            return err
        return _find_message(err)
    return None


def truncated(provider: str) -> GatewayError:
    """The upstream closed a stream before its end event: the answer is incomplete, and
    the client must not mistake it for a whole one."""
    return GatewayError(
        502,
        "TEMPORARILY_UNAVAILABLE",
        f"{provider} ended the stream before finishing the answer (no final event); "
        "the answer is incomplete: retry the request",
    )


def refuse(request: Any, provider: str, *params: str) -> None:
    """A 400 for the first of ``params`` that the client set and ``provider`` has no
    documented equivalent for: sending it on, or dropping it, would change the answer
    without saying so."""
    for param in params:
        if getattr(request, param) is not None:
            raise unsupported(provider, param)


def refuse_serial_tools(request: ChatRequest, provider: str) -> None:
    """``parallel_tool_calls: false`` where the provider has no way to ask for it."""
    if request.parallel_tool_calls is False:
        raise unsupported(
            provider,
            "parallel_tool_calls",
            "this provider cannot be told to call one tool at a time; leave it unset",
        )


def json_body(data: dict[str, Any]) -> bytes:
    """Serialise a request body, dropping keys whose value is None."""
    return orjson.dumps({k: v for k, v in data.items() if v is not None})


def unsupported(provider: str, param: str, hint: str = "remove it") -> GatewayError:
    """A 400 for a parameter this provider cannot honour."""
    return GatewayError(
        400,
        "INVALID_PARAMETER_VALUE",
        f"'{param}' is not supported by provider {provider}; {hint}",
        param=param,
    )


def parse_json_object(body: bytes, provider: str) -> dict[str, Any]:
    """Parse a provider's JSON body; anything else is the provider's fault (502)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise GatewayError(502, "INTERNAL_ERROR", f"{provider} answered with a non-JSON body")
    return data
