"""AudioSocket framing from hand-built byte streams, split and merged like TCP reads."""

from __future__ import annotations

import itertools
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxtra.errors import MediaError
from voxtra.media.audiosocket import (
    AudioSocketParser,
    AudioSocketProtocolError,
    Kind,
    Message,
    build_audio,
    build_dtmf,
    build_error,
    build_hangup,
    build_uuid,
)

CALL = uuid.UUID("0436430c-2b02-624c-2032-570501212b57")
UUID_MSG = bytes.fromhex("010010") + bytes.fromhex("0436430c2b02624c2032570501212b57")
AUDIO_MSG = bytes.fromhex("100140") + (1000).to_bytes(2, "little", signed=True) * 160
DTMF_MSG = b"\x03\x00\x01#"
HANGUP_MSG = b"\x00\x00\x00"
ERROR_MSG = b"\xff\x00\x01\x02"
STREAM = UUID_MSG + AUDIO_MSG + DTMF_MSG + AUDIO_MSG + ERROR_MSG + HANGUP_MSG


def test_builders_match_wire_bytes() -> None:
    assert build_uuid(CALL) == UUID_MSG
    assert build_audio((1000).to_bytes(2, "little", signed=True) * 160) == AUDIO_MSG
    assert build_dtmf("#") == DTMF_MSG
    assert build_hangup() == HANGUP_MSG
    assert build_error(2) == ERROR_MSG
    assert build_audio(b"\x00\x00" * 320, 16000)[0] == Kind.AUDIO_16K


def test_parse_whole_stream() -> None:
    msgs = AudioSocketParser().feed(STREAM)
    assert [m.kind for m in msgs] == [0x01, 0x10, 0x03, 0x10, 0xFF, 0x00]
    assert msgs[0].uuid == CALL
    assert msgs[1].sample_rate == 8000 and len(msgs[1].payload) == 320
    assert int.from_bytes(msgs[1].payload[:2], "little", signed=True) == 1000
    assert msgs[2].digit == "#"
    assert msgs[4].error_code == 2


@given(st.lists(st.integers(1, len(STREAM) - 1), max_size=12))
def test_any_split_gives_same_messages(cuts: list[int]) -> None:
    parser = AudioSocketParser()
    edges = [0, *sorted(set(cuts)), len(STREAM)]
    got: list[Message] = []
    for a, b in itertools.pairwise(edges):
        got += parser.feed(STREAM[a:b])
    assert got == AudioSocketParser().feed(STREAM)
    assert parser.buffered == 0


def test_byte_at_a_time() -> None:
    parser = AudioSocketParser()
    got = [m for i in range(len(STREAM)) for m in parser.feed(STREAM[i : i + 1])]
    assert len(got) == 6


def test_unknown_type_kept() -> None:
    (m,) = AudioSocketParser().feed(b"\x42\x00\x02hi")
    assert m.kind == 0x42 and m.payload == b"hi" and m.sample_rate is None


@pytest.mark.parametrize(
    "raw",
    [
        b"\x01\x00\x03abc",  # UUID not 16 bytes
        b"\x03\x00\x02##",  # DTMF 2 bytes
        b"\x03\x00\x01x",  # not a DTMF digit
        b"\x10\x00\x03abc",  # odd audio length
    ],
)
def test_malformed_is_typed_error_and_poisons(raw: bytes) -> None:
    p = AudioSocketParser()
    with pytest.raises(AudioSocketProtocolError) as info:
        p.feed(raw)
    assert isinstance(info.value, MediaError)
    with pytest.raises(AudioSocketProtocolError):
        p.feed(HANGUP_MSG)


def test_buffer_limit() -> None:
    p = AudioSocketParser(max_buffer=100)
    with pytest.raises(AudioSocketProtocolError):
        p.feed(b"\x10\xff\xfe" + bytes(200))


def test_builder_rejects_bad_input() -> None:
    with pytest.raises(AudioSocketProtocolError):
        build_audio(bytes(70000))
    with pytest.raises(AudioSocketProtocolError):
        build_audio(bytes(10), 11025)
    with pytest.raises(AudioSocketProtocolError):
        build_dtmf("xx")
    with pytest.raises(AudioSocketProtocolError):
        Message(0x10, b"").uuid  # noqa: B018


@given(st.lists(st.binary(max_size=50), max_size=10))
def test_fuzz_only_typed_errors(chunks: list[bytes]) -> None:
    p = AudioSocketParser()
    try:
        for c in chunks:
            for m in p.feed(c):
                assert 0 <= m.kind <= 255
    except AudioSocketProtocolError:
        pass
