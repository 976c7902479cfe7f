"""chan_websocket control messages in both wire formats."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxtra.errors import MediaError
from voxtra.media.chanws import (
    ChanWsProtocolError,
    Command,
    CommandRejected,
    ControlEvent,
    ControlFormat,
    DtmfEnd,
    MediaBufferingCompleted,
    MediaMarkProcessed,
    MediaStart,
    MediaXoff,
    MediaXon,
    QueueDrained,
    Status,
    UnknownControlEvent,
    build_command,
    parse_control,
)

TEXT_START = (
    "MEDIA_START connection_id:e226e283-c90a-4ea9-9e37-389000b9ef47 "
    "channel:WebSocket/connectionid channel_id:pbx1-123456789.999 format:ulaw "
    "optimal_frame_size:160 ptime:20"
)
JSON_START = """{
    "event": "MEDIA_START",
    "connection_id": "e226e283-c90a-4ea9-9e37-389000b9ef47",
    "channel": "WebSocket/connectionid",
    "channel_id": "pbx1-123456789.999",
    "format": "slin16",
    "optimal_frame_size": 640,
    "ptime": 20,
    "channel_variables": {"VOXTRA_CALL": "abc", "N": 3}
}"""


def test_media_start_plain_text() -> None:
    ev = parse_control(TEXT_START)
    assert isinstance(ev, MediaStart)
    assert ev.wire_format is ControlFormat.TEXT
    assert ev.connection_id == "e226e283-c90a-4ea9-9e37-389000b9ef47"
    assert ev.channel == "WebSocket/connectionid"
    assert ev.channel_id == "pbx1-123456789.999"
    assert (ev.format, ev.optimal_frame_size, ev.ptime) == ("ulaw", 160, 20)


def test_media_start_json() -> None:
    ev = parse_control(JSON_START)
    assert isinstance(ev, MediaStart)
    assert ev.wire_format is ControlFormat.JSON
    assert (ev.format, ev.optimal_frame_size, ev.ptime) == ("slin16", 640, 20)
    assert ev.channel_variables == {"VOXTRA_CALL": "abc", "N": "3"}


def test_old_media_start_without_ptime_or_channel_id() -> None:
    ev = parse_control("MEDIA_START connection_id:x channel:PJSIP/a-1 optimal_frame_size:160")
    assert isinstance(ev, MediaStart) and ev.ptime == 20 and ev.channel_id is None


@pytest.mark.parametrize(
    ("raw", "cls"),
    [
        ("MEDIA_XOFF", MediaXoff),
        ('{"event":"MEDIA_XOFF","channel_id":"c1"}', MediaXoff),
        ("MEDIA_XON", MediaXon),
        ('{"event":"MEDIA_XON"}', MediaXon),
        ("QUEUE_DRAINED", QueueDrained),
        ('{"event":"QUEUE_DRAINED","channel_id":"c1"}', QueueDrained),
    ],
)
def test_simple_events(raw: str, cls: type[ControlEvent]) -> None:
    assert type(parse_control(raw)) is cls


def test_dtmf_both_formats() -> None:
    a = parse_control("DTMF_END digit:#")
    b = parse_control('{"event":"DTMF_END","channel_id":"c","digit":"5"}')
    assert isinstance(a, DtmfEnd) and a.digit == "#"
    assert isinstance(b, DtmfEnd) and b.digit == "5" and b.channel_id == "c"


def test_buffering_completed_and_mark_ids() -> None:
    a = parse_control("MEDIA_BUFFERING_COMPLETED 61ea9311-d501")
    b = parse_control('{"event":"MEDIA_BUFFERING_COMPLETED","correlation_id":"x1"}')
    c = parse_control("MEDIA_BUFFERING_COMPLETED")
    m = parse_control('{"event":"MEDIA_MARK_PROCESSED","correlation_id":"m7"}')
    m2 = parse_control("MEDIA_MARK_PROCESSED m8")
    assert isinstance(a, MediaBufferingCompleted) and a.correlation_id == "61ea9311-d501"
    assert isinstance(b, MediaBufferingCompleted) and b.correlation_id == "x1"
    assert isinstance(c, MediaBufferingCompleted) and c.correlation_id is None
    assert isinstance(m, MediaMarkProcessed) and m.correlation_id == "m7"
    assert isinstance(m2, MediaMarkProcessed) and m2.correlation_id == "m8"


def test_status_both_formats() -> None:
    a = parse_control(
        "STATUS queue_length:43 xon_level:800 xoff_level:900 queue_full:false "
        "bulk_media:true media_paused:false"
    )
    b = parse_control(
        '{"event":"STATUS","channel_id":"c","queue_length":0,"xon_level":800,'
        '"xoff_level":900,"queue_full":false,"bulk_media":false,"media_paused":true}'
    )
    assert isinstance(a, Status) and isinstance(b, Status)
    assert (a.queue_length, a.xon_level, a.xoff_level) == (43, 800, 900)
    assert (a.queue_full, a.bulk_media, a.media_paused) == (False, True, False)
    assert (b.queue_length, b.media_paused) == (0, True)


def test_error_keeps_its_whole_text_in_both_formats() -> None:
    # Asterisk 22.10's chan_websocket prints "%s channel_id:%s error_text:%s" (its
    # format string): the text runs to the end of the line, spaces and colons too.
    text = parse_control(
        b"ERROR channel_id:pbx1-1.2 error_text:MARK_MEDIA not supported in passthrough mode"
    )
    assert isinstance(text, CommandRejected) and text.channel_id == "pbx1-1.2"
    assert text.error_text == "MARK_MEDIA not supported in passthrough mode"
    assert "correlation_id" not in text.fields and "args" not in text.fields
    colon = parse_control("ERROR channel_id:x error_text:bad: a:b c ")
    assert isinstance(colon, CommandRejected) and colon.error_text == "bad: a:b c"
    js = parse_control(
        b'{"event":"ERROR","channel_id":"pbx1-1.2","error_text":"Unable to parse JSON command"}'
    )
    assert isinstance(js, CommandRejected) and js.wire_format is ControlFormat.JSON
    assert js.error_text == "Unable to parse JSON command"
    # Only ERROR's text is free: elsewhere error_text is an ordinary field.
    other = parse_control("SOMETHING_NEW a:1 error_text:x y")
    assert isinstance(other, UnknownControlEvent) and other.fields["error_text"] == "x"


def test_unknown_event_is_kept() -> None:
    a = parse_control("MEDIA_SOMETHING_NEW foo:bar")
    b = parse_control('{"event":"HANGUP_REQUESTED","x":1}')
    assert isinstance(a, UnknownControlEvent) and a.name == "MEDIA_SOMETHING_NEW"
    assert a.fields == {"foo": "bar"}
    assert isinstance(b, UnknownControlEvent) and b.fields == {"x": 1}


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "hello world",
        "{not json",
        "[1,2]",
        '{"command":"ANSWER"}',
        '{"event":5}',
        '{"event":"media_start"}',
        "MEDIA_START connection_id:x",  # no frame size
        "MEDIA_START optimal_frame_size:abc",
        "MEDIA_START optimal_frame_size:0",
        '{"event":"MEDIA_START","optimal_frame_size":true}',
        '{"event":"MEDIA_START","optimal_frame_size":1e400}',
        '{"event":"MEDIA_START","optimal_frame_size":160,"channel_variables":[1]}',
        "DTMF_END",
        "DTMF_END digit:12",
        '{"event":"DTMF_END","digit":7}',
        "STATUS queue_full:maybe",
        "[" * 100000,
        b"\xff\xfe",
    ],
)
def test_malformed_is_a_typed_error(raw: str | bytes) -> None:
    with pytest.raises(ChanWsProtocolError) as info:
        parse_control(raw)
    assert isinstance(info.value, MediaError)


@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_fuzz_text_only_typed_errors(raw: str | bytes) -> None:
    try:
        ev = parse_control(raw)
    except ChanWsProtocolError:
        return
    assert isinstance(ev, ControlEvent) and ev.name


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
)


@given(
    st.sampled_from(
        ["MEDIA_START", "DTMF_END", "STATUS", "MEDIA_XOFF", "MEDIA_MARK_PROCESSED", "OTHER"]
    ),
    st.dictionaries(
        st.sampled_from(
            [
                "optimal_frame_size",
                "ptime",
                "digit",
                "queue_length",
                "queue_full",
                "channel_variables",
                "correlation_id",
                "format",
            ]
        ),
        st.one_of(
            json_scalars,
            st.lists(json_scalars, max_size=3),
            st.dictionaries(st.text(max_size=5), json_scalars, max_size=3),
        ),
    ),
)
def test_fuzz_json_fields_only_typed_errors(name: str, fields: dict[str, object]) -> None:
    with contextlib.suppress(ChanWsProtocolError):
        parse_control(json.dumps({"event": name, **fields}))


def test_commands_plain_text() -> None:
    assert build_command(Command.ANSWER) == "ANSWER"
    assert build_command(Command.FLUSH_MEDIA) == "FLUSH_MEDIA"
    assert build_command(Command.MARK_MEDIA, correlation_id="m1") == "MARK_MEDIA m1"
    assert build_command(Command.STOP_MEDIA_BUFFERING, correlation_id="b") == (
        "STOP_MEDIA_BUFFERING b"
    )
    assert build_command(Command.SET_MEDIA_DIRECTION, direction="in") == "SET_MEDIA_DIRECTION in"
    for c in Command:
        if c is not Command.SET_MEDIA_DIRECTION:
            assert build_command(c) == c.value


def test_commands_json() -> None:
    j = ControlFormat.JSON
    assert json.loads(build_command(Command.HANGUP, j)) == {"command": "HANGUP"}
    assert json.loads(build_command(Command.MARK_MEDIA, j, correlation_id="a b")) == {
        "command": "MARK_MEDIA",
        "correlation_id": "a b",
    }
    assert json.loads(build_command(Command.SET_MEDIA_DIRECTION, j, direction="both")) == {
        "command": "SET_MEDIA_DIRECTION",
        "direction": "both",
    }


def test_bad_command_parameters() -> None:
    with pytest.raises(ChanWsProtocolError):
        build_command(Command.ANSWER, correlation_id="x")
    with pytest.raises(ChanWsProtocolError):
        build_command(Command.SET_MEDIA_DIRECTION, direction="sideways")
    with pytest.raises(ChanWsProtocolError):
        build_command(Command.MARK_MEDIA, correlation_id="has space")
    with pytest.raises(ChanWsProtocolError):
        build_command(Command.HANGUP, direction="in")
