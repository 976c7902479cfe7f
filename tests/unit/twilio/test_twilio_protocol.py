"""The Media Streams messages, from bytes (sans I/O), in the shapes of Twilio's
documentation; and what the transport makes of marks and clears."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from voxtra.media.frames import AudioChunk, Codec
from voxtra.media.pacer import Ticker
from voxtra.twilio.protocol import (
    Connected,
    Dtmf,
    Mark,
    MediaChunk,
    Start,
    Stop,
    TwilioProtocolError,
    Unknown,
    clear_message,
    mark_message,
    media_message,
    parse_message,
)
from voxtra.twilio.transport import TwilioMediaTransport

START = {
    "event": "start",
    "sequenceNumber": "1",
    "start": {
        "accountSid": "AC1",
        "streamSid": "MZ1",
        "callSid": "CA1",
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {"From": "+15550199", "To": "+15550100"},
    },
    "streamSid": "MZ1",
}


def test_messages_from_twilio_parse() -> None:
    assert parse_message('{"event": "connected", "protocol": "Call", "version": "1.0.0"}') == (
        Connected("Call", "1.0.0")
    )
    start = parse_message(json.dumps(START))
    assert isinstance(start, Start)
    assert (start.stream_sid, start.call_sid, start.sample_rate) == ("MZ1", "CA1", 8000)
    assert start.custom_parameters == {"From": "+15550199", "To": "+15550100"}
    media = {
        "event": "media",
        "sequenceNumber": "3",
        "media": {"track": "inbound", "chunk": "1", "timestamp": "5", "payload": "/38="},
        "streamSid": "MZ1",
    }
    assert parse_message(json.dumps(media)) == MediaChunk(b"\xff\x7f", "inbound", 1, 5)
    dtmf = {"event": "dtmf", "streamSid": "MZ1", "dtmf": {"track": "inbound_track", "digit": "5"}}
    assert parse_message(json.dumps(dtmf)) == Dtmf("5")
    mark = {"event": "mark", "streamSid": "MZ1", "mark": {"name": "v0:3"}}
    assert parse_message(json.dumps(mark)) == Mark("v0:3")
    stop = {"event": "stop", "streamSid": "MZ1", "stop": {"accountSid": "AC1", "callSid": "CA1"}}
    assert parse_message(json.dumps(stop)) == Stop("CA1")
    assert isinstance(parse_message('{"event": "later"}'), Unknown)


@pytest.mark.parametrize("digit", ["", "12", "x", "<b>", "5" * 100])
def test_a_dtmf_message_that_is_not_one_key_is_not_a_digit(digit: str) -> None:
    # Before, any text was a "digit": queued for gather(), stored by the platform.
    dtmf = {"event": "dtmf", "streamSid": "MZ1", "dtmf": {"digit": digit}}
    assert isinstance(parse_message(json.dumps(dtmf)), Unknown)


def _start_with(**fields: object) -> str:
    """START with some of its ``start`` object's fields replaced."""
    message = json.loads(json.dumps(START))
    message["start"].update(fields)
    return json.dumps(message)


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1]",
        '{"event": "media"}',
        '{"event": "media", "media": {"payload": "***"}}',
        '{"event": "start", "start": {"streamSid": "MZ1"}}',
        # Before, these raised what the parser tripped on (RecursionError,
        # AttributeError, TypeError, UnicodeDecodeError's ValueError aside): the
        # stream's handler, catching only TwilioProtocolError, died with a traceback.
        "[" * 100000,
        '{"event": "media", "media": ' * 5000,
        b"\xff\xfe not utf-8",
        _start_with(mediaFormat="x"),
        _start_with(mediaFormat=[1]),
        _start_with(customParameters=[1]),
        _start_with(customParameters="From=+1"),
        _start_with(customParameters={"From": ["+1"]}),
        _start_with(customParameters={"VoxtraStreamToken": {"at": 1}}),
        _start_with(tracks=5),
        _start_with(tracks="inbound"),
        _start_with(tracks=[["inbound"]]),
        _start_with(callSid=["CA1"]),
        _start_with(streamSid={"sid": "MZ1"}),
        '{"event": "media", "media": {"payload": "/38=", "track": ["inbound"]}}',
        '{"event": "mark", "mark": {"name": {"n": 1}}}',
        '{"event": "dtmf", "dtmf": {"digit": ["5"]}}',
        '{"event": "stop", "stop": {"callSid": [1]}}',
        '{"event": "connected", "protocol": null}',
    ],
)
def test_malformed_messages_raise(text: str | bytes) -> None:
    with pytest.raises(TwilioProtocolError):
        parse_message(text)


def test_odd_but_harmless_shapes_still_parse() -> None:
    # Numbers where Twilio sends strings are taken; an event that is not a name, a
    # number JSON cannot hold as an int, and a null are not errors either.
    start = parse_message(_start_with(customParameters={"n": 5}, tracks=None, mediaFormat=None))
    assert isinstance(start, Start)
    assert (start.custom_parameters, start.tracks, start.sample_rate) == (
        {"n": "5"},
        ("inbound",),
        8000,
    )
    media = '{"event": "media", "media": {"payload": "/38=", "chunk": 1e400}}'
    assert parse_message(media) == MediaChunk(b"\xff\x7f", "inbound", 0, 0)
    deep = '{"event": ' + "[" * 900 + "]" * 900 + "}"
    assert parse_message(deep) == Unknown("", {"event": json.loads(deep)["event"]})
    assert parse_message("{}") == Unknown("", {})


def test_messages_to_twilio() -> None:
    assert json.loads(media_message("MZ1", b"\xff")) == {
        "event": "media",
        "streamSid": "MZ1",
        "media": {"payload": "/w=="},
    }
    assert json.loads(mark_message("MZ1", "v0:3")) == {
        "event": "mark",
        "streamSid": "MZ1",
        "mark": {"name": "v0:3"},
    }
    assert json.loads(clear_message("MZ1")) == {"event": "clear", "streamSid": "MZ1"}


async def test_marks_of_an_earlier_generation_do_not_count() -> None:
    sent: list[dict[str, object]] = []

    async def send(text: str) -> None:
        sent.append(json.loads(text))

    async def close() -> None:
        return None

    ticker = Ticker()
    now = [0.0]  # the transport's clock, moved by hand
    transport = TwilioMediaTransport("MZ1", send, close, ticker, clock=lambda: now[0])
    try:
        transport.feed(b"\x01" * 250)  # one whole frame and a part
        transport.feed(b"\x01" * 70)
        frames = [f async for f in _take(transport, 2)]
        assert [len(f.data) for f in frames] == [160, 160]
        transport.marked("v0:9")  # more than was sent: a stray mark
        assert transport.played_ms == 0
        await transport.send(AudioChunk(b"\x10" * 160 * 20, 8000, Codec.ULAW))
        await _until(lambda: _count(sent, "media") >= 12)
        transport.marked("v0:9")
        assert transport.played_ms == 180
        now[0] += 0.045  # two frames played since that mark (Twilio plays on)
        assert transport.played_ms == 220
        now[0] += 1.0  # but never more than a mark (3 frames) past the last one
        assert transport.played_ms == 240
        await transport.flush()
        transport.marked("v0:12")  # echoed because of the clear: never played
        assert transport.played_ms == 240 and transport.queued_ms == 0
        await transport.send(AudioChunk(b"\x10" * 160 * 5, 8000, Codec.ULAW))
        await _until(lambda: _count(sent, "media") >= 16)
        transport.marked("v1:14")
        assert transport.played_ms == 280
        await asyncio.sleep(0.05)
        assert {"event": "clear", "streamSid": "MZ1"} in sent
    finally:
        await transport.close()
        await ticker.aclose()


def _count(sent: list[dict[str, object]], event: str) -> int:
    return sum(1 for message in sent if message["event"] == event)


async def _until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not predicate():
            await asyncio.sleep(0.01)


async def _take(transport: TwilioMediaTransport, n: int):  # type: ignore[no-untyped-def]
    got = 0
    async for frame in transport.frames():
        yield frame
        got += 1
        if got == n:
            return
