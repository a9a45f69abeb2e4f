"""Cohere API v2: ``POST /v2/chat`` (SSE when streaming) and ``POST /v2/embed``.

v2 chat messages are close to OpenAI's (roles system/user/assistant/tool, ``tool_calls``,
``tool_call_id``); the differences are parameter names (``p``, ``k``,
``stop_sequences``), the response shape (``message.content`` blocks, upper-case
``finish_reason``, ``usage.tokens``) and the stream's typed events (``content-delta``,
``tool-call-start``/``delta``, ``message-end`` carrying finish reason and usage).

Images go in a user message's content list as ``image_url`` blocks (``data:`` URLs and
links, which Cohere fetches); JSON output is ``response_format`` ``json_object`` with
an optional ``json_schema``; ``reasoning_effort`` is ``thinking.token_budget`` (``none``
disables thinking), and ``thinking`` content comes back as ``reasoning_content``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from modelport.gateway.errors import TEMPORARILY_UNAVAILABLE, GatewayError, invalid
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
from modelport.gatewayconfig import LLM_TASKS, Task

NAME = "cohere"

FINISH_REASONS = {
    "COMPLETE": "stop",
    "STOP_SEQUENCE": "stop",
    "MAX_TOKENS": "length",
    "TOOL_CALL": "tool_calls",
}
EMBED_INPUT_TYPE = "search_document"
"""v2 embed requires an input type; OpenAI's API has none, and documents are the usual case."""


class CohereProvider(Provider):
    """Chat, completions through chat, and embeddings."""

    name = NAME
    tasks = LLM_TASKS
    default_base_url = "https://api.cohere.com"

    def build_request(self, call: Call, auth: Auth) -> UpstreamRequest:
        """``/v2/chat`` or ``/v2/embed`` with a bearer key."""
        headers = {
            "content-type": "application/json",
            "accept": "text/event-stream" if call.stream else "application/json",
            "authorization": f"Bearer {auth.secret('apiKey')}",
        }
        base = self.base_url(call.entity)
        if call.task is Task.EMBEDDINGS:
            request = call.embedding()
            if request.dimensions is not None:
                raise unsupported(self.name, "dimensions")
            body = json_body(
                {
                    "model": call.entity.model_name,
                    "texts": request.texts(),
                    "input_type": EMBED_INPUT_TYPE,
                    "embedding_types": ["float"],
                }
            )
            return UpstreamRequest("POST", f"{base}/v2/embed", headers, body)
        body = chat_body(call.chat(), call.entity.model_name, stream=call.stream)
        return UpstreamRequest("POST", f"{base}/v2/chat", headers, body)

    def parse_response(self, call: Call, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        """A v2 chat or embed response in OpenAI's shape."""
        data = parse_json_object(body, self.name)
        if call.task is Task.EMBEDDINGS:
            vectors = (data.get("embeddings") or {}).get("float") or []
            billed = (data.get("meta") or {}).get("billed_units") or {}
            return embeddings_response(
                model=call.entity.model_name,
                vectors=vectors,
                prompt_tokens=int(billed.get("input_tokens") or 0),
                encoding_format=call.embedding().encoding_format,
            )
        message = data.get("message") or {}
        content = message.get("content") or []
        texts = [c.get("text", "") for c in content if c.get("type") == "text"]
        thoughts = [c.get("thinking", "") for c in content if c.get("type") == "thinking"]
        tools = [
            ToolCallOut(t["id"], t["function"]["name"], t["function"].get("arguments") or "{}")
            for t in message.get("tool_calls") or []
        ]
        return completion_response(
            task=call.task,
            response_id=call.response_id,
            created=call.created,
            model=call.entity.model_name,
            text="".join(texts) if texts or not tools else None,
            tool_calls=tools,
            finish_reason=FINISH_REASONS.get(str(data.get("finish_reason")), "stop"),
            usage=_usage(data.get("usage") or {}),
            reasoning="".join(thoughts) or None,
        )

    def stream_translator(self, call: Call) -> CohereStream:
        """Translate v2 chat stream events."""
        return CohereStream(call.chunk_writer())


def chat_body(request: ChatRequest, model: str, *, stream: bool) -> bytes:
    """The v2 chat body for an OpenAI chat request."""
    refuse(request, NAME, "logprobs", "top_logprobs", "logit_bias", "service_tier")
    refuse_serial_tools(request, NAME)
    if request.n not in (None, 1):
        raise unsupported(NAME, "n", "send one request per completion")
    messages: list[dict[str, Any]] = []
    for index, m in enumerate(request.messages):
        role = "system" if m.role == "developer" else m.role
        out: dict[str, Any] = {"role": role}
        if role == "user" and m.has_images():
            out["content"] = [
                _image(p) if isinstance(p, Image) else {"type": "text", "text": p}
                for p in m.parts(index)
            ]
            messages.append(out)
            continue
        text = m.text()
        if role == "tool":
            out["tool_call_id"] = m.tool_call_id
            out["content"] = text
        elif role == "assistant" and m.tool_calls:
            out["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.function.name, "arguments": c.function.arguments},
                }
                for c in m.tool_calls
            ]
            if text:
                out["tool_plan"] = text
        else:
            out["content"] = text
        messages.append(out)
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "stream": True if stream else None,
        "max_tokens": request.max_output_tokens(),
        "temperature": request.temperature,
        "p": request.top_p,
        "k": request.top_k,
        "stop_sequences": request.stop_list(),
        "seed": request.seed,
        "frequency_penalty": request.frequency_penalty,
        "presence_penalty": request.presence_penalty,
    }
    output = json_output(request)
    if output is not None:
        body["response_format"] = {"type": "json_object"}
        if output.schema is not None:
            body["response_format"]["json_schema"] = output.schema
    budget = thinking_budget(request)
    if budget is not None:
        body["thinking"] = (
            {"type": "enabled", "token_budget": budget} if budget else {"type": "disabled"}
        )
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.function.name,
                    "description": t.function.description or "",
                    "parameters": t.function.parameters or {"type": "object", "properties": {}},
                },
            }
            for t in request.tools
        ]
        if request.forced_tool() is not None:
            raise unsupported(NAME, "tool_choice", "use 'required', 'auto' or 'none'")
        if request.tool_choice in ("required", "none"):
            body["tool_choice"] = str(request.tool_choice).upper()
    return json_body(body)


def _image(image: Image) -> dict[str, Any]:
    # Cohere reads data: URLs and fetches links itself, in OpenAI's own block shape.
    if image.source not in ("data", "https", "http"):
        raise invalid(image.param, f"{NAME} takes images as data: URLs or https:// links")
    return {"type": "image_url", "image_url": {"url": image.url}}


def _usage(usage: dict[str, Any]) -> Usage:
    # `tokens` are the model's own counts; `billed_units` may exclude prompt templates.
    counts = usage.get("tokens") or usage.get("billed_units") or {}
    return Usage(int(counts.get("input_tokens") or 0), int(counts.get("output_tokens") or 0))


class CohereStream:
    """v2 chat stream events to OpenAI chunks."""

    __slots__ = ("_done", "_writer", "usage")

    def __init__(self, writer: ChunkWriter) -> None:
        self._writer = writer
        self._done = False
        self.usage: Usage | None = None

    def feed(self, event: Event) -> list[bytes]:
        """Translate one event."""
        payload = orjson.loads(event[1])
        kind = payload.get("type") or event[0]
        w = self._writer
        message = (payload.get("delta") or {}).get("message") or {}
        if kind == "content-delta":
            content = message.get("content") or {}
            if content.get("thinking"):
                return w.reasoning(content["thinking"])
            return w.text(content.get("text") or "")
        if kind == "tool-call-start":
            call = message.get("tool_calls") or {}
            fn = call.get("function") or {}
            key = str(payload.get("index"))
            out = w.tool_call_start(key, call.get("id", ""), fn.get("name", ""))
            out.extend(w.tool_call_arguments(key, fn.get("arguments") or ""))
            return out
        if kind == "tool-call-delta":
            fn = (message.get("tool_calls") or {}).get("function") or {}
            return w.tool_call_arguments(str(payload.get("index")), fn.get("arguments") or "")
        if kind == "message-start":
            return w.start()
        if kind == "message-end":
            delta = payload.get("delta") or {}
            reason = str(delta.get("finish_reason"))
            if reason == "ERROR":
                raise GatewayError(
                    502, TEMPORARILY_UNAVAILABLE, "cohere ended the stream with ERROR"
                )
            self.usage = _usage(delta.get("usage") or {})
            self._done = True
            out = w.finish(FINISH_REASONS.get(reason, "stop"))
            out.extend(w.usage(self.usage))
            return out
        return []  # content-start/-end, tool-plan-delta, tool-call-end, citations

    def finish(self) -> list[bytes]:
        """``message-end`` already sent the finish chunk; without it the answer is cut."""
        if not self._done:
            raise truncated(NAME)
        return []
