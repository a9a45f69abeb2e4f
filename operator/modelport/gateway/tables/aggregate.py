"""The response a stream amounts to. Pure.

An inference table stores one response per request. For a stream that is what the
OpenAI SDKs build from the chunks the client got: one ``chat.completion`` (or
``text_completion``) whose choices hold the concatenated content, text and tool-call
arguments, the last finish reason, the logprobs in order, and the usage chunk's counts.
:class:`StreamAggregate` builds exactly that from the chunk payloads as they were sent,
one parsed chunk at a time, keeping only lists of string pieces.
"""

from __future__ import annotations

from typing import Any

OBJECT_OF_CHUNK = {"chat.completion.chunk": "chat.completion"}
"""A chunk's ``object`` → the whole response's; completions use ``text_completion`` for
both."""


class _Choice:
    """One choice's pieces, in arrival order."""

    __slots__ = ("content", "finish_reason", "logprobs", "role", "text", "tool_calls")

    def __init__(self) -> None:
        self.role: str | None = None
        self.content: list[str] | None = None
        self.text: list[str] | None = None
        self.tool_calls: dict[int, dict[str, Any]] | None = None
        self.finish_reason: str | None = None
        self.logprobs: dict[str, list[Any]] | None = None


class StreamAggregate:
    """The whole response of one stream, built chunk by chunk (see the module)."""

    __slots__ = ("_choices", "_head", "usage")

    def __init__(self) -> None:
        self._head: dict[str, Any] | None = None
        self._choices: dict[int, _Choice] = {}
        self.usage: Any = None

    def add(self, chunk: Any) -> None:
        """Fold one parsed chunk in; a chunk of an unexpected shape is skipped."""
        if not isinstance(chunk, dict):
            return
        if self._head is None:
            self._head = {
                k: chunk[k]
                for k in ("id", "object", "created", "model", "system_fingerprint")
                if k in chunk
            }
        if chunk.get("usage") is not None:
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if isinstance(choice, dict):
                self._fold(choice)

    def result(self) -> dict[str, Any]:
        """The response: ``chat.completion`` or ``text_completion`` with every choice."""
        head = dict(self._head or {})
        head["object"] = OBJECT_OF_CHUNK.get(head.get("object", ""), head.get("object"))
        text_completion = head["object"] == "text_completion"
        choices = []
        for index in sorted(self._choices):
            c = self._choices[index]
            out: dict[str, Any] = {"index": index}
            if text_completion or c.text is not None:
                out["text"] = "".join(c.text or ())
            else:
                message: dict[str, Any] = {
                    "role": c.role or "assistant",
                    "content": "".join(c.content) if c.content is not None else None,
                }
                if c.tool_calls:
                    message["tool_calls"] = [
                        _tool_call(c.tool_calls[i]) for i in sorted(c.tool_calls)
                    ]
                out["message"] = message
            out["logprobs"] = c.logprobs
            out["finish_reason"] = c.finish_reason
            choices.append(out)
        head["choices"] = choices
        if self.usage is not None:
            head["usage"] = self.usage
        return head

    def _fold(self, choice: dict[str, Any]) -> None:
        index = choice.get("index", 0)
        if not isinstance(index, int):
            return
        c = self._choices.get(index)
        if c is None:
            c = self._choices[index] = _Choice()
        if choice.get("finish_reason") is not None:
            c.finish_reason = choice["finish_reason"]
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict):
            merged = c.logprobs if c.logprobs is not None else {}
            for key, value in logprobs.items():
                if isinstance(value, list):
                    merged.setdefault(key, []).extend(value)
            c.logprobs = merged
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            text = choice.get("text")
            if isinstance(text, str):
                (c.text if c.text is not None else _set_text(c)).append(text)
            return
        if isinstance(delta.get("role"), str):
            c.role = delta["role"]
        content = delta.get("content")
        if isinstance(content, str):
            (c.content if c.content is not None else _set_content(c)).append(content)
        for call in delta.get("tool_calls") or ():
            if isinstance(call, dict):
                _fold_tool_call(c, call)


def _set_text(c: _Choice) -> list[str]:
    c.text = []
    return c.text


def _set_content(c: _Choice) -> list[str]:
    c.content = []
    return c.content


def _fold_tool_call(c: _Choice, call: dict[str, Any]) -> None:
    # A tool call arrives as its id, type and name first, then argument fragments, all
    # under one `index`.
    calls = c.tool_calls if c.tool_calls is not None else {}
    c.tool_calls = calls
    index = call.get("index", len(calls))
    slot = calls.get(index)
    if slot is None:
        slot = calls[index] = {"id": None, "type": "function", "name": None, "arguments": []}
    for key in ("id", "type"):
        if call.get(key) is not None:
            slot[key] = call[key]
    function = call.get("function") or {}
    if isinstance(function, dict):
        if function.get("name") is not None:
            slot["name"] = function["name"]
        if isinstance(function.get("arguments"), str):
            slot["arguments"].append(function["arguments"])


def _tool_call(slot: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": slot["id"],
        "type": slot["type"],
        "function": {"name": slot["name"], "arguments": "".join(slot["arguments"])},
    }
