"""Where the text is in OpenAI-format requests, answers and stream chunks (pure).

Guardrails read and rewrite only natural-language text: message contents (strings and
``text`` parts), completion prompts, embedding inputs given as strings; in answers,
``message.content`` / ``text`` of each choice, and in stream chunks ``delta.content`` /
``text``. Tool-call arguments, images and token-id inputs are not inspected (the docs say
so).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from modelport.gatewayconfig import Task

Rewrite = Callable[[str], str]


def request_texts(task: Task, raw: dict[str, Any]) -> list[str]:
    """Every text of a request, in order."""
    out: list[str] = []

    def keep(text: str) -> str:
        out.append(text)
        return text

    _walk_request(task, raw, keep)  # stores each text back unchanged
    return out


def rewrite_request(task: Task, raw: dict[str, Any], rewrite: Rewrite) -> dict[str, Any] | None:
    """A copy of ``raw`` with each text replaced by ``rewrite(text)``; None when no text
    changed (the request goes on untouched)."""
    changed = False

    def apply(text: str) -> str:
        nonlocal changed
        new = rewrite(text)
        changed = changed or new != text
        return new

    copy = _copy_texts(task, raw)
    _walk_request(task, copy, apply)
    return copy if changed else None


def last_user_text(task: Task, raw: dict[str, Any]) -> str:
    """What the caller asks now: the last user message of a chat, else every text."""
    if task is Task.CHAT:
        for message in reversed(raw.get("messages") or []):
            if isinstance(message, dict) and message.get("role") == "user":
                return "\n".join(_content_texts(message.get("content")))
        return ""
    return "\n".join(request_texts(task, raw))


def conversation(task: Task, raw: dict[str, Any]) -> list[dict[str, str]]:
    """The request as a user/assistant conversation (what a guard model judges)."""
    if task is not Task.CHAT:
        return [{"role": "user", "content": "\n".join(request_texts(task, raw))}]
    turns: list[dict[str, str]] = []
    for message in raw.get("messages") or []:
        if not isinstance(message, dict):
            continue
        role = "assistant" if message.get("role") == "assistant" else "user"
        text = "\n".join(_content_texts(message.get("content")))
        if text:
            turns.append({"role": role, "content": text})
    return turns


def answer_texts(answer: dict[str, Any]) -> list[str]:
    """The texts of a whole answer's choices."""
    out: list[str] = []
    for choice in answer.get("choices") or []:
        text = _choice_text(choice)
        if text:
            out.append(text)
    return out


def rewrite_answer(answer: dict[str, Any], rewrite: Rewrite) -> bool:
    """Rewrite each choice's text in place; whether anything changed."""
    changed = False
    for choice in answer.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            new = rewrite(message["content"])
            changed = changed or new != message["content"]
            message["content"] = new
        elif isinstance(choice.get("text"), str):
            new = rewrite(choice["text"])
            changed = changed or new != choice["text"]
            choice["text"] = new
    return changed


def chunk_text(choice: dict[str, Any]) -> str | None:
    """A stream chunk choice's text (``delta.content`` or ``text``), None if it has none."""
    return _text_of(choice, "delta")


def set_chunk_text(choice: dict[str, Any], text: str) -> None:
    """Put ``text`` where :func:`chunk_text` reads it (a chat delta gains ``content``)."""
    delta = choice.get("delta")
    if isinstance(delta, dict):
        delta["content"] = text
    else:
        choice["text"] = text


def _choice_text(choice: Any) -> str | None:
    return _text_of(choice, "message") if isinstance(choice, dict) else None


def _text_of(choice: dict[str, Any], holder: str) -> str | None:
    """``choice[holder].content`` (a chat message or delta), else ``choice.text``
    (completions); None when there is no text."""
    inner = choice.get(holder)
    text = inner.get("content") if isinstance(inner, dict) else choice.get("text")
    return text if isinstance(text, str) else None


def _content_texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        ]
    return []


def _walk_request(task: Task, raw: dict[str, Any], visit: Rewrite) -> None:
    """Call ``visit`` on each text of ``raw``, storing what it returns in its place."""
    if task is Task.CHAT:
        for message in raw.get("messages") or []:
            if not isinstance(message, dict):
                continue
            content = message.get("content")
            if isinstance(content, str):
                message["content"] = visit(content)
            elif isinstance(content, list):
                for part in content:
                    if (
                        isinstance(part, dict)
                        and part.get("type") == "text"
                        and isinstance(part.get("text"), str)
                    ):
                        part["text"] = visit(part["text"])
        return
    key = "prompt" if task is Task.COMPLETIONS else "input"
    value = raw.get(key)
    if isinstance(value, str):
        raw[key] = visit(value)
    elif isinstance(value, list):
        raw[key] = [visit(v) if isinstance(v, str) else v for v in value]


def _copy_texts(task: Task, raw: dict[str, Any]) -> dict[str, Any]:
    """A copy deep enough that rewriting its texts leaves ``raw`` as it was."""
    copy = dict(raw)
    if task is Task.CHAT and isinstance(raw.get("messages"), list):
        messages = []
        for message in raw["messages"]:
            if isinstance(message, dict):
                message = dict(message)
                if isinstance(message.get("content"), list):
                    message["content"] = [
                        dict(p) if isinstance(p, dict) else p for p in message["content"]
                    ]
            messages.append(message)
        copy["messages"] = messages
    return copy
