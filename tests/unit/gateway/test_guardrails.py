"""Guardrails on one table: every kind of PII in several formats, near misses that must
pass, keywords and topics, for BLOCK and MASK, on requests and on streamed answers whose
PII arrives split across chunks."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from modelport import gatewayconfig as gc
from modelport.gateway.context import RequestContext
from modelport.gateway.errors import GatewayError
from modelport.gateway.guardrails import pii
from modelport.gateway.guardrails.stages import InputGuardrails, OutputGuardrails
from modelport.gateway.guardrails.stream import LOOK_BEHIND_CHARS, HeldText, ViolationError
from modelport.gateway.guardrails.text import KeywordMatcher, TopicClassifier, stem
from modelport.gatewayconfig import Task
from tests.unit.gateway.helpers import call, entity

# (text, the same text masked). Equal texts are near misses: nothing may be found.
PII_TABLE: list[tuple[str, str]] = [
    # e-mail addresses
    ("write to jane.doe@example.com today", "write to [EMAIL] today"),
    ("Mail: J.Smith+news@mail.example.co.uk.", "Mail: [EMAIL]."),
    ("<ops_team@corp-mail.io>", "<[EMAIL]>"),
    ("a.b-c%d@sub.domain.org, then", "[EMAIL], then"),
    ("user@localhost is not routable", "user@localhost is not routable"),
    ("see @mention and a@b", "see @mention and a@b"),
    ("the version is pkg@1.2.3", "the version is pkg@1.2.3"),
    # phone numbers, international and national formats
    ("call +44 20 7946 0958 now", "call [PHONE] now"),
    ("Tel. +1 (415) 555-2671", "Tel. [PHONE]"),
    ("+33 1 42 68 53 00 (Paris)", "[PHONE] (Paris)"),
    ("mobile +91 98765 43210", "mobile [PHONE]"),
    ("dial 0049 30 901820", "dial [PHONE]"),
    ("+4930901820", "[PHONE]"),
    ("office (212) 555-0187.", "office [PHONE]."),
    ("cell 212-555-0187 after 5", "cell [PHONE] after 5"),
    ("212.555.0187", "[PHONE]"),
    ("+81 3-1234-5678", "[PHONE]"),
    ("order 5551234567 shipped", "order 5551234567 shipped"),
    ("about 1 000 000 people", "about 1 000 000 people"),
    ("in 2023 2024 2025", "in 2023 2024 2025"),
    ("ext 555-0187", "ext 555-0187"),
    ("on 2024-01-15 at 12:30:45", "on 2024-01-15 at 12:30:45"),
    ("due 15/01/2024 or 01.02.2024", "due 15/01/2024 or 01.02.2024"),
    # credit cards (Luhn-valid, with a network's prefix)
    ("card 4111 1111 1111 1111 exp 12/29", "card [CREDIT_CARD] exp 12/29"),
    ("visa 4012888888881881", "visa [CREDIT_CARD]"),
    ("mc 5555-5555-5555-4444.", "mc [CREDIT_CARD]."),
    ("amex 3782 822463 10005", "amex [CREDIT_CARD]"),
    ("discover 6011111111111117", "discover [CREDIT_CARD]"),
    ("mastercard 2223003122003222", "mastercard [CREDIT_CARD]"),
    ("card 4111 1111 1111 1112 fails Luhn", "card 4111 1111 1111 1112 fails Luhn"),
    ("0000 0000 0000 0000", "0000 0000 0000 0000"),
    ("tracking 1234567812345670", "tracking 1234567812345670"),
    ("ref 4111-1111 1111-1111 mixed", "ref 4111-1111 1111-1111 mixed"),
    # IBANs (mod-97)
    ("IBAN GB82 WEST 1234 5698 7654 32 please", "IBAN [IBAN] please"),
    ("DE89370400440532013000", "[IBAN]"),
    ("pay FR14 2004 1010 0505 0001 3M02 606.", "pay [IBAN]."),
    ("NL91ABNA0417164300 or", "[IBAN] or"),
    ("GB82 WEST 1234 5698 7654 33 bad check", "GB82 WEST 1234 5698 7654 33 bad check"),
    ("model XY12 ABCD 1234 5678 90", "model XY12 ABCD 1234 5678 90"),
    # IP addresses
    ("host 192.168.1.10 is down", "host [IP_ADDRESS] is down"),
    ("from 8.8.8.8, then", "from [IP_ADDRESS], then"),
    ("v6 2001:db8::8a2e:370:7334.", "v6 [IP_ADDRESS]."),
    ("link-local fe80::1ff:fe23:4567:890a here", "link-local [IP_ADDRESS] here"),
    ("version 1.2.3 and v1.2.3.4", "version 1.2.3 and v1.2.3.4"),
    ("999.1.1.1 is no address", "999.1.1.1 is no address"),
    ("std::vector and a::b", "std::vector and a::b"),
    ("section 3.2.1.4.5 of the spec", "section 3.2.1.4.5 of the spec"),
    # US SSNs
    ("SSN 536-22-8726.", "SSN [US_SSN]."),
    ("ssn 078 05 1120 on file", "ssn [US_SSN] on file"),
    ("000-12-3456 is invalid", "000-12-3456 is invalid"),
    ("666-12-3456 too", "666-12-3456 too"),
    ("912-34-5678 (ITIN range)", "912-34-5678 (ITIN range)"),
    ("part 536-00-8726", "part 536-00-8726"),
    ("id 536228726 bare", "id 536228726 bare"),
    # mixed and ordinary text
    (
        "Jane (jane@ex.org, +44 20 7946 0958) paid with 4111111111111111",
        "Jane ([EMAIL], [PHONE]) paid with [CREDIT_CARD]",
    ),
    ("ORD-12345678 ships in 3-5 days", "ORD-12345678 ships in 3-5 days"),
    ("The meeting has 12 people and costs $4,500.", "The meeting has 12 people and costs $4,500."),
    ("Python 3.11.4 on port 8080", "Python 3.11.4 on port 8080"),
    ("sha a3f5c9e1b2d4", "sha a3f5c9e1b2d4"),
    ("", ""),
]


def kinds_in(masked: str) -> set[str]:
    return {k for k in pii.KINDS if pii.placeholder(k) in masked}


@pytest.mark.parametrize(("text", "masked"), PII_TABLE)
def test_find_and_mask(text: str, masked: str) -> None:
    assert pii.mask(text) == masked
    assert {f.kind for f in pii.find(text)} == kinds_in(masked)


def test_the_table_is_big_enough() -> None:
    near_misses = [t for t, m in PII_TABLE if t == m]
    assert len(PII_TABLE) + len(KEYWORD_TABLE) + len(TOPIC_TABLE) >= 60
    assert len(near_misses) >= 20
    assert {k for _, m in PII_TABLE for k in kinds_in(m)} == set(pii.KINDS)


def test_checksums() -> None:
    assert pii.luhn_valid("4111111111111111") and not pii.luhn_valid("4111111111111112")
    assert pii.iban_valid("GB82WEST12345698765432")
    assert not pii.iban_valid("GB82WEST1234569876543")  # one short for GB
    assert not pii.iban_valid("XX82WEST12345698765432")


# -- requests -----------------------------------------------------------------------------


def guard_in(**checks: Any) -> InputGuardrails:
    return InputGuardrails(gc.GuardrailChecks.model_validate(checks), None)


def admit(stage: InputGuardrails, body: dict[str, Any], task: Task = Task.CHAT) -> Any:
    c = call(entity("custom", task, baseUrl="http://x/v1"), body)
    ctx = RequestContext("ep", "/v1/chat/completions")
    asyncio.run(stage.admit(ctx, c))
    return c, ctx


@pytest.mark.parametrize(("text", "masked"), PII_TABLE)
def test_requests_mask(text: str, masked: str) -> None:
    body = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": text}]},
        ]
    }
    c, ctx = admit(guard_in(pii="MASK"), body)
    assert c.raw["messages"][1]["content"][0]["text"] == masked
    assert c.request.messages[1].text() == masked  # what translating providers read
    assert body["messages"][1]["content"][0]["text"] == text  # the client's body is left alone
    if masked != text:
        (decision,) = ctx.guardrails
        assert (decision.direction, decision.check, decision.action) == ("input", "pii", "mask")
        assert set(decision.kinds) == kinds_in(masked)
    else:
        assert ctx.guardrails is None


@pytest.mark.parametrize(("text", "masked"), PII_TABLE)
def test_requests_block(text: str, masked: str) -> None:
    stage = guard_in(pii="BLOCK")
    body = {"prompt": ["first", text]}
    if masked == text:
        admit(stage, body, Task.COMPLETIONS)
        return
    with pytest.raises(GatewayError) as caught:
        admit(stage, body, Task.COMPLETIONS)
    error = caught.value
    assert error.status == 400
    assert error.reason == "pii:" + ",".join(sorted(kinds_in(masked)))
    # The reason names the kinds, never the value.
    for value in text.split():
        if len(value) > 6 and any(ch.isdigit() for ch in value):
            assert value not in error.message


def test_embeddings_inputs_are_masked() -> None:
    c, _ = admit(guard_in(pii="MASK"), {"input": ["ok", "mail a@example.com"]}, Task.EMBEDDINGS)
    assert c.raw["input"] == ["ok", "mail [EMAIL]"]


QUESTION = {"messages": [{"role": "user", "content": "q"}]}

# -- streamed answers ---------------------------------------------------------------------


def chunk(text: str | None, finish: str | None = None, index: int = 0) -> bytes:
    delta = {} if text is None else {"content": text}
    return json.dumps(
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
        }
    ).encode()


def relay(stage: OutputGuardrails, pieces: list[str]) -> tuple[str, RequestContext]:
    """Stream ``pieces`` through a tap as chunks, then a finishing chunk; the text sent."""
    ctx = RequestContext("ep", "/v1/chat/completions")
    c = call(entity("custom", baseUrl="http://x/v1"), QUESTION)
    tap = stage.open(ctx, c)
    assert tap is not None
    sent: list[str] = []
    for payload in [chunk(None), *(chunk(p) for p in pieces), chunk(None, "stop")]:
        out = json.loads(tap.chunk(payload))
        sent.append(out["choices"][0]["delta"].get("content") or "")
    return "".join(sent), ctx


def splits(text: str) -> list[list[str]]:
    """The text in chunks of 1, 3 and 7 characters, and cut in two at every point."""
    out = [[text[i : i + n] for i in range(0, len(text), n)] for n in (1, 3, 7)]
    out += [[text[:i], text[i:]] for i in range(1, len(text))]
    return out


def guard_out(**checks: Any) -> OutputGuardrails:
    return OutputGuardrails(gc.GuardrailChecks.model_validate(checks), None)


@pytest.mark.parametrize(("text", "masked"), PII_TABLE)
def test_streams_mask_pii_split_across_chunks(text: str, masked: str) -> None:
    stage = guard_out(pii="MASK")
    for pieces in splits(text):
        sent, _ = relay(stage, pieces)
        assert sent == masked, pieces


@pytest.mark.parametrize(("text", "masked"), PII_TABLE)
def test_streams_block_pii_split_across_chunks(text: str, masked: str) -> None:
    stage = guard_out(pii="BLOCK")
    for pieces in splits(text)[:6]:
        if masked == text:
            assert relay(stage, pieces)[0] == text
            continue
        with pytest.raises(GatewayError) as caught:
            relay(stage, pieces)
        # The stream stops at the first finding released: its kinds, not all of them.
        reason = caught.value.reason or ""
        assert reason.startswith("pii:")
        assert set(reason.removeprefix("pii:").split(",")) <= kinds_in(masked)


def test_look_behind_is_bounded_and_prose_is_held_one_word() -> None:
    held = HeldText("MASK", None)
    assert held.feed("The quick brown fox") == "The quick brown "
    assert held.feed(" jumps") == "fox "
    long_hash = "a" * 200
    released = held.feed(long_hash)
    assert len(held.flush()) == LOOK_BEHIND_CHARS
    assert released.startswith("jumps")


def test_whole_answers_are_masked() -> None:
    ctx = RequestContext("ep", "/v1/chat/completions")
    c = call(entity("custom", baseUrl="http://x/v1"), QUESTION)
    tap = guard_out(pii="MASK").open(ctx, c)
    assert tap is not None
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "at 8.8.8.8"}}]}
    out = json.loads(tap.body(json.dumps(body).encode()))
    assert out["choices"][0]["message"]["content"] == "at [IP_ADDRESS]"


# -- keywords and topics ------------------------------------------------------------------

FULLWIDTH_CLASSIFIED = "".join(chr(ord(c) + 0xFEE0) for c in "classified")
KEYWORDS = ["Project Falcon", "classified", "straße"]
KEYWORD_TABLE: list[tuple[str, bool]] = [
    ("tell me about project falcon", True),
    ("PROJECT   FALCON status?", True),
    ("project\nfalcon", True),
    ("This is CLASSIFIED.", True),
    (f"{FULLWIDTH_CLASSIFIED} (fullwidth)", True),
    ("the Hauptstrasse is long", False),
    ("the STRASSE", True),
    ("declassified documents", False),
    ("classifieds section", False),
    ("project falconry club", False),
    ("falcon project", False),
    ("nothing to see", False),
]


@pytest.mark.parametrize(("text", "blocked"), KEYWORD_TABLE)
def test_keywords(text: str, blocked: bool) -> None:
    assert KeywordMatcher(KEYWORDS).search(text) is blocked
    stage = guard_in(invalidKeywords=KEYWORDS)
    body = {"messages": [{"role": "user", "content": text}]}
    if not blocked:
        admit(stage, body)
        return
    with pytest.raises(GatewayError) as caught:
        admit(stage, body)
    assert caught.value.reason == "keywords" and "falcon" not in caught.value.message.lower()


@pytest.mark.parametrize(("text", "blocked"), KEYWORD_TABLE)
def test_keywords_split_across_chunks(text: str, blocked: bool) -> None:
    stage = guard_out(invalidKeywords=KEYWORDS)
    for pieces in splits(text)[:3]:
        if blocked:
            with pytest.raises(GatewayError):
                relay(stage, pieces)
        else:
            assert relay(stage, pieces)[0] == text


TOPICS = ["billing", "invoices", "refunds", "subscription plans"]
TOPIC_TABLE: list[tuple[str, bool]] = [
    ("Why was I billed twice this month?", True),
    ("Can I get a refund for my last order?", True),
    ("I need a copy of my invoice", True),
    ("How do I upgrade my subscription?", True),
    ("Which plans include support?", True),
    ("Hi!", True),  # no content word: let through
    ("Thanks, that helps", True),
    ("Write me a poem about the sea", False),
    ("What is the capital of France?", False),
    ("How do I fix a segmentation fault in C?", False),
    ("Who won the football match yesterday?", False),
    ("Give me a recipe for lasagna", False),
    ("I was charged the wrong amount", False),  # no synonym list: a known miss
]


@pytest.mark.parametrize(("text", "on_topic"), TOPIC_TABLE)
def test_topics(text: str, on_topic: bool) -> None:
    expected = on_topic
    assert TopicClassifier(TOPICS).on_topic(text) is expected
    stage = guard_in(validTopics=TOPICS)
    system = {"role": "system", "content": "billing bot"}
    body = {"messages": [system, {"role": "user", "content": text}]}
    if on_topic:
        admit(stage, body)
        return
    with pytest.raises(GatewayError) as caught:
        admit(stage, body)
    assert caught.value.reason == "topics"


def test_stems() -> None:
    assert stem("refunds") == stem("refunded") == stem("refunding") == "refund"
    assert stem("invoices") == stem("invoice")
    assert stem("running") == "run"


def test_held_text_block_raises_before_the_finding_is_released() -> None:
    held = HeldText("BLOCK", None)
    assert held.feed("card 4111 1111 ") == "card "
    assert held.feed("1111 1111 ok") == ""  # "1111 ok" may still be part of a number
    with pytest.raises(ViolationError) as caught:
        held.feed(" then")
    assert caught.value.kinds == ("CREDIT_CARD",)
