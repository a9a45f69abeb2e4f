"""Token counts for every finished request: the provider's, or an estimate marked as such.

Every provider module reports the provider's own counts when the upstream gives them
(the pass-through providers ask for them on streams: see
:meth:`~modelport.gateway.providers.openai_compatible.OpenAICompatible.body`). When an
upstream gives none, the gateway estimates, and says so (``TokenUsage.estimated``):

- prompt: the characters of the request's text (messages, prompt or embedding input)
  divided by :data:`CHARS_PER_TOKEN` (about right for English with the common BPE
  vocabularies), at least 1;
- completion of a whole body: the characters of its text and tool-call arguments,
  likewise;
- completion of a stream: one token per content chunk relayed, which is how the
  OpenAI-compatible servers stream (one decoded token per chunk), and costs nothing
  per chunk beyond a counter.

A tokenizer would be closer but is per model, downloads its vocabulary, and costs
milliseconds on the hot path; an estimate that says it is one is more honest.
"""

from __future__ import annotations

from typing import Any

import orjson

from modelport.gateway.context import TokenUsage
from modelport.gateway.invocations import InvocationRequest
from modelport.gateway.protocol import ChatRequest, CompletionRequest, EmbeddingRequest

CHARS_PER_TOKEN = 4


def prompt_characters(
    request: ChatRequest | CompletionRequest | EmbeddingRequest | InvocationRequest,
) -> int:
    """Characters of a validated request's text: message contents (text parts), the
    prompt, or the embedding input (token ids count as :data:`CHARS_PER_TOKEN` each); 0
    for a custom model's dataframe or tensor, which is not text."""
    chars = 0
    if isinstance(request, InvocationRequest):
        return 0
    if isinstance(request, ChatRequest):
        for message in request.messages:
            content = message.content
            if isinstance(content, str):
                chars += len(content)
            elif content is not None:
                chars += sum(len(part.text or "") for part in content)
    elif isinstance(request, CompletionRequest):
        chars = _text_length(request.prompt)
    else:
        chars = _text_length(request.input)
    return chars


def estimate_prompt(request: ChatRequest | CompletionRequest | EmbeddingRequest) -> int:
    """Estimated prompt tokens of a validated request."""
    return _tokens(prompt_characters(request))


def body_characters(body: bytes) -> int:
    """Characters of generated text in a whole OpenAI-format response body: message
    content or completion text, plus tool-call arguments (0 if unreadable, or for
    embeddings, which generate no text)."""
    try:
        data: Any = orjson.loads(body)
        chars = 0
        for choice in data.get("choices") or ():
            message = choice.get("message") or {}
            chars += len(message.get("content") or choice.get("text") or "")
            for call in message.get("tool_calls") or ():
                chars += len((call.get("function") or {}).get("arguments") or "")
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return 0
    return chars


def chunk_characters(chunk: Any) -> int:
    """Characters of generated text in one parsed stream chunk (as :func:`body_characters`
    counts a whole body)."""
    chars = 0
    try:
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            chars += len(delta.get("content") or choice.get("text") or "")
            for call in delta.get("tool_calls") or ():
                chars += len((call.get("function") or {}).get("arguments") or "")
    except (AttributeError, TypeError):
        return chars
    return chars


def estimate_completion_of_body(body: bytes) -> int:
    """Estimated completion tokens of an OpenAI-format response body (0 if unreadable)."""
    chars = body_characters(body)
    return _tokens(chars) if chars else 0


def estimated(
    request: ChatRequest | CompletionRequest | EmbeddingRequest, completion_tokens: int
) -> TokenUsage:
    """An estimate for ``request`` with ``completion_tokens`` already judged."""
    return TokenUsage(estimate_prompt(request), completion_tokens, estimated=True)


def _text_length(value: object) -> int:
    # A prompt or embedding input: a string, a list of strings, or token ids.
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return len(value) * CHARS_PER_TOKEN  # already tokens
        return sum(_text_length(v) for v in value)
    return 0


def _tokens(chars: int) -> int:
    return max(1, -(-chars // CHARS_PER_TOKEN))
