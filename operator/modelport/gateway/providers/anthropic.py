"""Anthropic's Messages API (``POST /v1/messages``).

Translation, both ways:

- system and developer messages are lifted out into the top-level ``system``;
- ``max_tokens`` is required by Anthropic and defaulted when the client sends none;
- assistant tool calls become ``tool_use`` blocks, ``tool`` messages become ``tool_result``
  blocks in a user turn (consecutive turns of one role are merged, as the API expects
  alternation);
- the SSE sequence ``message_start``, ``content_block_start``/``delta``/``stop``,
  ``message_delta``, ``message_stop`` becomes OpenAI chunks, with usage from
  ``message_start`` (input) and ``message_delta`` (output).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from modelport.gateway.errors import TEMPORARILY_UNAVAILABLE, GatewayError, invalid
from modelport.gateway.framing import Event
from modelport.gateway.openai_format import ChunkWriter, ToolCallOut, Usage, completion_response
from modelport.gateway.protocol import ChatRequest
from modelport.gateway.providers.base import (
    Auth,
    Call,
    Provider,
    UpstreamRequest,
    json_body,
    parse_json_object,
    truncated,
    unsupported,
)
from modelport.gatewayconfig import Task

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
"""Anthropic requires max_tokens; OpenAI clients usually omit it."""

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


class AnthropicProvider(Provider):
    """Chat (and completions through chat) on the Messages API."""

    name = "anthropic"
    tasks = frozenset({Task.CHAT, Task.COMPLETIONS})
    default_base_url = "https://api.anthropic.com"

    def build_request(self, call: Call, auth: Auth) -> UpstreamRequest:
        """``POST {base}/v1/messages`` with ``x-api-key`` and ``anthropic-version``."""
        body = messages_body(call.chat(), call.entity.model_name, stream=call.stream)
        headers = {
            "content-type": "application/json",
            "x-api-key": auth.secret("apiKey"),
            "anthropic-version": API_VERSION,
        }
        if call.stream:
            headers["accept"] = "text/event-stream"
        return UpstreamRequest("POST", f"{self.base_url(call.entity)}/v1/messages", headers, body)

    def parse_response(self, call: Call, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        """A Messages response as a chat completion."""
        data = parse_json_object(body, self.name)
        texts: list[str] = []
        tools: list[ToolCallOut] = []
        for block in data.get("content") or []:
            if block.get("type") == "text":
                texts.append(block.get("text", ""))
            elif block.get("type") == "tool_use":
                arguments = orjson.dumps(block.get("input") or {}).decode()
                tools.append(ToolCallOut(block["id"], block["name"], arguments))
        return completion_response(
            task=call.task,
            response_id=call.response_id,
            created=call.created,
            model=call.entity.model_name,
            text="".join(texts) if texts or not tools else None,
            tool_calls=tools,
            finish_reason=FINISH_REASONS.get(str(data.get("stop_reason")), "stop"),
            usage=_usage(data.get("usage") or {}),
        )

    def stream_translator(self, call: Call) -> AnthropicStream:
        """Translate Messages SSE events."""
        return AnthropicStream(call.chunk_writer())


def messages_body(request: ChatRequest, model: str, *, stream: bool) -> bytes:
    """The Messages API body for an OpenAI chat request."""
    for param in ("logprobs", "top_logprobs", "logit_bias", "presence_penalty", "seed"):
        if getattr(request, param) is not None:
            raise unsupported("anthropic", param)
    if request.frequency_penalty is not None:
        raise unsupported("anthropic", "frequency_penalty")
    if request.n not in (None, 1):
        raise unsupported("anthropic", "n", "send one request per completion")
    if request.response_format and request.response_format.get("type") != "text":
        raise unsupported("anthropic", "response_format", "describe the format in the prompt")
    if request.temperature is not None and request.temperature > 1:
        raise invalid("temperature", "anthropic takes temperature between 0 and 1")

    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role in ("system", "developer"):
            system.append(message.text())
            continue
        role, blocks = _blocks(message.role, message)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    body: dict[str, Any] = {
        "model": model,
        "messages": turns,
        "max_tokens": request.max_output_tokens() or DEFAULT_MAX_TOKENS,
        "system": "\n\n".join(system) if system else None,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "top_k": request.top_k,
        "stop_sequences": request.stop_list(),
        "stream": True if stream else None,
        "metadata": {"user_id": request.user} if request.user else None,
    }
    if request.tools:
        body["tools"] = [
            {
                "name": t.function.name,
                **({"description": t.function.description} if t.function.description else {}),
                "input_schema": t.function.parameters or {"type": "object", "properties": {}},
            }
            for t in request.tools
        ]
        choice = _tool_choice(request)
        if choice is not None:
            body["tool_choice"] = choice
    return json_body(body)


def _blocks(role: str, message: Any) -> tuple[str, list[dict[str, Any]]]:
    if role == "tool":
        if not message.tool_call_id:
            raise invalid("messages.tool_call_id", "a tool message needs tool_call_id")
        block = {
            "type": "tool_result",
            "tool_use_id": message.tool_call_id,
            "content": message.text(),
        }
        return "user", [block]
    blocks: list[dict[str, Any]] = []
    text = message.text()
    if text:
        blocks.append({"type": "text", "text": text})
    for call in message.tool_calls or []:
        try:
            arguments = orjson.loads(call.function.arguments or "{}")
        except orjson.JSONDecodeError:
            raise invalid(
                "messages.tool_calls.function.arguments", "tool call arguments must be JSON"
            ) from None
        blocks.append(
            {"type": "tool_use", "id": call.id, "name": call.function.name, "input": arguments}
        )
    return role, blocks


def _tool_choice(request: ChatRequest) -> dict[str, Any] | None:
    forced = request.forced_tool()
    choice: dict[str, Any] | None
    if forced:
        choice = {"type": "tool", "name": forced}
    elif request.tool_choice == "required":
        choice = {"type": "any"}
    elif request.tool_choice == "none":
        choice = {"type": "none"}
    elif request.tool_choice == "auto" or request.parallel_tool_calls is False:
        choice = {"type": "auto"}
    else:
        choice = None
    if choice is not None and request.parallel_tool_calls is False and choice["type"] != "none":
        choice["disable_parallel_tool_use"] = True
    return choice


def _usage(usage: dict[str, Any]) -> Usage:
    # Cached prompt tokens are prompt tokens too; Anthropic counts them apart.
    prompt = (
        int(usage.get("input_tokens") or 0)
        + int(usage.get("cache_creation_input_tokens") or 0)
        + int(usage.get("cache_read_input_tokens") or 0)
    )
    return Usage(prompt, int(usage.get("output_tokens") or 0))


class AnthropicStream:
    """Messages SSE events to OpenAI chunks."""

    __slots__ = ("_done", "_finish", "_input", "_writer", "usage")

    def __init__(self, writer: ChunkWriter) -> None:
        self._writer = writer
        self._input: dict[str, Any] = {}
        self._finish = "stop"
        self._done = False
        self.usage: Usage | None = None

    def feed(self, event: Event) -> list[bytes]:
        """Translate one SSE event."""
        name, data = event
        if name == "ping":
            return []
        payload = orjson.loads(data)
        kind = payload.get("type", name)
        w = self._writer
        if kind == "content_block_delta":
            delta = payload.get("delta") or {}
            if delta.get("type") == "text_delta":
                return w.text(delta.get("text", ""))
            if delta.get("type") == "input_json_delta":
                return w.tool_call_arguments(
                    str(payload.get("index")), delta.get("partial_json", "")
                )
            return []
        if kind == "message_start":
            self._input = (payload.get("message") or {}).get("usage") or {}
            return w.start()
        if kind == "content_block_start":
            block = payload.get("content_block") or {}
            if block.get("type") == "tool_use":
                return w.tool_call_start(str(payload.get("index")), block["id"], block["name"])
            if block.get("type") == "text" and block.get("text"):
                return w.text(block["text"])
            return []
        if kind == "message_delta":
            stop = (payload.get("delta") or {}).get("stop_reason")
            self._finish = FINISH_REASONS.get(str(stop), "stop")
            # message_delta's usage is cumulative; input counts may also be updated here.
            self.usage = _usage({**self._input, **(payload.get("usage") or {})})
            return []
        if kind == "message_stop":
            self._done = True
            out = w.finish(self._finish)
            out.extend(w.usage(self.usage or _usage(self._input)))
            return out
        if kind == "error":
            error = payload.get("error") or {}
            status = 503 if error.get("type") == "overloaded_error" else 502
            raise GatewayError(
                status,
                TEMPORARILY_UNAVAILABLE,
                f"anthropic: {error.get('message', 'stream error')}",
            )
        return []

    def finish(self) -> list[bytes]:
        """``message_stop`` already sent the finish chunk; without it the answer is cut."""
        if not self._done:
            raise truncated("anthropic")
        return []
