"""MediaEngine against floods and a stream leaving mid-tick, on real loopback sockets.

Ticks are driven by hand (``engine.tick()``), so each tick reads exactly what was sent
before it. Every test here failed on the code before its fix.
"""

from __future__ import annotations

import sys
from types import FrameType

import numpy as np
import numpy.typing as npt
import pytest

from media.rtp_peers import Peer, frame_of
from voxtra.media.engine import EngineStream, MediaEngine, TickAudio
from voxtra.media.pacer import Ticker


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
async def test_a_stream_closed_in_on_tick_leaves_at_its_end_and_the_others_go_on(
    peers: list[Peer], law: str
) -> None:
    """A handler closes a stream mid-tick. Before: the last row moved into its place
    under the tick's arrays, and the send either raised (A-law: shapes that do not
    broadcast; the ticker then drops the engine, every call silent) or sent the closed
    stream's answer to the moved stream's peer (mu-law, a stream without its remote
    yet among them)."""
    pt = 0 if law == "ulaw" else 8
    peers.extend(Peer(pt) for _ in range(2))
    closing: list[EngineStream] = []

    def echo(audio: TickAudio) -> npt.NDArray[np.int16]:
        for s in closing:
            s.close()
        closing.clear()
        return audio.pcm

    engine = MediaEngine(ticker=Ticker(), sample_rate=8000, capacity=8, on_tick=echo)
    first = engine.add(law)
    engine.add(law)  # no remote yet: nothing is sent for it
    last = engine.add(law)
    first.set_remote("127.0.0.1", peers[0].port)
    last.set_remote("127.0.0.1", peers[1].port)
    to = engine.local_address
    for t in range(3):
        if t == 1:
            closing.append(first)
        peers[0].send(to, frame_of(0x20 + t))
        peers[1].send(to, frame_of(0x40 + t))
        engine.tick()
    # the closed stream had its tick's answer and then left; the other kept its own
    assert [p.payload for p in peers[0].received()] == [frame_of(0x20), frame_of(0x21)]
    assert [p.payload for p in peers[1].received()] == [frame_of(0x40 + t) for t in range(3)]
    assert first.closed and len(engine) == 2 and last.index == 0
    assert first.frames_in == 2 and last.frames_in == 3
    assert engine.stats.handler_errors == 0
    await engine.aclose()


async def _flooded_tick_calls(capacity: int, peers: list[Peer]) -> int:
    """Python calls made by a tick whose eight reads (the most it makes) are all full
    of a stranger's datagrams, one stream routed."""
    peer, stranger = Peer(), Peer()
    peers += [peer, stranger]
    engine = MediaEngine(ticker=Ticker(), sample_rate=8000, capacity=capacity, on_tick=None)
    engine.add("ulaw").set_remote("127.0.0.1", peer.port)
    to = engine.local_address
    engine.tick()
    flood = 8 * 2 * capacity  # two rows a stream in a read
    junk = bytes([0x80, 0]) + bytes(170)  # an RTP packet's size: a row holds it whole
    for _ in range(flood):
        stranger.sock.sendto(junk, to)
    calls = 0

    def count(frame: FrameType, event: str, arg: object) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(count)
    try:
        engine.tick()
    finally:
        sys.setprofile(None)
    assert engine.stats.recv_calls == 1 + 8
    assert engine.stats.dropped_foreign_source == flood
    await engine.aclose()
    return calls


async def test_a_strangers_flood_past_the_first_read_takes_no_python_step_a_datagram(
    peers: list[Peer],
) -> None:
    """Datagrams from a stranger beyond the tick's first read were looked up one by one
    (about 5 us each: a flood filling the reads made a 60 ms tick at 1,024 streams'
    capacity). Counted as Python calls, so the load of the box does not matter: three
    times the flood in as many reads, and the tick makes about as many calls. (Floods
    of 128 and 384 datagrams: both fit Linux's default receive buffer, 512 of them.)"""
    small = await _flooded_tick_calls(8, peers)
    large = await _flooded_tick_calls(24, peers)
    more = 8 * 2 * (24 - 8)
    assert large - small < more // 4, (small, large)  # was about 5 calls a datagram


async def test_a_flood_from_the_peers_address_is_cut_at_64_packets_a_tick(
    peers: list[Peer],
) -> None:
    """500 packets of the stream (its SSRC, sequence numbers just ahead: a spoofer on
    Asterisk's address) in one tick. Before: every one was parsed and checked against
    what waits (about 20 us each; 10,000 made a 217 ms tick). Now 64 a tick, as the
    shared socket and a per-call socket take, the rest dropped and counted, and the
    stream plays on."""
    peers.append(Peer())
    # one read holds the flood (two rows a stream): the next tick reads only the stream
    engine = MediaEngine(ticker=Ticker(), sample_rate=8000, capacity=256, on_tick=None)
    s = engine.add("ulaw")
    s.set_remote("127.0.0.1", peers[0].port)
    to = engine.local_address
    peers[0].send(to, frame_of(0x50), seq=10)
    engine.tick()
    for k in range(500):
        peers[0].send(to, frame_of(0x60), seq=40 + k % 50)
    engine.tick()
    assert s.frames_in <= 1 + 64
    assert engine.stats.dropped_over_limit == 500 - 64
    for seq in (11, 12, 13):
        peers[0].send(to, frame_of(0x51), seq=seq)
        engine.tick()
    assert s.expected_sequence == 14 and s.late == 0
    await engine.aclose()
