"""Builders of OpenAI-format responses and stream chunks, shared by translating providers.

A translating provider speaks in events (text, reasoning, tool-call start, tool-call
arguments, finish, usage); :class:`ChunkWriter` turns them into ``chat.completion.chunk``
or ``text_completion`` payloads depending on the route the client called, so every
provider gets the completions API on top of its chat API for free.

The model's reasoning text, where a provider returns it (Anthropic thinking blocks,
Gemini thought summaries, Bedrock reasoning content, Cohere thinking), goes in
``reasoning_content`` beside ``content``: the field that OpenAI-compatible servers of
reasoning models (vLLM, DeepSeek) use, which the OpenAI SDKs keep as an extra field.
The completions API has no place for it, so there it is left out.
"""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass, field
from typing import Any

import orjson

from modelport.gatewayconfig import Task


@dataclass(slots=True)
class ToolCallOut:
    """A finished tool call in a non-streaming response."""

    id: str
    name: str
    arguments: str


@dataclass(slots=True)
class Usage:
    """Token counts as the provider reported them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        """OpenAI's ``usage`` object."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def completion_response(
    *,
    task: Task,
    response_id: str,
    created: int,
    model: str,
    text: str | None,
    tool_calls: list[ToolCallOut],
    finish_reason: str,
    usage: Usage,
    reasoning: str | None = None,
) -> dict[str, Any]:
    """A whole ``chat.completion`` (or ``text_completion`` for the completions task)."""
    if task is Task.COMPLETIONS:
        return {
            "id": response_id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [
                {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
            ],
            "usage": usage.as_dict(),
        }
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if reasoning:
        message["reasoning_content"] = reasoning
    if tool_calls:
        message["tool_calls"] = [
            {"id": t.id, "type": "function", "function": {"name": t.name, "arguments": t.arguments}}
            for t in tool_calls
        ]
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": usage.as_dict(),
    }


@dataclass(slots=True)
class ChunkWriter:
    """Serialises stream events into OpenAI chunk payloads (the bytes after ``data: ``)."""

    task: Task
    response_id: str
    created: int
    model: str
    include_usage: bool
    _started: bool = False
    _tool_index: dict[str, int] = field(default_factory=dict)

    def _chat(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return orjson.dumps(
            {
                "id": self.response_id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }
        )

    def _text_completion(self, text: str, finish_reason: str | None = None) -> bytes:
        return orjson.dumps(
            {
                "id": self.response_id,
                "object": "text_completion",
                "created": self.created,
                "model": self.model,
                "choices": [
                    {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
                ],
            }
        )

    def start(self) -> list[bytes]:
        """The opening chunk (the assistant role), once."""
        if self._started:
            return []
        self._started = True
        if self.task is Task.COMPLETIONS:
            return []
        return [self._chat({"role": "assistant", "content": ""})]

    def text(self, text: str) -> list[bytes]:
        """A piece of generated text."""
        out = self.start()
        if not text:
            return out
        if self.task is Task.COMPLETIONS:
            out.append(self._text_completion(text))
        else:
            out.append(self._chat({"content": text}))
        return out

    def reasoning(self, text: str) -> list[bytes]:
        """A piece of the model's reasoning (chat only)."""
        out = self.start()
        if text and self.task is not Task.COMPLETIONS:
            out.append(self._chat({"reasoning_content": text}))
        return out

    def tool_call_start(self, key: str, call_id: str, name: str) -> list[bytes]:
        """A tool call begins; ``key`` is the provider's block id, mapped to an index."""
        out = self.start()
        if self.task is Task.COMPLETIONS:
            return out
        index = self._tool_index.setdefault(key, len(self._tool_index))
        delta = {
            "tool_calls": [
                {
                    "index": index,
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }
            ]
        }
        out.append(self._chat(delta))
        return out

    def tool_call_arguments(self, key: str, arguments: str) -> list[bytes]:
        """More of a tool call's JSON arguments."""
        if self.task is Task.COMPLETIONS or not arguments or key not in self._tool_index:
            return []
        delta = {
            "tool_calls": [{"index": self._tool_index[key], "function": {"arguments": arguments}}]
        }
        return [self._chat(delta)]

    def finish(self, finish_reason: str) -> list[bytes]:
        """The last content chunk, carrying the finish reason."""
        out = self.start()
        if self.task is Task.COMPLETIONS:
            out.append(self._text_completion("", finish_reason))
        else:
            out.append(self._chat({}, finish_reason))
        return out

    def usage(self, usage: Usage) -> list[bytes]:
        """The usage chunk (empty choices), only when the client asked for it."""
        if not self.include_usage:
            return []
        kind = "text_completion" if self.task is Task.COMPLETIONS else "chat.completion.chunk"
        return [
            orjson.dumps(
                {
                    "id": self.response_id,
                    "object": kind,
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": usage.as_dict(),
                }
            )
        ]


def embeddings_response(
    *, model: str, vectors: list[list[float]], prompt_tokens: int, encoding_format: str | None
) -> dict[str, Any]:
    """An OpenAI ``list`` of embeddings; base64 is little-endian float32, as OpenAI sends it.

    The OpenAI SDKs ask for base64 by default and decode it themselves, so a translating
    provider must be able to produce it.
    """
    data: list[dict[str, Any]] = []
    for i, vector in enumerate(vectors):
        embedding: Any = vector
        if encoding_format == "base64":
            packed = struct.pack(f"<{len(vector)}f", *vector)
            embedding = base64.b64encode(packed).decode("ascii")
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
