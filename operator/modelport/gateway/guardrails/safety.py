"""The guard model that judges whether a conversation is safe.

The guard is itself a served model behind an OpenAI-compatible chat API: typically a
Llama Guard entity of another ServingEndpoint (the cluster setting ``guardModel``
names it), whose chat template turns the conversation into Llama Guard's prompt. The
gateway sends the conversation as chat messages (``temperature: 0``, a few tokens)
and reads the answer's text.

**Verdict format** (Llama Guard's), parsed strictly: after trimming whitespace, either
exactly ``safe``, or ``unsafe`` optionally followed by one line of comma-separated
category codes (``S1``, ``S10`` ...). Anything else is not a verdict: the guard is
treated as unable to judge, like a guard that is down, and the request passes or is
refused as ``failOpen`` says.

The request goes through the gateway's own upstream layer (a session of its own, the
same redaction of credentials in errors), with a timeout of its own
(``timeoutSeconds``) inside the request's deadline.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from modelport import gatewayconfig as gc
from modelport.gateway.errors import GatewayError
from modelport.gateway.protocol import ChatRequest
from modelport.gateway.providers import REGISTRY
from modelport.gateway.providers.base import Call
from modelport.gateway.secrets import SecretStore
from modelport.gateway.upstream import Upstream

MAX_VERDICT_TOKENS = 20
_CATEGORIES = re.compile(r"S\d{1,2}(?:\s*,\s*S\d{1,2})*")


@dataclass(frozen=True, slots=True)
class Verdict:
    """The guard's answer: safe or not, and the categories it named."""

    safe: bool
    categories: tuple[str, ...] = ()


class GuardUnavailableError(Exception):
    """The guard gave no verdict (unreachable, timed out, an error, an unreadable answer);
    the message says which, without any of the conversation."""


def parse_verdict(text: str) -> Verdict:
    """A Llama Guard verdict (see the module's docstring); raises ValueError otherwise."""
    lines = [line.strip() for line in text.strip().splitlines()]
    if lines == ["safe"]:
        return Verdict(True)
    if lines and lines[0] == "unsafe" and len(lines) <= 2:
        if len(lines) == 1:
            return Verdict(False)
        if _CATEGORIES.fullmatch(lines[1]):
            return Verdict(False, tuple(c.strip() for c in lines[1].split(",")))
    raise ValueError("not a guard verdict: expected 'safe' or 'unsafe' [+ categories]")


def guard_request(model: str, turns: list[dict[str, str]]) -> dict[str, Any]:
    """The chat request that asks the guard about ``turns``."""
    return {
        "model": model,
        "messages": turns,
        "max_tokens": MAX_VERDICT_TOKENS,
        "temperature": 0,
        "stream": False,
    }


def answer_text(body: bytes) -> str:
    """The text of a chat completion's first choice; ValueError when there is none."""
    data = orjson.loads(body)
    content = data["choices"][0]["message"]["content"]
    if not isinstance(content, str):
        raise ValueError("the guard's answer has no text")
    return content


class Guard:
    """Asks the guard model for verdicts; one HTTP session for the gateway's lifetime."""

    def __init__(self, config: gc.GuardModel, secrets_dir: Path) -> None:
        self.config = config
        # Reached as an OpenAI-compatible entity: with a token file, a bearer (custom
        # provider), re-read when it rotates; without, no Authorization (self-hosted).
        provider = gc.ProviderName.CUSTOM if config.token_path else gc.ProviderName.SELF_HOSTED
        self._entity = gc.EntityConfig.model_validate(
            {
                "name": "guard",
                "task": gc.Task.CHAT,
                "provider": provider,
                "modelName": config.model,
                "baseUrl": config.url,
                "credentials": {"apiKey": config.token_path} if config.token_path else {},
            }
        )
        self._provider = REGISTRY[provider]
        self._upstream = Upstream(SecretStore(secrets_dir), config.timeout_seconds)
        self.calls = 0

    async def start(self) -> None:
        """Open the session (at start-up, on the serving loop)."""
        await self._upstream.start()

    async def aclose(self) -> None:
        """Close the session (at shutdown)."""
        await self._upstream.aclose()

    async def judge(self, turns: list[dict[str, str]]) -> Verdict:
        """The guard's verdict on ``turns``; raises :class:`GuardUnavailableError`."""
        raw = guard_request(self.config.model, turns)
        call = Call(
            entity=self._entity,
            task=gc.Task.CHAT,
            raw=raw,
            request=ChatRequest.model_validate(raw),
        )
        self.calls += 1
        try:
            async with asyncio.timeout(self.config.timeout_seconds):
                body, _ = await self._upstream.complete(call, self._provider)
        except TimeoutError:
            raise GuardUnavailableError(
                f"the guard model gave no verdict within {self.config.timeout_seconds:g}s"
            ) from None
        except GatewayError as exc:
            raise GuardUnavailableError(
                f"the guard model failed (HTTP {exc.status}, {exc.code})"
            ) from None
        try:
            return parse_verdict(answer_text(body))
        except (ValueError, KeyError, IndexError, TypeError):
            raise GuardUnavailableError("the guard model's answer is not a verdict") from None
