"""RtpTransport against a plain UDP peer on 127.0.0.1 (real sockets, real pacing)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import numpy as np
import pytest

from voxtra.media.frames import AudioChunk, Codec
from voxtra.media.rtp import RtpPacket
from voxtra.media.rtp_transport import RtpTransport


def is_silence(payload: bytes) -> bool:
    """A filler frame: mu-law 0xFF, A-law 0xD5 or PCM zeros throughout."""
    return (
        bool(payload)
        and payload[0] in (0xFF, 0xD5, 0)
        and payload.count(payload[0]) == len(payload)
    )


class Peer(asyncio.DatagramProtocol):
    """Stands in for Asterisk: a UDP socket that records what it gets."""

    def __init__(self) -> None:
        self.packets: asyncio.Queue[RtpPacket] = asyncio.Queue()
        self.sock: asyncio.DatagramTransport | None = None
        self.silent = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.sock = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.packets.put_nowait(RtpPacket.parse(data))

    @property
    def port(self) -> int:
        assert self.sock is not None
        return int(self.sock.get_extra_info("sockname")[1])

    def send_to(self, pkt: RtpPacket, port: int) -> None:
        assert self.sock is not None
        self.sock.sendto(pkt.build(), ("127.0.0.1", port))

    async def collect(self, quiet: float = 0.15, *, keep_silence: bool = False) -> list[RtpPacket]:
        """Packets until nothing but silence comes for ``quiet`` seconds.

        The transport sends a silence frame whenever nothing is queued, so the stream
        never stops: silence packets are counted in ``self.silent`` and left out
        (kept, with ``keep_silence``).
        """
        got = []
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            left = last + quiet - loop.time()
            if left <= 0:
                return got
            try:
                pkt = await asyncio.wait_for(self.packets.get(), left)
            except TimeoutError:
                return got
            if is_silence(pkt.payload):
                self.silent += 1
                if keep_silence:
                    got.append(pkt)
                continue
            got.append(pkt)
            last = loop.time()


@pytest.fixture
async def peer() -> AsyncIterator[Peer]:
    loop = asyncio.get_running_loop()
    sock, proto = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
    yield proto
    sock.close()


def pcm(samples: int, rate: int = 8000, value: int | None = None) -> AudioChunk:
    if value is None:
        t = np.arange(samples)
        data = (8000 * np.sin(2 * np.pi * 440 * t / rate)).astype("<i2").tobytes()
    else:
        data = np.full(samples, value, "<i2").tobytes()
    return AudioChunk(data, rate, Codec.PCM16)


async def test_one_second_of_mixed_lengths_is_50_paced_packets(peer: Peer) -> None:
    tr = await RtpTransport.open(
        "ulaw", bind_host="127.0.0.1", remote=("127.0.0.1", peer.port), name="t1"
    )
    try:
        sizes = [37, 160, 1, 500, 999, 263, 1200, 2000, 2840]  # 8000 samples in all
        assert sum(sizes) == 8000
        for n in sizes:
            await tr.send(pcm(n))
        assert tr.queued_ms == pytest.approx(1000.0)
        got = await peer.collect()
    finally:
        await tr.close()
    assert len(got) == 50
    assert all(len(p.payload) == 160 and p.payload_type == 0 for p in got)
    seqs = [p.sequence for p in got]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    ts = [p.timestamp for p in got]
    assert all((b - a) & 0xFFFFFFFF == 160 for a, b in itertools.pairwise(ts))
    assert got[0].marker and not any(p.marker for p in got[1:])
    assert len({p.ssrc for p in got}) == 1
    assert tr.stats.frames_out == 50 and tr.played_ms == 1000.0
    # The whole second went out at the 20 ms pace, so p99 lateness is well under a frame.
    assert tr.stats.pacing_jitter_ms(50) < 20.0


async def test_16k_input_is_resampled_to_8k_ulaw(peer: Peer) -> None:
    tr = await RtpTransport.open("ulaw", bind_host="127.0.0.1", remote=("127.0.0.1", peer.port))
    try:
        await tr.send(pcm(8000, 16000))  # half a second at 16 kHz
        got = await peer.collect()
    finally:
        await tr.close()
    assert len(got) in (25, 26)  # the padded tail may add one frame
    assert all(len(p.payload) == 160 for p in got)


async def test_slin16_is_big_endian_with_configurable_pt(peer: Peer) -> None:
    tr = await RtpTransport.open(
        "slin16", bind_host="127.0.0.1", remote=("127.0.0.1", peer.port), payload_type=96
    )
    try:
        assert (tr.wire_codec, tr.wire_rate) == (Codec.PCM16, 16000)
        await tr.send(pcm(320, 16000, value=0x0102))
        (pkt,) = await peer.collect()
    finally:
        await tr.close()
    assert pkt.payload_type == 96 and len(pkt.payload) == 640
    assert pkt.payload[:4] == b"\x01\x02\x01\x02"  # big-endian on the wire


async def test_inbound_reordered_packets_come_out_in_order(peer: Peer) -> None:
    tr = await RtpTransport.open("ulaw", bind_host="127.0.0.1", learn_remote=True)
    port = tr.local_address[1]
    order = [0, 2, 1, 3, 5, 4, 6, 7, 8]
    try:
        for s in order:
            peer.send_to(RtpPacket(0, 1000 + s, 160 * s, 7, bytes([s]) * 160), port)
        frames = []
        async for f in tr:
            frames.append(f)
            if len(frames) == len(order):
                break
        # Symmetric RTP: the remote was learned from the first packet.
        assert tr.remote == ("127.0.0.1", peer.port)
        assert tr.advertised_address == f"127.0.0.1:{port}"
    finally:
        await tr.close()
    assert [f.data[0] for f in frames] == sorted(order)
    assert all(f.codec is Codec.ULAW and f.samples == 160 for f in frames)
    assert tr.stats.reordered == 2 and tr.stats.frames_in == 9


async def test_inbound_loss_becomes_silence_and_is_counted(peer: Peer) -> None:
    tr = await RtpTransport.open("slin", bind_host="127.0.0.1", jitter_depth=2, learn_remote=True)
    port = tr.local_address[1]
    try:
        for s in [0, 1, 3, 4, 5]:
            payload = np.full(160, s + 1, ">i2").tobytes()  # big-endian slin from Asterisk
            peer.send_to(RtpPacket(10, s, 160 * s, 7, payload), port)
        peer.sock.sendto(b"\x00garbage", ("127.0.0.1", port))  # type: ignore[union-attr]
        it = tr.frames()
        frames = [await asyncio.wait_for(anext(it), 1) for _ in range(6)]
        await asyncio.sleep(0.05)
    finally:
        await tr.close()
    values = [int(np.frombuffer(f.data, "<i2")[0]) for f in frames]
    assert values == [1, 2, 0, 4, 5, 6]
    assert tr.stats.lost == 1 and tr.stats.malformed == 1


async def test_flush_drops_the_queue(peer: Peer) -> None:
    tr = await RtpTransport.open("ulaw", bind_host="127.0.0.1", remote=("127.0.0.1", peer.port))
    try:
        await tr.send(pcm(8000))
        await asyncio.sleep(0.1)
        await tr.flush()
        assert tr.queued_ms == 0
        got = await peer.collect()
        played = tr.played_ms
    finally:
        await tr.close()
    assert 2 <= len(got) <= 10  # only what went out before the flush (+1 in flight)
    assert played == len(got) * 20


async def test_bounded_queue_makes_send_wait(peer: Peer) -> None:
    tr = await RtpTransport.open(
        "ulaw", bind_host="127.0.0.1", remote=("127.0.0.1", peer.port), max_queue_ms=100
    )
    try:
        await tr.send(pcm(1600))  # 10 frames: over the 5-frame bound
        blocked = asyncio.ensure_future(tr.send(pcm(160)))
        await asyncio.sleep(0)
        assert not blocked.done()
        await asyncio.wait_for(blocked, 1)  # pacing frees space within a frame or two
    finally:
        await tr.close()


async def test_closed_transport_ends_frames_and_rejects_send() -> None:
    from voxtra.errors import CallEnded

    tr = await RtpTransport.open("alaw", bind_host="127.0.0.1")
    await tr.close()
    assert [f async for f in tr] == []
    with pytest.raises(CallEnded):
        await tr.send(pcm(160))


async def test_transports_share_one_ticker() -> None:
    from voxtra.media.pacer import Ticker

    ticker = Ticker()
    a = await RtpTransport.open("ulaw", bind_host="127.0.0.1", ticker=ticker)
    b = await RtpTransport.open("ulaw", bind_host="127.0.0.1", ticker=ticker)
    try:
        assert len(ticker) == 2  # an empty Ticker is falsy; it must still be used
    finally:
        await a.close()
        await b.close()
    assert len(ticker) == 0
    await ticker.aclose()


async def test_remote_is_learned_from_valid_rtp_only(peer: Peer) -> None:
    tr = await RtpTransport.open("ulaw", bind_host="127.0.0.1", learn_remote=True)
    port = tr.local_address[1]
    loop = asyncio.get_running_loop()
    stranger, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
    )
    try:
        stranger.sendto(b"\x00not rtp at all", ("127.0.0.1", port))
        await asyncio.sleep(0.06)  # a few ticks: the garbage is read and counted
        assert tr.remote is None and tr.stats.malformed == 1
        peer.send_to(RtpPacket(0, 1, 160, 7, b"\xff" * 160), port)
        frame = await asyncio.wait_for(anext(tr.frames()), 1)
        assert frame.data == b"\xff" * 160
        assert tr.remote == ("127.0.0.1", peer.port)
    finally:
        stranger.close()
        await tr.close()


async def test_echo_both_ways_keeps_order_numbering_and_stats(peer: Peer) -> None:
    """Inbound is drained on the ticks that also send: a full echo loop over loopback."""
    tr = await RtpTransport.open("ulaw", bind_host="127.0.0.1", jitter_depth=2, learn_remote=True)
    port = tr.local_address[1]

    async def echo() -> None:
        async for f in tr:
            await tr.send(f)

    task = asyncio.create_task(echo())
    try:
        # in order, then a duplicate, a swap, and one lost packet (seq 14)
        order = [*range(10), 9, 11, 10, 12, 13, 15, 16, 17, 18, 19]
        for s in order:
            peer.send_to(RtpPacket(0, 500 + s, 160 * s, 9, bytes([s]) * 160), port)
            await asyncio.sleep(0.005)
        got = await peer.collect(0.3, keep_silence=True)
    finally:
        await tr.close()
        task.cancel()
    # The lost packet is echoed as a frame of silence (frames_out counts it); on the
    # wire it looks like the filler silence sent while nothing is queued.
    audio = [p.payload[0] for p in got if not (p.payload[0] == 0xFF and is_silence(p.payload))]
    assert audio == [*range(14), *range(15, 20)]
    assert all(len(p.payload) == 160 for p in got)
    assert all((b.sequence - a.sequence) & 0xFFFF == 1 for a, b in itertools.pairwise(got))
    st = tr.stats
    assert (st.duplicates, st.reordered, st.lost) == (1, 1, 1)
    assert st.frames_in == 20 and st.frames_out == 20


async def test_close_releases_socket_and_tick_and_wakes_every_reader() -> None:
    from voxtra.media.pacer import Ticker

    ticker = Ticker()
    tr = await RtpTransport.open("ulaw", bind_host="127.0.0.1", ticker=ticker)
    port = tr.local_address[1]
    waiting = [asyncio.create_task(anext(tr.frames(), None)) for _ in range(2)]
    cancelled = asyncio.create_task(anext(tr.frames(), None))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    await tr.close()
    assert await asyncio.wait_for(asyncio.gather(*waiting), 1) == [None, None]
    assert len(ticker) == 0
    again = await RtpTransport.open("ulaw", bind_host="127.0.0.1", bind_port=port, ticker=ticker)
    await again.close()  # the port was really released
    await ticker.aclose()


async def test_inbound_format_converts_many_calls_at_once_like_one_at_a_time(peer: Peer) -> None:
    """set_inbound_format: ulaw on the wire, PCM16 at 16 kHz out, batched across calls.

    Each call must get exactly what a lone per-frame converter makes of its stream,
    lost packets included (as converted silence), and in order.
    """
    from voxtra.media import g711
    from voxtra.media.convert import ChunkConverter
    from voxtra.media.pacer import Ticker

    ticker = Ticker()
    calls = [
        await RtpTransport.open("ulaw", bind_host="127.0.0.1", ticker=ticker, learn_remote=True)
        for _ in range(3)
    ]
    for tr in calls:
        tr.set_inbound_format(Codec.PCM16, 16000)
        assert tr.inbound_format == (Codec.PCM16, 16000)
    t = np.arange(160 * 12)
    streams = []
    for k, tr in enumerate(calls):
        pcm = (6000 * np.sin(2 * np.pi * (300 + 200 * k) * t / 8000)).astype("<i2").tobytes()
        wire = g711.pcm16_to_ulaw(pcm)
        frames = [wire[i : i + 160] for i in range(0, len(wire), 160)]
        streams.append(frames)
        for s, f in enumerate(frames):
            if k == 1 and s == 4:
                continue  # lost: must come out as (converted) silence
            peer.send_to(RtpPacket(0, 100 + s, 160 * s, 50 + k, f), tr.local_address[1])
    try:
        got = []
        for tr in calls:
            it = tr.frames()
            got.append([await asyncio.wait_for(anext(it), 1) for _ in range(12)])
    finally:
        for tr in calls:
            await tr.close()
        await ticker.aclose()
    for k, frames in enumerate(streams):
        ref = ChunkConverter(Codec.PCM16, 16000)
        silence = AudioChunk.silence(Codec.ULAW)
        want = [
            ref.convert(silence if (k == 1 and s == 4) else AudioChunk(f)).data
            for s, f in enumerate(frames)
        ]
        assert all(c.codec is Codec.PCM16 and c.sample_rate == 16000 for c in got[k])
        for g, w in zip(got[k], want, strict=True):
            a = np.frombuffer(g.data, "<i2").astype(int)
            b = np.frombuffer(w, "<i2").astype(int)
            assert len(a) == len(b) == 320
            assert np.max(np.abs(a - b)) <= 1
    assert calls[1].stats.lost == 1


async def test_inbound_format_same_rate_and_back_to_wire(peer: Peer) -> None:
    tr = await RtpTransport.open("alaw", bind_host="127.0.0.1", learn_remote=True)
    port = tr.local_address[1]
    try:
        tr.set_inbound_format(Codec.PCM16, 8000)  # decode only, no resampling
        peer.send_to(RtpPacket(8, 1, 0, 3, b"\xd5" * 160), port)
        first = await asyncio.wait_for(anext(tr.frames()), 1)
        quiet = np.full(160, 8, "<i2").tobytes()  # A-law's smallest level: it has no zero
        assert (first.codec, first.sample_rate, first.data) == (Codec.PCM16, 8000, quiet)
        tr.set_inbound_format(Codec.ALAW, 8000)  # the wire format: as received
        assert tr.inbound_format == (Codec.ALAW, 8000)
        peer.send_to(RtpPacket(8, 2, 160, 3, b"\x55" * 160), port)
        second = await asyncio.wait_for(anext(tr.frames()), 1)
        assert (second.codec, second.data) == (Codec.ALAW, b"\x55" * 160)
        from voxtra.errors import MediaError

        with pytest.raises(MediaError):
            tr.set_inbound_format(Codec.ULAW, 16000)
    finally:
        await tr.close()


def _simulate_ticks(
    framer: object, pushes: list[AudioChunk], ticks_between: int
) -> tuple[list[bytes], int]:
    """What a transport sends: one frame per tick, deferred frames converted when due."""
    from collections import deque

    from voxtra.media.transport import OutboundFramer

    assert isinstance(framer, OutboundFramer)
    out: deque[bytes] = deque()
    sent: list[bytes] = []
    converted = [0]

    def tick() -> None:
        if not out and framer.deferred_frames:
            deferred = framer.pop_deferred()
            assert deferred is not None
            rs, pcm = deferred
            frames = framer.take_converted(rs.process(pcm))
            assert len(frames) == 1  # whole frames in, exactly one frame out
            sent.append(frames[0])
            converted[0] += 1
            return
        if not out:
            out.extend(framer.finish())
        if out:
            sent.append(out.popleft())

    for chunk in pushes:
        out.extend(framer.push(chunk))
        for _ in range(ticks_between):
            tick()
    for _ in range(400):
        tick()
    return sent, converted[0]


@pytest.mark.parametrize("ticks_between", [0, 1, 3])
def test_deferred_framing_sends_exactly_what_immediate_framing_sends(ticks_between: int) -> None:
    from voxtra.media.transport import OutboundFramer

    t16 = pcm(16000 * 3 // 4, 16000).data
    pushes = [AudioChunk(t16[i : i + 1234], 16000, Codec.PCM16) for i in range(0, len(t16), 1234)]
    pushes += [pcm(800), pcm(4800, 24000), pcm(320, 16000)]  # rate changes mid-stream
    pushes += [AudioChunk(b"\x7e" * 160), pcm(640, 16000), pcm(6400, 16000)]
    deferred = OutboundFramer(Codec.ULAW, 8000, defer=True)
    immediate = OutboundFramer(Codec.ULAW, 8000)
    a, n_deferred = _simulate_ticks(deferred, pushes, ticks_between)
    b, n_none = _simulate_ticks(immediate, pushes, ticks_between)
    assert n_none == 0 and (n_deferred >= 20 or ticks_between == 0)  # deferral really ran
    assert len(a) == len(b) >= 77  # about 1.5 s of audio
    assert a == b


async def test_wideband_sends_are_resampled_for_all_calls_at_once(peer: Peer) -> None:
    from voxtra.media import g711
    from voxtra.media.pacer import Ticker
    from voxtra.media.transport import OutboundFramer

    ticker = Ticker()
    remote = ("127.0.0.1", peer.port)
    calls = [
        await RtpTransport.open("ulaw", bind_host="127.0.0.1", remote=remote, ticker=ticker)
        for _ in range(3)
    ]
    sources = [pcm(16000, 16000, value=None).data, pcm(16000, 16000, value=900).data]
    sources.append(pcm(16000, 16000).data[::-1])
    try:
        for tr, src in zip(calls, sources, strict=True):
            for i in range(0, len(src), 1000):  # uneven pieces, as TTS delivers them
                await tr.send(AudioChunk(src[i : i + 1000], 16000, Codec.PCM16))
            assert tr.queued_ms == pytest.approx(1000.0)
        got = await peer.collect(0.3)
    finally:
        for tr in calls:
            await tr.close()
        await ticker.aclose()
    by_ssrc: dict[int, list[RtpPacket]] = {}
    for p in got:
        by_ssrc.setdefault(p.ssrc, []).append(p)
    for tr, src in zip(calls, sources, strict=True):
        pkts = by_ssrc[tr.sender.ssrc]
        assert len(pkts) == 51  # 50 frames + the filter tail padded out
        assert all((b.sequence - a.sequence) & 0xFFFF == 1 for a, b in itertools.pairwise(pkts))
        # the stream's first packet has it; the tail of audio queued ahead of time
        # follows the last whole frame at once (no hangover: nothing more is coming)
        assert not any(p.marker for p in pkts[1:])
        ref = OutboundFramer(Codec.ULAW, 8000)
        want = ref.push(AudioChunk(src, 16000, Codec.PCM16)) + ref.finish()
        a = np.frombuffer(g711.ulaw_to_pcm16(b"".join(p.payload for p in pkts)), "<i2")
        b = np.frombuffer(g711.ulaw_to_pcm16(b"".join(want)), "<i2")
        # one mu-law step at most (float summation order in the batched filter)
        assert np.max(np.abs(a.astype(int) - b.astype(int))) <= max(8, np.max(np.abs(b)) // 16)
        assert tr.played_ms == 51 * 20


async def test_deferred_frames_count_for_the_bound_and_flush(peer: Peer) -> None:
    tr = await RtpTransport.open(
        "ulaw", bind_host="127.0.0.1", remote=("127.0.0.1", peer.port), max_queue_ms=100
    )
    try:
        await tr.send(pcm(3200, 16000))  # 10 frames at 16 kHz: over the 5-frame bound
        assert tr.queued_ms == pytest.approx(200.0)
        blocked = asyncio.ensure_future(tr.send(pcm(320, 16000)))
        await asyncio.sleep(0)
        assert not blocked.done()
        await asyncio.wait_for(blocked, 1)
        await tr.send(pcm(16000, 16000))
        await tr.flush()
        assert tr.queued_ms == 0
        await asyncio.sleep(0.1)
        sent = tr.stats.frames_out
        await asyncio.sleep(0.1)
        assert tr.stats.frames_out == sent  # nothing more after the flush
    finally:
        await tr.close()
