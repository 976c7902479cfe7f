"""RTP parse/build from hand-made wire bytes, fuzzing, and the outbound numbering."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxtra.errors import MediaError
from voxtra.media.rtp import (
    PT_PCMU,
    PT_SLIN16_ASTERISK,
    RtpPacket,
    RtpParseError,
    RtpSender,
    seq_diff,
)

# A PCMU packet as Asterisk sends it: V=2, no P/X/CC, M=0, PT=0, seq 0x1a2b,
# ts 0x0000a000, SSRC 0x5eadbeef, 160 bytes of mu-law silence. 172 bytes on the wire.
PCMU_172 = bytes.fromhex("80001a2b0000a0005eadbeef") + b"\xff" * 160
# slin16 from Asterisk: marker set, PT 118, 640 bytes (big-endian zero samples).
SLIN16_652 = bytes.fromhex("80f600010001e24000000001") + bytes(640)


def test_parse_real_pcmu_packet() -> None:
    assert len(PCMU_172) == 172
    p = RtpPacket.parse(PCMU_172)
    assert (p.version, p.payload_type, p.sequence, p.timestamp, p.ssrc) == (
        2,
        PT_PCMU,
        0x1A2B,
        0xA000,
        0x5EADBEEF,
    )
    assert not p.marker and p.padding == 0 and p.csrc == [] and not p.extension
    assert p.payload == b"\xff" * 160
    assert p.build() == PCMU_172


def test_parse_slin16_marker_packet() -> None:
    p = RtpPacket.parse(SLIN16_652)
    assert p.marker and p.payload_type == PT_SLIN16_ASTERISK and len(p.payload) == 640
    assert p.build() == SLIN16_652


def test_csrc_extension_and_padding() -> None:
    raw = (
        bytes([0x80 | 0x20 | 0x10 | 2, 0x08])  # P, X, CC=2; PT 8
        + (7).to_bytes(2, "big")
        + (1234).to_bytes(4, "big")
        + (99).to_bytes(4, "big")
        + (1).to_bytes(4, "big")
        + (2).to_bytes(4, "big")
        + bytes.fromhex("bede0001")  # one-byte-header profile, 1 word
        + bytes.fromhex("10ab0000")
        + b"\xd5" * 4
        + b"\x00\x00\x03"  # 3 bytes of padding
    )
    p = RtpPacket.parse(raw)
    assert p.csrc == [1, 2]
    assert p.extension_profile == 0xBEDE and p.extension_data == bytes.fromhex("10ab0000")
    assert p.payload == b"\xd5" * 4 and p.padding == 3
    assert p.build() == raw


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"", "short"),
        (PCMU_172[:11], "short"),
        (b"\x40" + PCMU_172[1:], "version"),
        (b"\xa0" + PCMU_172[1:-1] + b"\xff", "padding"),  # padding 255 > packet
        (b"\xa0" + PCMU_172[1:-1] + b"\x00", "padding"),  # padding count 0
        (b"\x8f" + PCMU_172[1:12] + b"\x00" * 8, "CSRC"),  # 15 CSRCs, 8 bytes
        (b"\x90" + PCMU_172[1:12] + b"\x00\x00", "extension"),
        (b"\x90" + PCMU_172[1:12] + b"\xbe\xde\x00\x09" + b"\x00" * 8, "extension"),
    ],
)
def test_garbage_is_a_typed_error(raw: bytes, why: str) -> None:
    with pytest.raises(RtpParseError, match=why) as info:
        RtpPacket.parse(raw)
    assert isinstance(info.value, MediaError)


@given(st.binary(max_size=400))
def test_fuzz_parse_only_raises_rtp_parse_error(raw: bytes) -> None:
    try:
        p = RtpPacket.parse(raw)
    except RtpParseError:
        return
    # Whatever parses must serialise back to the same bytes, except padding content.
    again = RtpPacket.parse(p.build())
    assert again == p


@given(
    pt=st.integers(0, 127),
    seq=st.integers(0, 0xFFFF),
    ts=st.integers(0, 0xFFFFFFFF),
    ssrc=st.integers(0, 0xFFFFFFFF),
    marker=st.booleans(),
    csrc=st.lists(st.integers(0, 0xFFFFFFFF), max_size=15),
    ext=st.one_of(st.none(), st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=12))),
    padding=st.integers(0, 255),
    payload=st.binary(max_size=300),
)
def test_round_trip_property(
    pt: int,
    seq: int,
    ts: int,
    ssrc: int,
    marker: bool,
    csrc: list[int],
    ext: tuple[int, bytes] | None,
    padding: int,
    payload: bytes,
) -> None:
    profile, data = (None, b"") if ext is None else (ext[0], ext[1] + bytes(-len(ext[1]) % 4))
    p = RtpPacket(pt, seq, ts, ssrc, payload, marker, 2, padding, csrc, profile, data)
    assert RtpPacket.parse(p.build()) == p


def test_build_rejects_unrepresentable_fields() -> None:
    with pytest.raises(MediaError):
        RtpPacket(200, 0, 0, 0).build()
    with pytest.raises(MediaError):
        RtpPacket(0, 0, 0, 0, csrc=list(range(16))).build()
    with pytest.raises(MediaError):
        RtpPacket(0, 0, 0, 0, extension_profile=1, extension_data=b"abc").build()


def test_sender_numbering_wraps_and_marks() -> None:
    s = RtpSender(PT_PCMU, 160, ssrc=42, sequence=65534, timestamp=0xFFFFFF00)
    pkts = [RtpPacket.parse(s.build(b"\xff" * 160)) for _ in range(3)]
    assert [p.sequence for p in pkts] == [65534, 65535, 0]
    assert [p.timestamp for p in pkts] == [0xFFFFFF00, 0xFFFFFFA0, 0x40]
    assert [p.marker for p in pkts] == [True, False, False]
    assert {p.ssrc for p in pkts} == {42}
    # 5 frames of silence skipped: ts jumps by 6 frames since the last packet, marker set.
    gap = RtpPacket.parse(s.build(b"\xff" * 160, skipped_frames=5))
    assert gap.sequence == 1 and gap.timestamp == (0x40 + 160 * 6) and gap.marker
    assert not RtpPacket.parse(s.build(b"\xff" * 160)).marker
    s.restart()
    assert RtpPacket.parse(s.build(b"\xff" * 160)).marker
    assert s.packets_sent == 6 and s.octets_sent == 960


def test_sender_random_start_values_differ() -> None:
    starts = {(RtpSender(0).ssrc, RtpSender(0).sequence) for _ in range(5)}
    assert len(starts) > 1


def test_seq_diff_wraps() -> None:
    assert seq_diff(0, 65535) == 1
    assert seq_diff(65535, 0) == -1
    assert seq_diff(5, 3) == 2
    assert seq_diff(100, 100) == 0


def test_sender_build_fast_path_equals_packet_build() -> None:
    a = RtpSender(PT_PCMU, 160, ssrc=0x1234_5678, sequence=65533, timestamp=0xFFFF_FE00)
    b = RtpSender(PT_PCMU, 160, ssrc=0x1234_5678, sequence=65533, timestamp=0xFFFF_FE00)
    payload = bytes(range(160))
    for i, skipped in enumerate([0, 0, 3, 0, 0, 1, 0]):
        fast = a.build(payload, skipped_frames=skipped)
        slow = b.packet(payload, skipped_frames=skipped).build()
        assert fast == slow
        assert RtpPacket.parse(fast).marker == (i == 0 or skipped > 0)
    assert (a.sequence, a.timestamp, a.octets_sent) == (b.sequence, b.timestamp, b.octets_sent)
    with pytest.raises(MediaError):
        a.build(payload, skipped_frames=-1)
    with pytest.raises(MediaError):
        RtpSender(128)
