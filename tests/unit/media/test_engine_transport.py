"""EngineTransport: a call's MediaTransport on its row of the app's MediaEngine.

Real loopback sockets; ticks driven by hand (``engine.tick()``), so each assertion is
about which frames went where, never about timing.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest

from voxtra.errors import CallEnded, ConfigError
from voxtra.media import g711
from voxtra.media.engine import MediaEngine
from voxtra.media.engine_transport import EngineHub, EngineTransport
from voxtra.media.frames import AudioChunk, Codec
from voxtra.media.pacer import Ticker
from voxtra.media.rtp import RtpPacket, RtpSender


class Peer:
    """Asterisk's end of one call's ExternalMedia RTP."""

    def __init__(self, ssrc: int = 1000) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.rtp = RtpSender(0, ssrc=ssrc, sequence=100, timestamp=0)

    def send(self, to: tuple[str, int], payload: bytes, seq: int | None = None) -> None:
        if seq is not None:
            self.rtp.sequence = seq & 0xFFFF
        self.sock.sendto(self.rtp.build(payload), to)

    def received(self) -> list[RtpPacket]:
        out = []
        while True:
            try:
                out.append(RtpPacket.parse(self.sock.recv(2048)))
            except BlockingIOError:
                return out


@pytest.fixture
def peers() -> Iterator[list[Peer]]:
    made = [Peer(1000 + i) for i in range(3)]
    yield made
    for p in made:
        p.sock.close()


@pytest.fixture
async def hub() -> AsyncIterator[EngineHub]:
    made = EngineHub(MediaEngine(ticker=Ticker(), sample_rate=16000, capacity=8))
    yield made
    await made.aclose()


def frame(code: int) -> bytes:
    return bytes([code]) * 160


def drain(tr: EngineTransport) -> list[AudioChunk]:
    out = []
    while tr._in:
        out.append(tr._in.popleft())
    return out


def opened(hub: EngineHub, peer: Peer, name: str = "c") -> EngineTransport:
    tr = hub.open("ulaw", name=name)
    tr.set_remote("127.0.0.1", peer.port)
    return tr


async def test_each_call_reads_its_own_frames_in_the_format_it_asked(
    hub: EngineHub, peers: list[Peer]
) -> None:
    to = hub.engine.local_address
    wire, pcm8, pcm16 = (opened(hub, p, f"c{i}") for i, p in enumerate(peers))
    pcm8.set_inbound_format(Codec.PCM16, 8000)
    pcm16.set_inbound_format(Codec.PCM16, 16000)
    for _ in range(3):
        for i, p in enumerate(peers):
            p.send(to, frame(0x40 + i))
        hub.engine.tick()
    got = [drain(tr) for tr in (wire, pcm8, pcm16)]
    assert [len(g) for g in got] == [3, 3, 3]
    assert all(c == AudioChunk(frame(0x40), 8000, Codec.ULAW) for c in got[0])
    want8 = g711.ulaw_to_pcm16(frame(0x41))
    assert all(c.data == want8 and c.sample_rate == 8000 for c in got[1])
    assert all(c.codec is Codec.PCM16 and c.sample_rate == 16000 for c in got[2])
    assert len(got[2][2].data) == 640
    # the resampled constant settles to the 8 kHz value
    tail = np.frombuffer(got[2][2].data, "<i2")
    assert abs(int(tail[-1]) - int(np.frombuffer(g711.ulaw_to_pcm16(frame(0x42)), "<i2")[0])) < 64
    assert wire.stats.frames_in == 3
    assert wire.inbound_payload_types == {0}  # as RtpTransport keeps them


async def test_frames_iterates_and_ends_when_closed(hub: EngineHub, peers: list[Peer]) -> None:
    tr = opened(hub, peers[0])
    peers[0].send(hub.engine.local_address, frame(0x33))
    hub.engine.tick()

    async def read() -> list[AudioChunk]:
        return [c async for c in tr.frames()]

    reader = asyncio.ensure_future(read())
    await asyncio.sleep(0)
    await tr.close()
    got = await asyncio.wait_for(reader, 2)
    assert [c.data for c in got] == [frame(0x33)]
    with pytest.raises(CallEnded):
        await tr.send(AudioChunk(frame(0x10), 8000, Codec.ULAW))
    assert len(hub.engine) == 0 and len(hub) == 0


async def test_sent_audio_goes_out_as_is_one_frame_a_tick_then_silence(
    hub: EngineHub, peers: list[Peer]
) -> None:
    tr = opened(hub, peers[0])
    other = opened(hub, peers[1], "idle")
    await tr.send(AudioChunk(frame(0x11) + frame(0x12), 8000, Codec.ULAW))
    assert tr.queued_ms == 40
    for _ in range(2 + 3 + 1):  # two frames, three empty slots (hangover), silence
        hub.engine.tick()
    sent = peers[0].received()
    assert [p.payload for p in sent] == [frame(0x11), frame(0x12), frame(0xFF)]
    assert sent[2].marker and not sent[1].marker  # the empty slots: a marker after them
    assert sent[2].timestamp - sent[1].timestamp == 160 * 4
    assert tr.played_ms == 40 and tr.stats.frames_out == 2 and tr.stats.underruns == 1
    assert tr.stats.silence_out == 1
    # the idle call sends silence every tick and plays nothing
    assert [p.payload for p in peers[1].received()] == [frame(0xFF)] * 6
    assert other.played_ms == 0 and other.stats.silence_out == 6


async def test_a_tick_sends_the_calls_audio_before_it_reads(
    hub: EngineHub, peers: list[Peer]
) -> None:
    """The packets of a tick leave first; its inbound frames are read after (they once
    waited for 200 calls' read and hand-over: 1-2 ms past the deadline)."""
    tr = opened(hub, peers[0])
    engine = hub.engine
    steps: list[str] = []
    mm = engine._mm
    recv, send = mm.recv, mm.send

    def recv_noted() -> int:
        steps.append("read")
        return recv()

    def send_noted(m: int) -> int:
        steps.append("send")
        return send(m)

    mm.recv = recv_noted  # type: ignore[method-assign]
    mm.send = send_noted  # type: ignore[method-assign]
    await tr.send(AudioChunk(frame(0x11), 8000, Codec.ULAW))
    peers[0].send(engine.local_address, frame(0x22))
    engine.tick()
    assert steps == ["send", "read"]
    assert [p.payload for p in peers[0].received()] == [frame(0x11)]
    assert [c.data for c in drain(tr)] == [frame(0x22)]  # the inbound still delivered
    assert tr.stats.frames_out == 1


async def test_a_failing_outbound_step_sends_silence_and_still_reads(
    hub: EngineHub, peers: list[Peer], monkeypatch: pytest.MonkeyPatch
) -> None:
    tr = opened(hub, peers[0])
    engine = hub.engine

    def broken() -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(engine, "before_read", broken)
    peers[0].send(engine.local_address, frame(0x22))
    engine.tick()
    assert [p.payload for p in peers[0].received()] == [frame(0xFF)]
    assert [c.data for c in drain(tr)] == [frame(0x22)]
    assert engine.stats.handler_errors == 1


def _behind(tr: EngineTransport, last_sent: int) -> int:
    """Frames of the stream received and not yet handed on."""
    exp = tr.stream.expected_sequence
    assert exp is not None
    return (last_sent + 1 - exp) & 0xFFFF


@pytest.mark.parametrize(("code", "caught_up"), [(0xFF, True), (0x00, False)])
async def test_after_a_stall_a_stream_catches_up_in_quiet_frames_only(
    hub: EngineHub, peers: list[Peer], code: int, caught_up: bool
) -> None:
    """15 packets read in one tick (the ticker stalled 300 ms): the stream played 5
    frames behind for the rest of the call; now it skips quiet frames, one a tick,
    down to one frame held, and never skips speech (0x00: mu-law's loudest)."""
    tr = opened(hub, peers[0])
    to, engine = hub.engine.local_address, hub.engine
    seq = 100
    for _ in range(3):
        peers[0].send(to, frame(code), seq=seq)
        seq += 1
        engine.tick()
    assert len(drain(tr)) == 3
    for _ in range(15):  # the stall
        peers[0].send(to, frame(code), seq=seq)
        seq += 1
    engine.tick()
    # the rest of the pile-up was dropped (max_backlog); a quiet stream skips one already
    assert _behind(tr, seq - 1) == (4 if caught_up else 5)
    handed = len(drain(tr))
    for _ in range(10):
        peers[0].send(to, frame(code), seq=seq)
        seq += 1
        engine.tick()
        handed += len(drain(tr))
    assert handed == 1 + 10  # still one frame a tick to the reader
    if caught_up:
        assert _behind(tr, seq - 1) == 1 and tr.stream.caught_up == 4
    else:
        assert _behind(tr, seq - 1) == 5 and tr.stream.caught_up == 0


async def test_pcm_at_any_rate_is_converted_before_the_tick(
    hub: EngineHub, peers: list[Peer]
) -> None:
    tr = opened(hub, peers[0])
    pcm = np.full(320, 1000, "<i2").tobytes()  # 20 ms at 16 kHz
    await tr.send(AudioChunk(pcm * 3, 16000, Codec.PCM16))
    for _ in range(3):
        hub.engine.tick()
    sent = peers[0].received()
    assert len(sent) == 3 and tr.played_ms == 60
    assert sent[2].payload == g711.pcm16_to_ulaw(np.full(160, 1000, "<i2").tobytes())


async def test_flush_stops_playback_at_the_next_slot(hub: EngineHub, peers: list[Peer]) -> None:
    tr = opened(hub, peers[0])
    await tr.send(AudioChunk(frame(0x11) * 10, 8000, Codec.ULAW))
    hub.engine.tick()
    await tr.flush()
    assert tr.queued_ms == 0
    hub.engine.tick()
    hub.engine.tick()
    assert [p.payload for p in peers[0].received()] == [frame(0x11), frame(0xFF), frame(0xFF)]
    assert tr.played_ms == 20


async def test_nothing_is_sent_or_played_before_the_remote_is_known(
    hub: EngineHub, peers: list[Peer]
) -> None:
    tr = hub.open("ulaw", name="c")
    await tr.send(AudioChunk(frame(0x11), 8000, Codec.ULAW))
    hub.engine.tick()
    assert tr.played_ms == 0
    tr.set_remote("127.0.0.1", peers[0].port)
    hub.engine.tick()
    assert [p.payload for p in peers[0].received()] == [frame(0x11)]


async def test_only_the_remote_is_read_and_bad_packets_are_counted(
    hub: EngineHub, peers: list[Peer]
) -> None:
    tr = opened(hub, peers[0])
    to = hub.engine.local_address
    peers[1].send(to, frame(0x22))  # a stranger (no call has its address)
    peers[0].send(to, frame(0x21), seq=10)
    hub.engine.tick()
    peers[0].send(to, frame(0x21)[:100], seq=11)  # wrong size
    peers[0].rtp.payload_type = 8  # wrong payload type
    peers[0].send(to, frame(0x21), seq=11)
    peers[0].rtp.payload_type = 0
    peers[0].send(to, frame(0x24), seq=11 + 300)  # a spoofed jump from Asterisk's address
    peers[0].send(to, frame(0x23), seq=11)
    hub.engine.tick()
    assert [c.data for c in drain(tr)] == [frame(0x21), frame(0x23)]
    st = tr.stats
    assert (st.dropped_size, st.dropped_payload_type, st.late, st.resyncs) == (1, 1, 0, 0)
    assert hub.engine.stats.dropped_foreign_source == 1


async def test_a_lost_packet_is_handed_on_as_silence(hub: EngineHub, peers: list[Peer]) -> None:
    tr = opened(hub, peers[0])
    to = hub.engine.local_address
    peers[0].send(to, frame(0x31), seq=10)
    hub.engine.tick()
    peers[0].send(to, frame(0x32), seq=12)  # 11 lost
    hub.engine.tick()  # 11 is waited for a tick (it might come late)
    assert [c.data for c in drain(tr)] == [frame(0x31)]
    hub.engine.tick()
    assert [c.data for c in drain(tr)] == [frame(0xFF), frame(0x32)]
    assert tr.stats.lost == 1 and tr.stats.concealed == 1


async def test_only_g711_and_closing_the_hub_closes_its_calls(hub: EngineHub) -> None:
    with pytest.raises(ConfigError):
        hub.open("slin16", name="x")
    tr = hub.open("alaw", name="a")
    assert tr.wire_codec is Codec.ALAW
    await hub.aclose()
    assert tr.closed and hub.engine.closed


async def test_the_app_ticker_shares_one_hub_and_close_all_releases_it() -> None:
    ticker = Ticker()
    hub = EngineHub.shared(ticker, "127.0.0.1", range(31900, 31910))
    assert EngineHub.shared(ticker, "127.0.0.1", range(31900, 31910)) is hub
    assert 31900 <= hub.engine.local_address[1] < 31910
    assert len(ticker) == 1  # the engine ticks on the app's ticker
    await EngineHub.close_all(ticker)
    assert hub.engine.closed and len(ticker) == 0
    await ticker.aclose()


async def test_the_engine_resamples_inbound_only_while_a_call_reads_its_rate(
    hub: EngineHub, peers: list[Peer]
) -> None:
    to = hub.engine.local_address
    echo = opened(hub, peers[0], "echo")
    assert not hub.engine.resample_in  # wire-format readers need no resampling
    for _ in range(3):  # history that would be stale for a reader starting later
        peers[1].send(to, frame(0x10))
        hub.engine.tick()
    agent = opened(hub, peers[1], "agent")
    agent.set_inbound_format(Codec.PCM16, 16000)
    assert hub.engine.resample_in
    peers[1].send(to, frame(0xFF))  # digital silence
    peers[0].send(to, frame(0x20))
    hub.engine.tick()
    first = drain(agent)
    assert len(first) == 1 and not np.frombuffer(first[0].data, "<i2").any()  # starts clean
    assert [c.data for c in drain(echo)] == [frame(0x20)]
    await agent.close()
    assert not hub.engine.resample_in


async def test_learn_remote_takes_the_first_valid_sender_oldest_call_first(
    hub: EngineHub, peers: list[Peer]
) -> None:
    """No UNICASTRTP address from Asterisk: ``CallMedia`` sets ``learn_remote``."""
    to = hub.engine.local_address
    first, second = hub.open("ulaw", name="first"), hub.open("ulaw", name="second")
    first.learn_remote = second.learn_remote = True
    peers[2].rtp.payload_type = 8  # not the call's payload type: not taken
    peers[2].send(to, frame(0x30))
    peers[0].send(to, frame(0x31))
    peers[0].send(to, frame(0x32))  # the same sender again: the same call
    peers[1].send(to, frame(0x33))
    hub.engine.tick()
    hub.engine.tick()
    assert first.remote == ("127.0.0.1", peers[0].port)
    assert second.remote == ("127.0.0.1", peers[1].port)
    assert [c.data for c in drain(first)] == [frame(0x31), frame(0x32)]
    assert [c.data for c in drain(second)] == [frame(0x33)]
    assert hub.engine.stats.dropped_foreign_source == 1
    await first.send(AudioChunk(frame(0x34), 8000, Codec.ULAW))
    hub.engine.tick()
    assert frame(0x34) in [p.payload for p in peers[0].received()]
    assert [p.payload for p in peers[2].received()] == []  # the stranger gets nothing


async def test_without_learn_remote_an_unknown_sender_is_never_taken(
    hub: EngineHub, peers: list[Peer]
) -> None:
    tr = hub.open("ulaw", name="c")
    peers[0].send(hub.engine.local_address, frame(0x31))
    hub.engine.tick()
    assert tr.remote is None and drain(tr) == []
    assert hub.engine.stats.dropped_foreign_source == 1


async def test_the_last_call_gone_the_engine_stops_ticking_and_frees_its_port() -> None:
    """An idle app runs no ticker task and holds no socket (the Asterisk kill test found
    both outliving every call); the next call opens a new engine."""
    ticker = Ticker()
    hub = EngineHub.shared(ticker, "127.0.0.1", range(31910, 31920))
    first = hub.open("ulaw", name="a")
    second = hub.open("ulaw", name="b")
    await first.close()
    await asyncio.sleep(0)
    assert not hub.engine.closed and len(ticker) == 1  # a call is still on it
    port = hub.engine.local_address[1]
    await second.close()
    await asyncio.sleep(0)
    assert hub.engine.closed and len(ticker) == 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", port))  # the port is free again
    again = EngineHub.shared(ticker, "127.0.0.1", range(31910, 31920))
    assert again is not hub and not again.engine.closed and len(ticker) == 1
    call = again.open("ulaw", name="c")
    await EngineHub.close_all(ticker)
    assert call.closed and again.engine.closed and len(ticker) == 0
    await ticker.aclose()
