"""MediaEngine: a tick's RTP for every stream as arrays, on real loopback sockets.

Ticks are driven by hand (``engine.tick()``), so what each tick reads is exactly what
the peers sent before it: no timing in the assertions.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from media.rtp_peers import Peer, frame_of
from voxtra.errors import ConfigError, MediaError
from voxtra.media import g711
from voxtra.media.engine import MediaEngine, TickAudio
from voxtra.media.frames import Codec
from voxtra.media.pacer import Ticker
from voxtra.media.resample import StreamResampler


def ulaw_value(code: int) -> int:
    return int(np.frombuffer(g711.ulaw_to_pcm16(bytes([code])), "<i2")[0])


class Recorder:
    """``on_tick`` that keeps copies of what it was handed and answers with ``reply``."""

    def __init__(self) -> None:
        self.ticks: list[TickAudio] = []
        self.reply: npt.NDArray[np.int16] | None = None

    def __call__(self, audio: TickAudio) -> npt.NDArray[np.int16] | None:
        self.ticks.append(TickAudio(audio.ids.copy(), audio.pcm.copy(), audio.present.copy()))
        return self.reply if self.reply is not None else audio.pcm

    def row(self, tick: int, stream_id: int) -> tuple[npt.NDArray[np.int16], bool]:
        t = self.ticks[tick]
        i = int(np.flatnonzero(t.ids == stream_id)[0])
        return t.pcm[i], bool(t.present[i])


def make(peers: list[Peer], n: int, rate: int = 8000, **kw: object) -> tuple[MediaEngine, Recorder]:
    rec = Recorder()
    engine = MediaEngine(ticker=Ticker(), sample_rate=rate, capacity=16, on_tick=rec, **kw)  # type: ignore[arg-type]
    for _ in range(n):
        peers.append(Peer())
    return engine, rec


async def test_frames_reach_the_app_per_stream_and_go_back_with_rtp_headers(
    peers: list[Peer],
) -> None:
    engine, rec = make(peers, 3)
    streams = [engine.add("ulaw") for _ in peers]
    for s, p in zip(streams, peers, strict=True):
        s.set_remote("127.0.0.1", p.port)
    to = engine.local_address
    for t in range(4):
        for k, p in enumerate(peers):
            p.send(to, frame_of(0x10 + 16 * k + t))
        engine.tick()
    for t in range(4):
        for k, s in enumerate(streams):
            row, present = rec.row(t, s.id)
            assert present
            assert (row == ulaw_value(0x10 + 16 * k + t)).all()
    for k, p in enumerate(peers):
        got = p.received()
        assert len(got) == 4
        assert [pkt.sequence for pkt in got] == [(got[0].sequence + j) & 0xFFFF for j in range(4)]
        assert [pkt.timestamp for pkt in got] == [
            (got[0].timestamp + 160 * j) % 2**32 for j in range(4)
        ]
        assert [pkt.marker for pkt in got] == [True, False, False, False]
        assert len({pkt.ssrc for pkt in got}) == 1 and all(pkt.payload_type == 0 for pkt in got)
        # 8 kHz app, identity: the frame comes back as it went
        assert [pkt.payload for pkt in got] == [frame_of(0x10 + 16 * k + t) for t in range(4)]
    assert engine.stats.sent == 12 and engine.stats.send_calls == 4
    assert [s.frames_in for s in streams] == [4, 4, 4]
    await engine.aclose()


async def test_16khz_matches_the_per_call_resamplers(peers: list[Peer]) -> None:
    """Mu-law and A-law streams together: the app's rows are what a per-call
    ``StreamResampler`` makes of each frame, and what it answers is resampled and
    encoded as the per-call path would (to G.711's own rounding)."""
    engine, rec = make(peers, 2, rate=16000)
    peers[1].rtp.payload_type = 8
    s_u, s_a = engine.add("ulaw"), engine.add("alaw")
    for s, p in zip((s_u, s_a), peers, strict=True):
        s.set_remote("127.0.0.1", p.port)
    rng = np.random.default_rng(3)
    ups = [StreamResampler(8000, 16000), StreamResampler(8000, 16000)]
    downs = [StreamResampler(16000, 8000), StreamResampler(16000, 8000)]
    codecs = [Codec.ULAW, Codec.ALAW]
    sent_back: list[list[bytes]] = [[], []]
    for _ in range(5):
        reply = rng.integers(-8000, 8000, (2, 320)).astype(np.int16)
        rec.reply = reply
        payloads = [bytes(rng.integers(0, 256, 160).astype(np.uint8)) for _ in peers]
        for p, pay in zip(peers, payloads, strict=True):
            p.send(engine.local_address, pay)
        engine.tick()
        tick = rec.ticks[-1]
        for k, s in enumerate((s_u, s_a)):
            i = int(np.flatnonzero(tick.ids == s.id)[0])
            want = np.frombuffer(ups[k].process(g711.decode(payloads[k], codecs[k])), "<i2")
            assert np.abs(tick.pcm[i].astype(int) - want).max() <= 1
            down = downs[k].process(reply[i].tobytes())
            sent_back[k].append(g711.pcm16_to_ulaw(down) if k == 0 else g711.pcm16_to_alaw(down))
    for k, p in enumerate(peers):
        got = [pkt.payload for pkt in p.received()]
        assert len(got) == 5
        a = np.frombuffer(b"".join(got), np.uint8).astype(int)
        b = np.frombuffer(b"".join(sent_back[k]), np.uint8).astype(int)
        # a 1-LSB difference before encoding moves a code by at most one step
        assert (a != b).mean() < 0.01
        assert np.abs(a - b).max() <= 1 or k == 1  # A-law's codes are bit-inverted
    await engine.aclose()


async def test_reorder_burst_loss_and_duplicate_take_the_per_packet_path(
    peers: list[Peer],
) -> None:
    engine, rec = make(peers, 1)
    s = engine.add("ulaw")
    s.set_remote("127.0.0.1", peers[0].port)
    p, to = peers[0], engine.local_address
    seq_code = {q: 0x20 + q for q in range(12)}

    def sent(*seqs: int) -> None:
        for q in seqs:
            p.send(to, frame_of(seq_code[q]), seq=q)
        engine.tick()

    sent(0)
    sent(2, 1)  # reordered within a tick
    sent()  # nothing came: 2 was waiting
    sent(3, 4, 5)  # a burst: 3 now, 4 and 5 wait in the ring
    sent(6)
    sent(6)  # 6 again: a duplicate, and nothing new
    sent(8)  # 7 lost
    sent()
    delivered = []
    for t in range(len(rec.ticks)):
        row, present = rec.row(t, s.id)
        delivered.append(
            next(q for q, c in seq_code.items() if (row == ulaw_value(c)).all())
            if present
            else None
        )
    assert delivered == [0, 1, 2, 3, 4, 5, 6, 8]
    assert s.lost == 1
    assert engine.stats.slow_packets > 0
    await engine.aclose()


async def test_a_packet_a_tick_late_behind_its_successor_is_played(peers: list[Peer]) -> None:
    """The successor comes a tick before it (reordered across two reads): the stream
    waits one tick for the missing frame, then plays both in order. Before, the
    successor was played at once and the frame dropped as late when it came."""
    engine, rec = make(peers, 1)
    s = engine.add("ulaw")
    s.set_remote("127.0.0.1", peers[0].port)
    p, to = peers[0], engine.local_address
    for seqs in ((0,), (2,), (1, 3), (4,), (), (6,), (5,), ()):
        for q in seqs:
            p.send(to, frame_of(0x20 + q), seq=q)
        engine.tick()
    delivered = []
    for t in range(len(rec.ticks)):
        row, present = rec.row(t, s.id)
        delivered.append(int(row[0]) if present else None)
    # one tick of silence while 1 is waited for; from then on a frame later, which
    # also absorbs 5 coming after 6
    assert delivered == [
        None if c is None else ulaw_value(0x20 + c) for c in (0, None, 1, 2, 3, 4, 5, 6)
    ]
    assert (s.late, s.lost, s.reordered) == (0, 0, 2)
    await engine.aclose()


async def test_a_stream_a_frame_behind_stays_in_order_beside_the_others(
    peers: list[Peer],
) -> None:
    """After a wait one stream plays a frame behind (one frame held in its ring) while
    the other plays each frame the tick it comes; both stay in order, the held one
    drains when its peer skips a tick."""
    engine, rec = make(peers, 2)
    a, b = engine.add("ulaw"), engine.add("ulaw")
    a.set_remote("127.0.0.1", peers[0].port)
    b.set_remote("127.0.0.1", peers[1].port)
    to = engine.local_address
    b_sends = [(0,), (2,), (1,), (3,), (4,), (), (5,), (6,)]
    for t, b_seqs in enumerate(b_sends):
        peers[0].send(to, frame_of(0x10 + t), seq=t)
        for q in b_seqs:
            peers[1].send(to, frame_of(0x40 + q), seq=q)
        engine.tick()

    def played(stream_id: int) -> list[int | None]:
        out = []
        for t in range(len(rec.ticks)):
            row, present = rec.row(t, stream_id)
            out.append(int(row[0]) if present else None)
        return out

    assert played(a.id) == [ulaw_value(0x10 + t) for t in range(len(b_sends))]
    assert played(b.id) == [
        None if q is None else ulaw_value(0x40 + q) for q in (0, None, 1, 2, 3, 4, 5, 6)
    ]
    assert (b.lost, b.late, b.concealed) == (0, 0, 1)
    await engine.aclose()


async def test_a_lost_frame_is_waited_for_one_tick_only(peers: list[Peer]) -> None:
    engine, rec = make(peers, 1)
    s = engine.add("ulaw")
    s.set_remote("127.0.0.1", peers[0].port)
    p, to = peers[0], engine.local_address
    for seqs in ((0,), (2,), (3,), (4,), (6,), (7,), (8,)):
        for q in seqs:
            p.send(to, frame_of(0x20 + q), seq=q)
        engine.tick()
    delivered = [
        int(rec.row(t, s.id)[0][0]) if rec.row(t, s.id)[1] else None for t in range(len(rec.ticks))
    ]
    # 1 never comes: a tick's wait, then 2 (the stream a frame behind from then);
    # 5 never comes either: 6 was already waiting behind it, so no second wait
    assert delivered == [
        None if c is None else ulaw_value(0x20 + c) for c in (0, None, 2, 3, 4, 6, 7)
    ]
    assert (s.lost, s.late) == (2, 0)
    await engine.aclose()


async def test_a_burst_in_order_is_played_out_from_the_ring_on_the_array_path(
    peers: list[Peer],
) -> None:
    engine, rec = make(peers, 1)
    s = engine.add("ulaw")
    s.set_remote("127.0.0.1", peers[0].port)
    p, to = peers[0], engine.local_address
    p.send(to, frame_of(0x30), seq=0)
    engine.tick()  # the stream's first packet starts it (per packet)
    slow_after_start = engine.stats.slow_packets
    for q in (1, 2, 3):
        p.send(to, frame_of(0x30 + q), seq=q)
    for _ in range(3):
        engine.tick()
    p.send(to, frame_of(0x34), seq=4)
    engine.tick()
    codes = [0x30, 0x31, 0x32, 0x33, 0x34]
    for t, c in enumerate(codes):
        row, present = rec.row(t, s.id)
        assert present and (row == ulaw_value(c)).all()
    assert engine.stats.slow_packets == slow_after_start  # all of it as arrays
    await engine.aclose()


async def test_missing_frame_is_silence_and_counted(peers: list[Peer]) -> None:
    engine, rec = make(peers, 2)
    a, b = engine.add("ulaw"), engine.add("ulaw")
    a.set_remote("127.0.0.1", peers[0].port)
    b.set_remote("127.0.0.1", peers[1].port)
    for t in range(3):
        peers[0].send(engine.local_address, frame_of(0x40))
        if t != 1:
            peers[1].send(engine.local_address, frame_of(0x41))
        engine.tick()
    row, present = rec.row(1, b.id)
    assert not present and not row.any()
    assert b.concealed == 1 and a.concealed == 0
    assert len(peers[1].received()) == 3  # one packet a tick goes out regardless
    await engine.aclose()


async def test_strangers_and_a_new_ssrc(peers: list[Peer]) -> None:
    engine, rec = make(peers, 1)
    s = engine.add("ulaw")
    s.set_remote("127.0.0.1", peers[0].port)
    stranger = Peer()
    peers.append(stranger)
    to = engine.local_address
    peers[0].send(to, frame_of(0x50), seq=10)
    stranger.send(to, frame_of(0x51), seq=11)
    engine.tick()
    assert engine.stats.dropped_foreign_source == 1
    row, present = rec.row(0, s.id)
    assert present and (row == ulaw_value(0x50)).all()
    # the channel restarts its stream: another SSRC, another sequence. Its first
    # packet waits for the second to confirm it (RFC 3550 probation), then both play.
    peers[0].rtp.ssrc = 4242
    peers[0].send(to, frame_of(0x52), seq=5000)
    engine.tick()
    assert not rec.row(1, s.id)[1]
    peers[0].send(to, frame_of(0x53), seq=5001)
    engine.tick()
    engine.tick()
    assert [
        bool((rec.row(t, s.id)[0] == ulaw_value(c)).all()) for t, c in ((2, 0x52), (3, 0x53))
    ] == [
        True,
        True,
    ]
    assert s.lost == 0 and s.late == 0 and s.resyncs == 1 and s.strays == 0
    await engine.aclose()


async def test_a_stream_leaving_keeps_the_others_routed(peers: list[Peer]) -> None:
    engine, rec = make(peers, 3)
    streams = [engine.add("ulaw") for _ in peers]
    for st, p in zip(streams, peers, strict=True):
        st.set_remote("127.0.0.1", p.port)
    for k, p in enumerate(peers):
        p.send(engine.local_address, frame_of(0x60 + k))
    engine.tick()
    streams[0].close()  # the last row moves into its place
    assert len(engine) == 2 and streams[2].index == 0
    assert streams[0].frames_in == 1  # its counters stay readable
    for k, p in enumerate(peers):
        p.send(engine.local_address, frame_of(0x70 + k))
    rec.reply = None
    engine.tick()
    assert engine.stats.dropped_foreign_source == 1  # the one that left
    for k in (1, 2):
        row, present = rec.row(1, streams[k].id)
        assert present and (row == ulaw_value(0x70 + k)).all()
        assert [pkt.payload for pkt in peers[k].received()][-1] == frame_of(0x70 + k)
    assert len(peers[0].received()) == 1
    await engine.aclose()


async def test_a_bad_handler_gives_silence_not_a_dead_tick(peers: list[Peer]) -> None:
    engine, rec = make(peers, 1)
    s = engine.add("ulaw")
    s.set_remote("127.0.0.1", peers[0].port)
    rec.reply = np.zeros((1, 7), np.int16)  # wrong shape
    peers[0].send(engine.local_address, frame_of(0x10))
    engine.tick()

    def boom(audio: TickAudio) -> None:
        raise RuntimeError("app bug")

    engine.on_tick = boom
    peers[0].send(engine.local_address, frame_of(0x10))
    engine.tick()
    assert engine.stats.handler_errors == 2
    got = peers[0].received()
    assert [pkt.payload for pkt in got] == [frame_of(0xFF)] * 2  # mu-law silence
    await engine.aclose()


async def test_limits_are_typed_errors(peers: list[Peer]) -> None:
    engine = MediaEngine(ticker=Ticker(), capacity=1)
    with pytest.raises(ConfigError):
        engine.add("slin16")
    s = engine.add("ulaw")
    with pytest.raises(MediaError):
        engine.add("ulaw")
    s.close()
    with pytest.raises(MediaError):
        s.set_remote("127.0.0.1", 9)
    await engine.aclose()
    with pytest.raises(MediaError):
        engine.add("ulaw")


async def test_a_stream_without_its_remote_yet_sends_nothing(peers: list[Peer]) -> None:
    """Asterisk's address comes with the ExternalMedia answer: until then a stream is
    in the tick (its row) but nothing is sent for it; the others are unaffected."""
    engine, rec = make(peers, 1)
    waiting = engine.add("alaw")  # no remote yet
    live = engine.add("ulaw")
    live.set_remote("127.0.0.1", peers[0].port)
    for _ in range(3):
        peers[0].send(engine.local_address, frame_of(0x44))
        engine.tick()
    got = peers[0].received()
    assert [pkt.payload for pkt in got] == [frame_of(0x44)] * 3
    assert [pkt.sequence - got[0].sequence for pkt in got] == [0, 1, 2]
    assert waiting.frames_out == 0 and live.frames_out == 3
    assert len(rec.ticks[0].ids) == 2
    await engine.aclose()


async def test_one_spoofed_jump_does_not_move_the_stream(peers: list[Peer]) -> None:
    """A packet from the peer's address far ahead (or of another SSRC) is held, not
    taken as a restart: the real stream's next packets play on (before: every one of
    them was late)."""
    engine, rec = make(peers, 1)
    s = engine.add("ulaw")
    s.set_remote("127.0.0.1", peers[0].port)
    to = engine.local_address
    peers[0].send(to, frame_of(0x50), seq=10)
    engine.tick()
    peers[0].send(to, frame_of(0x60), seq=10 + 250)  # the jump attack
    peers[0].send(to, frame_of(0x51), seq=11)
    engine.tick()
    peers[0].rtp.ssrc ^= 1
    peers[0].send(to, frame_of(0x61), seq=700)  # another SSRC
    peers[0].rtp.ssrc ^= 1
    peers[0].send(to, frame_of(0x52), seq=12)
    engine.tick()
    got = [
        bool((rec.row(t, s.id)[0] == ulaw_value(c)).all()) for t, c in enumerate((0x50, 0x51, 0x52))
    ]
    assert got == [True, True, True]
    assert s.late == 0 and s.resyncs == 0 and s.strays == 1
    await engine.aclose()
