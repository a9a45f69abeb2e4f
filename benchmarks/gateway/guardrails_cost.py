"""What guardrails' checks cost per kilobyte of text, without any I/O.

::

    .venv/bin/python -m benchmarks.gateway.guardrails_cost              # ~30 s
    .venv/bin/python -m benchmarks.gateway.guardrails_cost --quick      # a smoke run

Three texts of 1 KiB: ``prose`` (ordinary sentences with a few numbers, no PII),
``mixed`` (prose with one finding of each kind) and ``dense`` (findings back to back),
each through:

- ``find``: the PII recognisers (:func:`modelport.gateway.guardrails.pii.find`);
- ``mask``: find and replace (what MASK does to a request or a whole answer);
- ``stream``: the text as 4-character chunks through the output tap (JSON parse of each
  chunk, the look-behind hold, find, mask, JSON dump when changed): what a streamed
  answer costs;
- ``keywords``: 20 invalid keywords; ``topics``: 10 valid topics.

The figure is the best round's mean in µs of CPU per KiB (``time.process_time``).
Phone numbers are judged by libphonenumber behind a cache; each round uses fresh
numbers in ``dense`` so the cache does not flatter it. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Callable

from modelport import gatewayconfig as gc
from modelport.gateway.context import RequestContext
from modelport.gateway.guardrails import pii
from modelport.gateway.guardrails.stages import OutputGuardrails
from modelport.gateway.guardrails.text import KeywordMatcher, TopicClassifier
from modelport.gateway.protocol import ChatRequest
from modelport.gateway.providers.base import Call

KIB = 1024
PROSE = (
    "The quarterly report shows 12 new customers and a 3.5% rise in revenue, up from "
    "2023. Our team of 40 engineers shipped version 2.4.1 on March 3rd; the next release "
    "is planned for the autumn. Please review the attached summary before Friday's "
    "meeting and send your comments to the project lead. "
)
FINDINGS = [
    "jane.doe@example.com",
    "+44 20 7946 0958",
    "4111 1111 1111 1111",
    "GB82 WEST 1234 5698 7654 32",
    "192.168.10.42",
    "2001:db8::8a2e:370:7334",
    "536-22-8726",
]


def texts(rng: random.Random) -> dict[str, str]:
    """The three 1-KiB texts (``dense`` with fresh phone numbers each call)."""
    prose = (PROSE * 8)[:KIB]
    words = prose.split(" ")
    mixed_words = list(words)
    for i, finding in enumerate(FINDINGS):
        mixed_words.insert(8 + i * 20, finding)
    mixed = " ".join(mixed_words)[:KIB]
    dense_parts: list[str] = []
    while sum(len(p) + 2 for p in dense_parts) < KIB:
        phone = f"+1 415 {rng.randint(200, 999)} {rng.randint(1000, 9999)}"
        dense_parts.extend([*FINDINGS, phone])
    dense = ", ".join(dense_parts)[:KIB]
    return {"prose": prose, "mixed": mixed, "dense": dense}


def stream_chunks(text: str, size: int = 4) -> list[bytes]:
    """``text`` as OpenAI chat chunks of ``size`` characters, then the finishing chunk."""

    def chunk(content: str | None, finish: str | None = None) -> bytes:
        delta = {} if content is None else {"content": content}
        return json.dumps(
            {
                "id": "c",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "m",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        ).encode()

    return [
        *(chunk(text[i : i + size]) for i in range(0, len(text), size)),
        chunk(None, "stop"),
    ]


def best_us(run: Callable[[], object], repeat: int, rounds: int) -> float:
    """The best round's mean µs of CPU per call."""
    best = float("inf")
    for _ in range(rounds):
        began = time.process_time()
        for _ in range(repeat):
            run()
        best = min(best, (time.process_time() - began) / repeat * 1e6)
    return best


def main() -> None:
    """Print µs of CPU per KiB for each check and text."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (few repeats)")
    parser.add_argument("--repeat", type=int, default=300, help="calls per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    repeat, rounds = (5, 1) if args.quick else (args.repeat, args.rounds)
    rng = random.Random(15)  # noqa: S311 - fresh phone numbers, not secrets
    output = OutputGuardrails(gc.GuardrailChecks(pii="MASK"), None)
    raw = {"model": "m", "messages": [{"role": "user", "content": "q"}], "stream": True}
    call = Call(
        entity=gc.EntityConfig.model_validate(
            {
                "name": "m",
                "task": "llm/v1/chat",
                "provider": "self-hosted",
                "modelName": "m",
                "baseUrl": "http://127.0.0.1:1/v1",
            }
        ),
        task=gc.Task.CHAT,
        raw=raw,
        request=ChatRequest.model_validate(raw),
        stream=True,
    )
    keywords = KeywordMatcher([f"codename {i}" for i in range(19)] + ["classified"])
    topics = TopicClassifier(
        ["billing", "invoices", "refunds", "payments", "subscriptions", "accounts", "pricing",
         "discounts", "orders", "shipping"]
    )  # fmt: skip
    print(f"guardrails cost: µs of CPU per KiB, best of {rounds} rounds x {repeat} calls")
    print(f"{'check':<10} {'prose':>9} {'mixed':>9} {'dense':>9}")

    def per_text(measure: Callable[[str], Callable[[], object]]) -> list[float]:
        out = []
        for name in ("prose", "mixed", "dense"):
            text = texts(rng)[name]
            out.append(best_us(measure(text), repeat, rounds))
        return out

    def stream(text: str) -> Callable[[], object]:
        chunks = stream_chunks(text)

        def run() -> None:
            tap = output.open(RequestContext("bench", "/v1/chat/completions"), call)
            assert tap is not None
            for c in chunks:
                tap.chunk(c)

        return run

    rows: dict[str, Callable[[str], Callable[[], object]]] = {
        "find": lambda t: lambda: pii.find(t),
        "mask": lambda t: lambda: pii.mask(t),
        "stream": stream,
        "keywords": lambda t: lambda: keywords.search(t),
        "topics": lambda t: lambda: topics.on_topic(t),
    }
    for name, measure in rows.items():
        prose, mixed, dense = per_text(measure)
        print(f"{name:<10} {prose:>9.1f} {mixed:>9.1f} {dense:>9.1f}")


if __name__ == "__main__":
    main()
