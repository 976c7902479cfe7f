"""The jitter buffer against a sender that jumps: bounded output, no hijacked stream."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from voxtra.media.jitter import MAX_CONCEAL, JitterBuffer
from voxtra.media.rtp import RtpPacket


def pkt(seq: int, ssrc: int = 1) -> RtpPacket:
    return RtpPacket(0, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, ssrc, bytes([seq & 0xFF]) * 160)


def run(jb: JitterBuffer, packets: list[RtpPacket]) -> list[int | None]:
    out: list[int | None] = []
    for p in packets:
        jb.push(p)
        out += [None if x is None else x.sequence for x in jb.pop_ready()]
    return out


def test_a_gap_emits_at_most_max_conceal_frames() -> None:
    jb = JitterBuffer(depth=3)
    # 60 packets lost (1.2 s): within MAX_DROPOUT, so loss, but only 200 ms of it shown.
    got = run(jb, [pkt(s) for s in [0, 1, 62, 63, 64, 65]])
    assert got == [0, 1] + [None] * MAX_CONCEAL + [62, 63, 64, 65]
    assert jb.stats.lost == 60 and jb.stats.concealed == MAX_CONCEAL


def test_jump_packets_emit_bounded_frames_and_the_stream_survives() -> None:
    """The attack from issue 16: packets 250 ahead, interleaved with the real stream.

    Before: each jump packet made ~249 lost frames (and moved the stream to it, so the
    real packets after it were dropped as late).
    """
    jb = JitterBuffer(depth=3)
    packets: list[RtpPacket] = []
    hostile = 0
    for s in range(200):
        packets.append(pkt(s))
        if s % 3 == 0:
            hostile = (s + 250 + 1000 * s) & 0xFFFF  # never two in a row: no new stream
            packets.append(pkt(hostile))
    got = run(jb, packets)
    assert got == list(range(200))  # the real stream, whole, and nothing else
    assert jb.stats.resyncs == 0 and jb.stats.lost == 0
    assert jb.stats.strays >= 60


def test_a_foreign_ssrc_cannot_take_over_with_single_packets() -> None:
    jb = JitterBuffer(depth=3)
    packets: list[RtpPacket] = []
    for s in range(50):
        packets += [pkt(s), pkt(1000 + 7 * s, ssrc=99)]
    assert run(jb, packets) == list(range(50))
    assert jb.stats.resyncs == 0


@given(st.lists(st.integers(0, 0xFFFF), max_size=300), st.integers(0, 0xFFFF))
def test_output_is_bounded_by_what_arrived(seqs: list[int], ssrc_mix: int) -> None:
    """Whatever arrives, at most MAX_CONCEAL + 1 items come out per packet pushed."""
    jb = JitterBuffer(depth=3)
    total = 0
    for i, s in enumerate(seqs):
        jb.push(pkt(s, ssrc=1 + (ssrc_mix >> (i % 16) & 1)))
        total += len(jb.pop_ready())
    total += len(jb.drain())
    assert total <= (MAX_CONCEAL + 1) * len(seqs)
    assert jb.stats.concealed <= MAX_CONCEAL * jb.stats.delivered
    assert len(jb) == 0


def test_one_packet_far_ahead_does_not_make_the_stream_skip() -> None:
    """Before, one packet 15 ahead gave the gap up at once: 14 frames of silence, and
    the real packets it jumped over were then dropped as late."""
    jb = JitterBuffer(depth=3)
    packets = [pkt(s) for s in range(6)] + [pkt(20)] + [pkt(s) for s in range(6, 30)]
    got = run(jb, packets)
    assert got == list(range(30))
    assert jb.stats.lost == 0 and jb.stats.late == 0 and jb.stats.duplicates == 1
