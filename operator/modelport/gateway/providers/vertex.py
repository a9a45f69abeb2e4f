"""Google Cloud Vertex AI: Gemini ``generateContent`` / ``streamGenerateContent`` and
text-embedding ``predict``.

Auth: the entity's ``privateKey`` credential is a service-account JSON key. The provider
describes the OAuth 2.0 JWT-bearer exchange (an assertion signed with the key by
google-auth's signer, posted to the key's ``token_uri`` or the configured ``tokenUrl``);
the I/O layer performs it and caches the access token until shortly before it expires.

Streaming uses ``:streamGenerateContent?alt=sse``: every SSE event is a whole
``GenerateContentResponse`` chunk; the last one carries ``finishReason`` and the final
``usageMetadata``, and there is no end marker, so the finish chunk is sent when the
upstream body ends, and only if a ``finishReason`` came: a body that ends without one
was cut, and the client gets an error, not an invented ``stop``.

Images become ``inlineData`` (a ``data:`` URL) or ``fileData`` (an ``https://`` or
``gs://`` link, which Vertex reads itself; its MIME type is taken from the extension).
JSON output is ``responseMimeType: application/json`` plus, for a schema,
``responseJsonSchema`` (the JSON Schema as the client wrote it). ``reasoning_effort`` is
``thinkingConfig.thinkingBudget`` with ``includeThoughts``, and thought parts come back
as ``reasoning_content``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import orjson
from google.auth import crypt, jwt

from modelport.gateway.errors import INTERNAL_ERROR, GatewayError, invalid
from modelport.gateway.framing import Event
from modelport.gateway.media import Image
from modelport.gateway.openai_format import (
    ChunkWriter,
    ToolCallOut,
    Usage,
    completion_response,
    embeddings_response,
)
from modelport.gateway.protocol import ChatRequest
from modelport.gateway.providers.base import (
    Auth,
    Call,
    Provider,
    UpstreamRequest,
    json_body,
    parse_json_object,
    refuse,
    refuse_serial_tools,
    truncated,
    unsupported,
)
from modelport.gateway.providers.reasoning import thinking_budget
from modelport.gateway.providers.structured import json_output
from modelport.gatewayconfig import LLM_TASKS, EntityConfig, Task, VertexSettings

NAME = "google-cloud-vertex-ai"

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
DEFAULT_TOKEN_URL = "https://oauth2.googleapis.com/token"  # noqa: S105
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FILTERED = {"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"}
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/heic", "image/heif"})
"""The image MIME types Gemini documents."""


def _settings(entity: EntityConfig) -> VertexSettings:
    if entity.vertex is None:  # the config validator makes this unreachable
        raise GatewayError(500, INTERNAL_ERROR, f"entity {entity.name!r} has no vertex settings")
    return entity.vertex


class VertexProvider(Provider):
    """Gemini chat (completions through chat) and text embeddings."""

    name = NAME
    tasks = LLM_TASKS

    def base_url(self, entity: EntityConfig) -> str:
        """The regional API host unless overridden."""
        if entity.base_url:
            return entity.base_url
        region = _settings(entity).region
        host = (
            "aiplatform.googleapis.com"
            if region == "global"
            else f"{region}-aiplatform.googleapis.com"
        )
        return f"https://{host}"

    def token_request(self, entity: EntityConfig, auth: Auth) -> UpstreamRequest:
        """The JWT-bearer grant for the service-account key."""
        try:
            info = orjson.loads(auth.secret("privateKey"))
            signer = crypt.RSASigner.from_service_account_info(info)  # type: ignore[no-untyped-call]
            email = info["client_email"]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise GatewayError(
                500,
                INTERNAL_ERROR,
                f"entity {entity.name!r}: credentials.privateKey is not a service-account JSON "
                "key (with client_email and private_key); store the key file Google issued",
            ) from None
        url = _settings(entity).token_url or info.get("token_uri") or DEFAULT_TOKEN_URL
        now = int(time.time())
        claims = {"iss": email, "scope": SCOPE, "aud": url, "iat": now, "exp": now + 3600}
        assertion = jwt.encode(signer, claims).decode()  # type: ignore[no-untyped-call]
        form = urlencode({"grant_type": JWT_BEARER, "assertion": assertion})
        headers = {"content-type": "application/x-www-form-urlencoded"}
        return UpstreamRequest("POST", url, headers, form.encode())

    def build_request(self, call: Call, auth: Auth) -> UpstreamRequest:
        """``:generateContent``, ``:streamGenerateContent?alt=sse`` or ``:predict``."""
        settings = _settings(call.entity)
        model_path = (
            f"{self.base_url(call.entity)}/v1/projects/{settings.project_id}/locations/"
            f"{settings.region}/publishers/google/models/{call.entity.model_name}"
        )
        headers = {"content-type": "application/json", "authorization": f"Bearer {auth.token}"}
        if call.task is Task.EMBEDDINGS:
            request = call.embedding()
            parameters = (
                {"outputDimensionality": request.dimensions} if request.dimensions else None
            )
            body = json_body(
                {"instances": [{"content": t} for t in request.texts()], "parameters": parameters}
            )
            return UpstreamRequest("POST", f"{model_path}:predict", headers, body)
        body = generate_body(call.chat())
        if call.stream:
            url = f"{model_path}:streamGenerateContent?{urlencode({'alt': 'sse'})}"
            return UpstreamRequest("POST", url, {**headers, "accept": "text/event-stream"}, body)
        return UpstreamRequest("POST", f"{model_path}:generateContent", headers, body)

    def parse_response(self, call: Call, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        """A GenerateContentResponse or predict response in OpenAI's shape."""
        data = parse_json_object(body, self.name)
        if call.task is Task.EMBEDDINGS:
            predictions = data.get("predictions") or []
            vectors = [p["embeddings"]["values"] for p in predictions]
            tokens = sum(
                int(((p["embeddings"].get("statistics") or {}).get("token_count")) or 0)
                for p in predictions
            )
            return embeddings_response(
                model=call.entity.model_name,
                vectors=vectors,
                prompt_tokens=tokens,
                encoding_format=call.embedding().encoding_format,
            )
        candidate = (data.get("candidates") or [{}])[0]
        texts, thoughts, tools = _parts(candidate)
        return completion_response(
            task=call.task,
            response_id=call.response_id,
            created=call.created,
            model=call.entity.model_name,
            text="".join(texts) if texts or not tools else None,
            tool_calls=tools,
            finish_reason=_finish(candidate.get("finishReason"), bool(tools)),
            usage=_usage(data.get("usageMetadata") or {}),
            reasoning="".join(thoughts) or None,
        )

    def stream_translator(self, call: Call) -> VertexStream:
        """Translate ``alt=sse`` chunks."""
        return VertexStream(call.chunk_writer())


def generate_body(request: ChatRequest) -> bytes:
    """The generateContent body for an OpenAI chat request."""
    refuse(request, NAME, "logprobs", "top_logprobs", "logit_bias", "service_tier")
    refuse_serial_tools(request, NAME)
    if request.n not in (None, 1):
        # candidateCount would work upstream, but only the first candidate would come
        # back: refused rather than answered with fewer choices than asked for.
        raise unsupported(NAME, "n", "send one request per completion")
    system: list[dict[str, str]] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool_call_id -> function name: functionResponse needs the name
    for index, m in enumerate(request.messages):
        if m.role in ("system", "developer"):
            system.append({"text": m.text()})
            continue
        parts: list[dict[str, Any]] = []
        role = "model" if m.role == "assistant" else "user"
        if m.role == "tool":
            name = names.get(m.tool_call_id or "")
            if name is None:
                raise invalid(
                    "messages.tool_call_id",
                    "a tool message must answer a tool call of an earlier assistant message",
                )
            parts.append({"functionResponse": {"name": name, "response": {"content": m.text()}}})
        else:
            if m.role == "user":
                parts.extend(
                    image_part(p) if isinstance(p, Image) else {"text": p} for p in m.parts(index)
                )
            elif text := m.text():
                parts.append({"text": text})
            for c in m.tool_calls or []:
                names[c.id] = c.function.name
                try:
                    args = orjson.loads(c.function.arguments or "{}")
                except orjson.JSONDecodeError:
                    raise invalid(
                        "messages.tool_calls.function.arguments", "tool call arguments must be JSON"
                    ) from None
                parts.append({"functionCall": {"name": c.function.name, "args": args}})
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    config: dict[str, Any] = {
        "temperature": request.temperature,
        "topP": request.top_p,
        "topK": request.top_k,
        "maxOutputTokens": request.max_output_tokens(),
        "stopSequences": request.stop_list(),
        "seed": request.seed,
        "presencePenalty": request.presence_penalty,
        "frequencyPenalty": request.frequency_penalty,
    }
    output = json_output(request)
    if output is not None:
        config["responseMimeType"] = "application/json"
        config["responseJsonSchema"] = output.schema
    budget = thinking_budget(request)
    if budget is not None:
        config["thinkingConfig"] = (
            {"thinkingBudget": budget, "includeThoughts": True} if budget else {"thinkingBudget": 0}
        )
    body: dict[str, Any] = {
        "contents": contents,
        "systemInstruction": {"parts": system} if system else None,
        "generationConfig": {k: v for k, v in config.items() if v is not None} or None,
    }
    if request.tools:
        body["tools"] = [
            {
                "functionDeclarations": [
                    {
                        "name": t.function.name,
                        "description": t.function.description or "",
                        "parameters": t.function.parameters or {"type": "object", "properties": {}},
                    }
                    for t in request.tools
                ]
            }
        ]
        forced = request.forced_tool()
        mode = {"auto": "AUTO", "required": "ANY", "none": "NONE"}.get(str(request.tool_choice))
        if forced:
            body["toolConfig"] = {
                "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [forced]}
            }
        elif mode:
            body["toolConfig"] = {"functionCallingConfig": {"mode": mode}}
    return json_body(body)


def image_part(image: Image) -> dict[str, Any]:
    """``inlineData`` for a ``data:`` URL; ``fileData`` for a link Vertex reads itself."""
    if image.source == "data":
        mime = image.require_media_type(NAME, IMAGE_TYPES)
        return {"inlineData": {"mimeType": mime, "data": image.base64}}
    if image.source in ("https", "gs"):
        mime = image.require_media_type(NAME, IMAGE_TYPES)
        return {"fileData": {"mimeType": mime, "fileUri": image.url}}
    raise invalid(image.param, f"{NAME} takes images as data: URLs, https:// or gs:// links")


def _parts(candidate: dict[str, Any]) -> tuple[list[str], list[str], list[ToolCallOut]]:
    texts: list[str] = []
    thoughts: list[str] = []
    tools: list[ToolCallOut] = []
    for part in (candidate.get("content") or {}).get("parts") or []:
        if "text" in part:
            (thoughts if part.get("thought") else texts).append(part["text"])
        elif "functionCall" in part:
            fc = part["functionCall"]
            call_id = fc.get("id") or f"call_{len(tools)}"
            tools.append(
                ToolCallOut(call_id, fc["name"], orjson.dumps(fc.get("args") or {}).decode())
            )
    return texts, thoughts, tools


def _finish(reason: Any, has_tools: bool) -> str:
    if has_tools:
        return "tool_calls"
    if reason == "MAX_TOKENS":
        return "length"
    if reason in FILTERED:
        return "content_filter"
    return "stop"


def _usage(meta: dict[str, Any]) -> Usage:
    # Thinking tokens are billed as output; Gemini counts them apart from candidates.
    completion = int(meta.get("candidatesTokenCount") or 0) + int(
        meta.get("thoughtsTokenCount") or 0
    )
    return Usage(int(meta.get("promptTokenCount") or 0), completion)


class VertexStream:
    """``alt=sse`` GenerateContentResponse chunks to OpenAI chunks."""

    __slots__ = ("_reason", "_tools", "_writer", "usage")

    def __init__(self, writer: ChunkWriter) -> None:
        self._writer = writer
        self._reason: Any = None
        self._tools = 0
        self.usage: Usage | None = None

    def feed(self, event: Event) -> list[bytes]:
        """Translate one chunk."""
        payload = orjson.loads(event[1])
        if "error" in payload:
            error = payload["error"] or {}
            raise GatewayError(502, INTERNAL_ERROR, f"{NAME}: {error.get('message')}")
        out = self._writer.start()
        candidate = (payload.get("candidates") or [{}])[0]
        texts, thoughts, tools = _parts(candidate)
        for thought in thoughts:
            out.extend(self._writer.reasoning(thought))
        for text in texts:
            out.extend(self._writer.text(text))
        for tool in tools:
            key = str(self._tools)
            self._tools += 1
            call_id = tool.id if not tool.id.startswith("call_") else f"call_{key}"
            out.extend(self._writer.tool_call_start(key, call_id, tool.name))
            out.extend(self._writer.tool_call_arguments(key, tool.arguments))
        if candidate.get("finishReason"):
            self._reason = candidate["finishReason"]
        if payload.get("usageMetadata"):
            self.usage = _usage(payload["usageMetadata"])
        return out

    def finish(self) -> list[bytes]:
        """The stream ended: the finish chunk and usage, if a finishReason came; without
        one the body was cut, and inventing ``stop`` would pass half an answer as whole."""
        if self._reason is None:
            raise truncated(NAME)
        out = self._writer.finish(_finish(self._reason, self._tools > 0))
        out.extend(self._writer.usage(self.usage or Usage()))
        return out
