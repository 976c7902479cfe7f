"""AudioSocketServer/Transport against a TCP client on loopback playing Asterisk's part."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
import uuid
from collections.abc import AsyncIterator

import numpy as np
import pytest

from voxtra.errors import CallEnded, ConfigError, MediaError
from voxtra.media.audiosocket import (
    AudioSocketParser,
    Kind,
    Message,
    build_audio,
    build_dtmf,
    build_error,
    build_hangup,
    build_message,
    build_uuid,
)
from voxtra.media.audiosocket_transport import AudioSocketServer
from voxtra.media.frames import AudioChunk, Codec
from voxtra.media.transport import ControlMessageEvent, DtmfEvent, HangupEvent


class FakeAsterisk:
    """chan_audiosocket's side: connects, sends the UUID, then audio/DTMF/hangup."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = AudioSocketParser()
        self.silent = 0

    @classmethod
    async def dial(cls, address: str, call: uuid.UUID | None, extra: bytes = b"") -> FakeAsterisk:
        host, port = address.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        if call is not None:
            writer.write(build_uuid(call) + extra)
        return cls(reader, writer)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def receive(self, quiet: float = 0.15) -> list[tuple[float, Message]]:
        """Messages with arrival times until nothing comes for ``quiet`` seconds.

        Silence (all-zero audio, which the transport sends whenever nothing is queued)
        is counted in ``self.silent`` and left out: it never stops.
        """
        got: list[tuple[float, Message]] = []
        last = time.monotonic()
        while True:
            left = last + quiet - time.monotonic()
            try:
                if left <= 0:
                    return got
                data = await asyncio.wait_for(self.reader.read(65536), left)
            except TimeoutError:
                return got
            if not data:
                return got
            now = time.monotonic()
            for m in self.parser.feed(data):
                if m.kind == Kind.AUDIO and not any(m.payload):
                    self.silent += 1
                    continue
                got.append((now, m))
                last = now

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def server() -> AsyncIterator[AudioSocketServer]:
    async with AudioSocketServer("127.0.0.1", 0, claim_timeout=2.0) as srv:
        yield srv


def pcm(samples: int, rate: int = 8000, value: int | None = None) -> AudioChunk:
    if value is None:
        t = np.arange(samples)
        data = (8000 * np.sin(2 * np.pi * 440 * t / rate)).astype("<i2").tobytes()
    else:
        data = np.full(samples, value, "<i2").tobytes()
    return AudioChunk(data, rate, Codec.PCM16)


async def test_accept_before_and_after_the_connection(server: AudioSocketServer) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    waiting = asyncio.create_task(server.accept(a, timeout=2))
    await asyncio.sleep(0.02)
    peer_a = await FakeAsterisk.dial(server.advertised_address, a)
    server.expect(b)  # registered before Asterisk hears of it
    peer_b = await FakeAsterisk.dial(server.advertised_address, b)
    await asyncio.sleep(0.05)  # b connects before anyone asks for it
    try:
        tr_a = await waiting
        tr_b = await server.accept(str(b), timeout=1)
        assert (tr_a.uuid, tr_b.uuid) == (a, b)
        assert tr_a.wire_codec is Codec.PCM16 and tr_a.wire_rate == 8000
    finally:
        await tr_a.close()
        await tr_b.close()
        peer_a.close()
        peer_b.close()


async def test_inbound_audio_is_20ms_frames_and_dtmf_and_hangup_surface(
    server: AudioSocketServer,
) -> None:
    call = uuid.uuid4()
    first = np.arange(160, dtype="<i2").tobytes()
    # Audio that came in the same TCP segment as the UUID is not lost.
    peer = await FakeAsterisk.dial(
        server.advertised_address, server.expect(call), build_audio(first)
    )
    tr = await server.accept(call, timeout=1)
    events = []
    tr.on_event = events.append
    peer.send(build_audio(b"\x01\x00" * 240))  # 30 ms: one frame plus half of the next
    peer.send(build_dtmf("7"))
    peer.send(build_audio(b"\x02\x00" * 80))
    peer.send(build_hangup())
    got = [chunk async for chunk in tr.frames()]
    assert [len(c.data) for c in got] == [320, 320, 320]
    assert all(c.codec is Codec.PCM16 and c.sample_rate == 8000 for c in got)
    assert got[0].data == first
    assert got[2].data == b"\x01\x00" * 80 + b"\x02\x00" * 80
    assert events == [DtmfEvent("7"), HangupEvent("hangup")]
    assert tr.closed
    with pytest.raises(CallEnded):
        await tr.send(pcm(160))
    peer.close()


async def test_outbound_is_paced_320_byte_frames(server: AudioSocketServer) -> None:
    call = uuid.uuid4()
    peer = await FakeAsterisk.dial(server.advertised_address, server.expect(call))
    tr = await server.accept(call, timeout=1)
    try:
        for n in (37, 160, 1, 500, 999, 263, 40):  # 2000 samples = 250 ms at 8 kHz
            await tr.send(pcm(n))
        await tr.send(pcm(1000, 16000))  # 62.5 ms more, resampled to 8 kHz
        start = time.monotonic()
        got = await peer.receive(quiet=0.2)
        await tr.close()
        after = await peer.receive(quiet=0.5)
    finally:
        await tr.close()
        peer.close()
    audio = [(t, m) for t, m in got if m.kind == Kind.AUDIO]
    assert len(audio) == 16  # 312.5 ms: 15 whole frames and a padded tail
    assert all(len(m.payload) == 320 for _, m in audio)
    times = [t for t, _ in audio]
    span = times[-1] - times[0]
    assert 0.25 <= span <= 0.40  # 15 gaps of 20 ms, not one burst
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) < 0.06
    assert times[-1] - start <= 0.5
    # Closing locally ends with a hangup message so Asterisk drops the channel.
    assert [m.kind for _, m in after] == [Kind.HANGUP]


async def test_flush_stops_playback_and_played_ms_counts_frames(server: AudioSocketServer) -> None:
    call = uuid.uuid4()
    peer = await FakeAsterisk.dial(server.advertised_address, server.expect(call))
    tr = await server.accept(call, timeout=1)
    try:
        await tr.send(pcm(8000))  # one second
        await asyncio.sleep(0.2)
        await tr.flush()
        played = tr.played_ms
        assert 120 <= played <= 300 and tr.queued_ms == 0
        got = await peer.receive(quiet=0.15)
        assert len([m for _, m in got if m.kind == Kind.AUDIO]) * 20 == pytest.approx(
            played, abs=20
        )
        assert tr.played_ms == played
    finally:
        await tr.close()
        peer.close()


async def test_a_peer_that_stops_reading_keeps_the_audio_here_and_close_is_prompt(
    server: AudioSocketServer,
) -> None:
    """Asterisk frozen, its kernel still acknowledging: what it does not read stays in
    the bounded queue (flush drops it) instead of piling up in the socket's buffer,
    and close() does not wait for that buffer to drain."""
    call = server.expect(uuid.uuid4())
    host, port = server.local_address
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(raw, (host, port))
    _, writer = await asyncio.open_connection(sock=raw)
    writer.transport.pause_reading()  # nothing on this side reads from here on
    writer.write(build_uuid(call))
    tr = await server.accept(call, timeout=1)
    try:
        await tr.send(pcm(8000 * 30, value=1000))
        # Wait until nothing more leaves: the kernel's buffers on both sides are full.
        deadline = loop.time() + 10
        played, since = tr.played_ms, loop.time()
        while loop.time() - since < 0.5:
            assert loop.time() < deadline, f"{tr.played_ms} ms written to a peer not reading"
            await asyncio.sleep(0.05)
            if tr.played_ms != played:
                played, since = tr.played_ms, loop.time()
        assert played <= 8000 and tr.queued_ms == 30_000 - played
        await tr.flush()
        assert tr.queued_ms == 0
        await tr.send(pcm(8000, value=1000))
        await asyncio.wait_for(tr.close(), 2)
        assert tr.played_ms == played
    finally:
        await tr.close()
        writer.transport.abort()


async def test_peer_closing_the_socket_is_a_hangup(server: AudioSocketServer) -> None:
    call = uuid.uuid4()
    peer = await FakeAsterisk.dial(server.advertised_address, server.expect(call))
    tr = await server.accept(call, timeout=1)
    peer.close()
    events = [e async for e in tr.events()]
    assert len(events) == 1 and isinstance(events[0], HangupEvent)
    assert [c async for c in tr.frames()] == []
    await tr.close()


async def test_error_message_is_reported_not_fatal(server: AudioSocketServer) -> None:
    call = uuid.uuid4()
    peer = await FakeAsterisk.dial(server.advertised_address, server.expect(call))
    tr = await server.accept(call, timeout=1)
    try:
        peer.send(build_error(3))
        ev = await asyncio.wait_for(tr.events().__anext__(), 1)
        assert isinstance(ev, ControlMessageEvent)
        assert tr.peer_error is not None and tr.peer_error.code == 3
        assert not tr.closed
    finally:
        await tr.close()
        peer.close()


async def test_garbage_stream_ends_the_call(server: AudioSocketServer) -> None:
    call = uuid.uuid4()
    peer = await FakeAsterisk.dial(server.advertised_address, server.expect(call))
    tr = await server.accept(call, timeout=1)
    peer.send(bytes([Kind.DTMF, 0, 2]) + b"12")  # DTMF payload must be one digit
    events = [e async for e in tr.events()]
    assert isinstance(events[-1], HangupEvent) and "protocol" in events[-1].reason
    assert tr.stats.malformed == 1
    await tr.close()
    peer.close()


async def test_connections_without_a_uuid_are_rejected(server: AudioSocketServer) -> None:
    peer = await FakeAsterisk.dial(server.advertised_address, None)
    peer.send(build_message(Kind.AUDIO, b"\x00\x00"))  # audio before any UUID
    assert await peer.reader.read() == b""
    peer.close()
    assert server.rejected == 1
    with pytest.raises(MediaError, match="no AudioSocket connection"):
        await server.accept(uuid.uuid4(), timeout=0.1)
    with pytest.raises(ConfigError):
        await server.accept("not-a-uuid")


async def test_unclaimed_calls_are_hung_up() -> None:
    async with AudioSocketServer("127.0.0.1", 0, claim_timeout=0.2) as srv:
        peer = await FakeAsterisk.dial(srv.advertised_address, srv.expect(uuid.uuid4()))
        got = await peer.receive(quiet=0.6)
        assert [m.kind for _, m in got] == [Kind.HANGUP]
        peer.close()


async def test_server_close_closes_calls_and_bind_errors_are_media_errors() -> None:
    srv = AudioSocketServer("127.0.0.1", 0)
    await srv.start()
    call = uuid.uuid4()
    peer = await FakeAsterisk.dial(srv.advertised_address, srv.expect(call))
    tr = await srv.accept(call, timeout=1)
    port = srv.local_address[1]
    with pytest.raises(MediaError):
        await AudioSocketServer("127.0.0.1", port).start()
    await srv.close()
    assert tr.closed
    peer.close()
