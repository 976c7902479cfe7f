"""Jitter buffer scenarios: in order, reorder, duplicates, late, loss, wraparound."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from voxtra.media.jitter import JitterBuffer
from voxtra.media.rtp import RtpPacket


def pkt(seq: int, ssrc: int = 1) -> RtpPacket:
    return RtpPacket(0, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, ssrc, bytes([seq & 0xFF]) * 160)


def seqs(out: list[RtpPacket | None]) -> list[int | None]:
    return [None if p is None else p.sequence for p in out]


def feed(jb: JitterBuffer, order: list[int]) -> list[int | None]:
    got: list[int | None] = []
    for s in order:
        jb.push(pkt(s))
        got += seqs(jb.pop_ready())
    return got


def test_in_order_passes_straight_through() -> None:
    jb = JitterBuffer(depth=3)
    for s in range(10):
        jb.push(pkt(s))
        assert seqs(jb.pop_ready()) == [s]  # no added delay
    assert jb.stats.delivered == 10 and jb.stats.lost == 0


def test_reorder_within_depth() -> None:
    jb = JitterBuffer(depth=3)
    assert feed(jb, [0, 2, 1, 3, 5, 4, 6]) == [0, 1, 2, 3, 4, 5, 6]
    assert jb.stats.reordered == 2 and jb.stats.lost == 0


def test_duplicates_dropped() -> None:
    jb = JitterBuffer(depth=3)
    assert feed(jb, [0, 1, 1, 3, 3, 2, 0]) == [0, 1, 2, 3]
    assert jb.stats.duplicates == 3


def test_loss_declared_after_depth_packets() -> None:
    jb = JitterBuffer(depth=3)
    got = feed(jb, [0, 1, 3, 4])
    assert got == [0, 1]  # still waiting for 2
    got = feed(jb, [5])  # 3 packets past the gap: 2 is given up
    assert got == [None, 3, 4, 5]
    assert jb.stats.lost == 1
    # 2 finally arrives: late, dropped.
    assert feed(jb, [2, 6]) == [6]
    assert jb.stats.late == 1


def test_wraparound_65535_to_0() -> None:
    jb = JitterBuffer(depth=3)
    got = feed(jb, [65533, 65535, 65534, 1, 0, 2])
    assert got == [65533, 65534, 65535, 0, 1, 2]
    assert jb.stats.lost == 0 and jb.stats.reordered == 2


def test_loss_across_wrap_counts() -> None:
    jb = JitterBuffer(depth=2)
    got = feed(jb, [65534, 1, 2, 3])
    assert got == [65534, None, None, 1, 2, 3]
    assert jb.stats.lost == 2  # 65535 and 0


def test_drain_releases_tail_with_gaps() -> None:
    jb = JitterBuffer(depth=5)
    feed(jb, [10, 12, 14])
    assert seqs(jb.drain()) == [None, 12, None, 14]
    assert len(jb) == 0


def test_new_ssrc_or_big_jump_resyncs_without_loss_once_confirmed() -> None:
    jb = JitterBuffer(depth=3)
    feed(jb, [100, 101])
    jb.push(pkt(5000, ssrc=1))
    assert seqs(jb.pop_ready()) == []  # held: one packet is not yet a new stream
    jb.push(pkt(5001, ssrc=1))
    assert seqs(jb.pop_ready()) == [5000, 5001]
    jb.push(pkt(7, ssrc=2))
    jb.push(pkt(8, ssrc=2))
    assert seqs(jb.pop_ready()) == [7, 8]
    assert jb.stats.lost == 0 and jb.stats.resyncs == 2 and jb.stats.strays == 0


@given(st.lists(st.integers(0, 40), max_size=120))
def test_any_arrival_order_delivers_increasing_unique(order: list[int]) -> None:
    jb = JitterBuffer(depth=3)
    got = [s for s in feed(jb, order) + seqs(jb.drain()) if s is not None]
    assert got == sorted(set(got))
    st_ = jb.stats
    assert st_.received == len(order)
    assert st_.delivered == len(got)
    assert st_.delivered + st_.duplicates + st_.late == st_.received


@given(
    st.lists(st.tuples(st.integers(0, 40), st.sampled_from([1, 1, 1, 2])), max_size=150),
    st.integers(0, 0xFFFF),
)
def test_in_order_fast_path_matches_push_and_pop(order: list[tuple[int, int]], base: int) -> None:
    """``push_in_order`` + fallback delivers the same packets with the same statistics."""
    slow, fast = JitterBuffer(depth=3), JitterBuffer(depth=3)
    got_slow: list[int | None] = []
    got_fast: list[int | None] = []
    for s, ssrc in order:
        p = pkt(base + s, ssrc)
        slow.push(p)
        got_slow += seqs(slow.pop_ready())
        if fast.push_in_order(p.sequence, p.ssrc):
            got_fast.append(p.sequence)
        else:
            fast.push(p)
            got_fast += seqs(fast.pop_ready())
    assert got_fast == got_slow
    assert fast.stats == slow.stats
    assert fast.expected == slow.expected


def test_in_order_fast_path_refuses_when_buffered_or_unknown() -> None:
    jb = JitterBuffer(depth=3)
    assert not jb.push_in_order(0, 1)  # nothing known yet: the slow path learns the stream
    jb.push(pkt(0))
    assert seqs(jb.pop_ready()) == [0]
    assert jb.push_in_order(1, 1)
    assert not jb.push_in_order(2, 9)  # another SSRC is a resync: slow path
    jb.push(pkt(3))  # a gap: 3 waits for 2
    assert not jb.push_in_order(2, 1)  # buffered packets: the slow path orders them
    assert jb.stats.delivered == 2 and jb.stats.received == 3
