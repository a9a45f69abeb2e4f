"""Incremental decoders of SSE and AWS event-stream bodies."""

from __future__ import annotations

import json

import pytest

from modelport.gateway.errors import GatewayError
from modelport.gateway.framing import EXCEPTION_PREFIX, EventStreamDecoder, SSEDecoder
from tests.integration.gateway.fakes import bedrock_event, eventstream_frame

SSE_BODY = (
    b": comment\r\n"
    b'event: message_start\r\ndata: {"a": 1}\r\n\r\n'
    b"data: line1\ndata: line2\n\n"
    b"id: 7\nretry: 10\ndata:no-space\n\n"
    b"data: [DONE]\n\n"
)
SSE_EVENTS = [
    ("message_start", b'{"a": 1}'),
    ("", b"line1\nline2"),
    ("", b"no-space"),
    ("", b"[DONE]"),
]


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64, len(SSE_BODY)])
def test_sse_events_survive_any_chunking(step: int) -> None:
    decoder = SSEDecoder()
    events = []
    for i in range(0, len(SSE_BODY), step):
        events += decoder.feed(SSE_BODY[i : i + step])
    events += decoder.close()
    assert events == SSE_EVENTS


@pytest.mark.parametrize(
    "tail", [b"data: tail", b'data: {"half": ', b"data: whole line\n", b"event: x\ndata: y\n"]
)
def test_sse_event_cut_before_its_blank_line_is_discarded_on_close(tail: bytes) -> None:
    """The SSE specification: an event the body ends inside is not dispatched, so half a
    JSON payload never reaches a translator (the missing final event tells it instead)."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: whole\n\n" + tail) == [("", b"whole")]
    assert decoder.close() == []


def test_event_stream_cut_mid_frame_is_a_502_on_close() -> None:
    frame = bedrock_event("messageStart", {"role": "assistant"})
    decoder = EventStreamDecoder()
    assert [name for name, _ in decoder.feed(frame + frame[:9])] == ["messageStart"]
    with pytest.raises(GatewayError) as caught:
        decoder.close()
    assert caught.value.status == 502 and "middle of a frame" in caught.value.message
    whole = EventStreamDecoder()
    whole.feed(frame)
    assert whole.close() == []


@pytest.mark.parametrize("step", [1, 5, 13, 1000])
def test_event_stream_frames_survive_any_chunking(step: int) -> None:
    body = b"".join(
        [
            bedrock_event("messageStart", {"role": "assistant"}),
            bedrock_event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "hé"}}),
            eventstream_frame(
                {":message-type": "exception", ":exception-type": "throttlingException"},
                b'{"message":"slow down"}',
            ),
        ]
    )
    decoder = EventStreamDecoder()
    events = []
    for i in range(0, len(body), step):
        events += decoder.feed(body[i : i + step])
    assert [name for name, _ in events] == [
        "messageStart",
        "contentBlockDelta",
        EXCEPTION_PREFIX + "throttlingException",
    ]
    assert json.loads(events[1][1])["delta"]["text"] == "hé"


def test_corrupt_event_stream_is_a_502() -> None:
    frame = bytearray(bedrock_event("messageStart", {"role": "assistant"}))
    frame[-1] ^= 0xFF  # break the message CRC
    with pytest.raises(GatewayError) as caught:
        EventStreamDecoder().feed(bytes(frame))
    assert caught.value.status == 502
