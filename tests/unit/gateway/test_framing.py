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


def test_sse_unterminated_last_event_is_flushed_on_close() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: tail") == []
    assert decoder.close() == [("", b"tail")]


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
