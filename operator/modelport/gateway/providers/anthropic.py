"""Anthropic's Messages API (``POST /v1/messages``).

Translation, both ways:

- system and developer messages are lifted out into the top-level ``system``;
- ``max_tokens`` is required by Anthropic and defaulted when the client sends none;
- assistant tool calls become ``tool_use`` blocks, ``tool`` messages become ``tool_result``
  blocks in a user turn (consecutive turns of one role are merged, as the API expects
  alternation);
- user images become ``image`` blocks: a ``data:`` URL as a ``base64`` source, a link as
  a ``url`` source (Anthropic fetches it);
- ``response_format`` JSON output becomes a forced tool (:mod:`.structured`) whose input
  is returned as the message content;
- ``reasoning_effort`` becomes ``thinking.budget_tokens`` (:mod:`.reasoning`), and
  ``thinking`` blocks come back as ``reasoning_content``;
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
from modelport.gateway.media import FORMATS, Image
from modelport.gateway.openai_format import ChunkWriter, ToolCallOut, Usage, completion_response
from modelport.gateway.protocol import ChatRequest, Message
from modelport.gateway.providers.base import (
    Auth,
    Call,
    Provider,
    UpstreamRequest,
    json_body,
    parse_json_object,
    refuse,
    truncated,
    unsupported,
)
from modelport.gateway.providers.reasoning import (
    check_claude_thinking,
    fit_budget,
    thinking_budget,
)
from modelport.gateway.providers.structured import forced_tool
from modelport.gatewayconfig import Task

NAME = "anthropic"

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

    name = NAME
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
        json_tool = _json_tool_name(call)
        texts: list[str] = []
        thoughts: list[str] = []
        tools: list[ToolCallOut] = []
        for block in data.get("content") or []:
            kind = block.get("type")
            if kind == "text":
                texts.append(block.get("text", ""))
            elif kind == "thinking":
                thoughts.append(block.get("thinking", ""))
            elif kind == "tool_use" and block.get("name") == json_tool:
                texts.append(orjson.dumps(block.get("input") or {}).decode())
            elif kind == "tool_use":
                arguments = orjson.dumps(block.get("input") or {}).decode()
                tools.append(ToolCallOut(block["id"], block["name"], arguments))
        finish = FINISH_REASONS.get(str(data.get("stop_reason")), "stop")
        return completion_response(
            task=call.task,
            response_id=call.response_id,
            created=call.created,
            model=call.entity.model_name,
            text="".join(texts) if texts or not tools else None,
            tool_calls=tools,
            finish_reason="stop" if json_tool and not tools and finish == "tool_calls" else finish,
            usage=_usage(data.get("usage") or {}),
            reasoning="".join(thoughts) or None,
        )

    def stream_translator(self, call: Call) -> AnthropicStream:
        """Translate Messages SSE events."""
        return AnthropicStream(call.chunk_writer(), _json_tool_name(call))


def _json_tool_name(call: Call) -> str | None:
    # The forced tool's name, when JSON output was asked for (the request was checked
    # when it was built, so this cannot fail here).
    if not isinstance(call.request, ChatRequest):
        return None
    tool = forced_tool(call.request, NAME)
    return tool.name if tool else None


def messages_body(request: ChatRequest, model: str, *, stream: bool) -> bytes:
    """The Messages API body for an OpenAI chat request."""
    refuse(request, NAME, "logprobs", "top_logprobs", "logit_bias", "presence_penalty", "seed")
    refuse(request, NAME, "frequency_penalty", "service_tier")
    if request.n not in (None, 1):
        raise unsupported(NAME, "n", "send one request per completion")
    if request.temperature is not None and request.temperature > 1:
        raise invalid("temperature", "anthropic takes temperature between 0 and 1")
    json_tool = forced_tool(request, NAME)

    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for index, message in enumerate(request.messages):
        if message.role in ("system", "developer"):
            system.append(message.text())
            continue
        role, blocks = _blocks(message, index)
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
    budget = thinking_budget(request)
    if budget:
        check_claude_thinking(request, NAME, json_tool is not None)
        budget, body["max_tokens"] = fit_budget(
            budget, request.max_output_tokens(), DEFAULT_MAX_TOKENS
        )
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    if json_tool is not None:
        body["tools"] = [
            {
                "name": json_tool.name,
                "description": json_tool.description,
                "input_schema": json_tool.schema,
            }
        ]
        body["tool_choice"] = {"type": "tool", "name": json_tool.name}
    elif request.tools:
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


def _blocks(message: Message, index: int) -> tuple[str, list[dict[str, Any]]]:
    if message.role == "tool":
        if not message.tool_call_id:
            raise invalid("messages.tool_call_id", "a tool message needs tool_call_id")
        block = {
            "type": "tool_result",
            "tool_use_id": message.tool_call_id,
            "content": message.text(),
        }
        return "user", [block]
    blocks: list[dict[str, Any]] = []
    if message.role == "user":
        for part in message.parts(index):
            if isinstance(part, Image):
                blocks.append({"type": "image", "source": image_source(part)})
            else:
                blocks.append({"type": "text", "text": part})
    else:
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
    return message.role, blocks


def image_source(image: Image) -> dict[str, Any]:
    """An image block's ``source``: inline base64, or a link Anthropic fetches itself."""
    if image.source == "data":
        media_type = image.require_media_type(NAME, set(FORMATS))
        return {"type": "base64", "media_type": media_type, "data": image.base64}
    if image.source in ("https", "http"):
        return {"type": "url", "url": image.url}
    raise invalid(
        image.param, f"{NAME} takes images as data: URLs or https:// links, not {image.source}://"
    )


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
    """Messages SSE events to OpenAI chunks.

    A forced JSON tool's block (``json_tool``) is streamed as text; thinking deltas as
    reasoning; signatures and redacted thinking are not the client's to see.
    """

    __slots__ = ("_done", "_finish", "_input", "_json_block", "_json_tool", "_writer", "usage")

    def __init__(self, writer: ChunkWriter, json_tool: str | None = None) -> None:
        self._writer = writer
        self._input: dict[str, Any] = {}
        self._finish = "stop"
        self._done = False
        self._json_tool = json_tool
        self._json_block: object = None
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
            delta_kind = delta.get("type")
            if delta_kind == "text_delta":
                return w.text(delta.get("text", ""))
            if delta_kind == "thinking_delta":
                return w.reasoning(delta.get("thinking", ""))
            if delta_kind == "input_json_delta":
                if payload.get("index") == self._json_block:
                    return w.text(delta.get("partial_json", ""))
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
                if self._json_tool is not None and block.get("name") == self._json_tool:
                    self._json_block = payload.get("index")
                    return w.start()
                return w.tool_call_start(str(payload.get("index")), block["id"], block["name"])
            if block.get("type") == "text" and block.get("text"):
                return w.text(block["text"])
            if block.get("type") == "thinking" and block.get("thinking"):
                return w.reasoning(block["thinking"])
            return []
        if kind == "message_delta":
            stop = (payload.get("delta") or {}).get("stop_reason")
            self._finish = FINISH_REASONS.get(str(stop), "stop")
            if self._json_block is not None and self._finish == "tool_calls":
                self._finish = "stop"  # the forced tool carried the answer
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
            raise truncated(NAME)
        return []
