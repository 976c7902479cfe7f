"""WebSocketMediaTransport against a loopback aiohttp server speaking chan_websocket."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np
import pytest
from aiohttp import WSMsgType, web

from voxtra.errors import CallEnded, ConfigError, MediaError
from voxtra.media.frames import AudioChunk, Codec
from voxtra.media.transport import (
    ControlMessageEvent,
    DtmfEvent,
    FlowEvent,
    HangupEvent,
    TransportEvent,
)
from voxtra.media.ws_transport import WebSocketMediaTransport, media_url

CONN = "9b5f0c2e-1111-4222-8333-444455556666"


def is_silence(data: bytes) -> bool:
    """A message of filler silence: mu-law 0xFF, A-law 0xD5 or PCM zeros throughout."""
    return bool(data) and data[0] in (0xFF, 0xD5, 0) and data.count(data[0]) == len(data)


@dataclass
class Session:
    """One accepted media WebSocket, as the fake Asterisk sees it."""

    ws: web.WebSocketResponse
    headers: dict[str, str]
    path: str
    binary: asyncio.Queue[bytes] = field(default_factory=asyncio.Queue)
    """BINARY messages, except the filler silence the transport sends while idle."""
    text: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    silence: list[tuple[float, int]] = field(default_factory=list)
    """(arrival time, bytes) of each filler silence message."""

    async def audio_within(self, seconds: float) -> bytes:
        """Every BINARY byte that arrives within ``seconds``."""
        out = b""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while (left := end - loop.time()) > 0:
            try:
                out += await asyncio.wait_for(self.binary.get(), left)
            except TimeoutError:
                break
        return out


class FakeAsterisk:
    """The chan_websocket side: MEDIA_START first (configurable), then whatever tests do."""

    def __init__(self) -> None:
        self.start_message: str | None = (
            f"MEDIA_START connection_id:{CONN} channel:WebSocket/{CONN} format:ulaw "
            "optimal_frame_size:160 ptime:20"
        )
        self.sessions: asyncio.Queue[Session] = asyncio.Queue()
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("media",))
        await ws.prepare(request)
        s = Session(ws, dict(request.headers), request.path)
        if self.start_message is not None:
            await ws.send_str(self.start_message)
        self.sessions.put_nowait(s)
        async for msg in ws:
            if msg.type is WSMsgType.BINARY:
                if is_silence(msg.data):
                    s.silence.append((asyncio.get_running_loop().time(), len(msg.data)))
                else:
                    s.binary.put_nowait(msg.data)
            elif msg.type is WSMsgType.TEXT:
                s.text.put_nowait(msg.data)
        return ws

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/media/{conn}", self.handler)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def connect(self, **kw: object) -> tuple[WebSocketMediaTransport, Session]:
        kw.setdefault("wire_format", "ulaw")
        tr = await WebSocketMediaTransport.connect(
            self.base_url,
            CONN,
            username="voxtra",
            password="secret",
            **kw,  # type: ignore[arg-type]
        )
        s = await asyncio.wait_for(self.sessions.get(), 2)
        return tr, s


@pytest.fixture
async def asterisk() -> AsyncIterator[FakeAsterisk]:
    fake = FakeAsterisk()
    await fake.start()
    yield fake
    assert fake.runner is not None
    await fake.runner.cleanup()


def ulaw_ms(ms: int, byte: int = 0x55) -> AudioChunk:
    return AudioChunk(bytes([byte]) * (8 * ms), 8000, Codec.ULAW)


def tone16(ms: int) -> AudioChunk:
    t = np.arange(16 * ms)
    return AudioChunk(
        (8000 * np.sin(2 * np.pi * 1000 * t / 16000)).astype("<i2").tobytes(), 16000, Codec.PCM16
    )


async def next_event(tr: WebSocketMediaTransport, timeout: float = 2.0) -> TransportEvent:
    it = tr.events().__aiter__()
    return await asyncio.wait_for(it.__anext__(), timeout)


def test_media_url_from_ari_urls() -> None:
    assert media_url("http://h:8088", "abc") == "ws://h:8088/media/abc"
    assert media_url("https://h:8089/ari/", "abc") == "wss://h:8089/media/abc"
    assert media_url("ws://h:8088", "abc") == "ws://h:8088/media/abc"
    with pytest.raises(ConfigError):
        media_url("ftp://h", "abc")
    with pytest.raises(ConfigError):
        media_url("http://h", "a/b")


async def test_connect_uses_media_subprotocol_auth_and_media_start(
    asterisk: FakeAsterisk,
) -> None:
    tr, s = await asterisk.connect()
    try:
        assert s.path == f"/media/{CONN}"
        assert s.ws.ws_protocol == "media"
        expected = "Basic " + base64.b64encode(b"voxtra:secret").decode()
        assert s.headers["Authorization"] == expected
        assert tr.media_start is not None and tr.media_start.optimal_frame_size == 160
        assert (tr.wire_codec, tr.wire_rate) == (Codec.ULAW, 8000)
    finally:
        await tr.close()


async def test_inbound_audio_is_reframed_to_20ms_and_close_ends_frames(
    asterisk: FakeAsterisk,
) -> None:
    tr, s = await asterisk.connect()
    try:
        await s.ws.send_bytes(bytes(range(160)))
        await s.ws.send_bytes(b"\x01" * 400)  # 2.5 frames: the half waits for the rest
        await s.ws.send_bytes(b"\x02" * 80)
        await s.ws.send_str("DTMF_END digit:#")
        await asyncio.sleep(0.05)
        await s.ws.close()
        got = [chunk async for chunk in tr.frames()]
        events = [e async for e in tr.events()]
    finally:
        await tr.close()
    assert [len(c.data) for c in got] == [160, 160, 160, 160]
    assert all(c.codec is Codec.ULAW and c.sample_rate == 8000 for c in got)
    assert got[0].data == bytes(range(160))
    assert got[3].data == b"\x01" * 80 + b"\x02" * 80
    assert events[0] == DtmfEvent("#")
    assert isinstance(events[-1], HangupEvent)
    assert tr.closed
    with pytest.raises(CallEnded):
        await tr.send(ulaw_ms(20))


async def test_outbound_goes_out_unpaced_in_whole_frames_and_played_ms_tracks_wall_clock(
    asterisk: FakeAsterisk,
) -> None:
    tr, s = await asterisk.connect()
    try:
        await tr.send(ulaw_ms(1000))
        data = await s.audio_within(0.3)
        # chan_websocket paces; we do not: the whole second arrives at once.
        assert len(data) == 8000
        assert tr.stats.frames_out == 50
        played = tr.played_ms
        assert 250 <= played <= 450  # about the 0.3 s since the first frame went out
        assert tr.played_ms + tr.queued_ms == pytest.approx(1000, abs=1)
        await asyncio.sleep(0.2)
        assert tr.played_ms - played == pytest.approx(200, abs=60)
    finally:
        await tr.close()


async def test_messages_are_whole_multiples_of_the_optimal_frame_size(
    asterisk: FakeAsterisk,
) -> None:
    tr, s = await asterisk.connect()
    sizes: list[int] = []
    try:
        for n in (7, 13, 29, 100, 91):  # 240 ms in odd pieces
            await tr.send(AudioChunk(b"\x11" * (8 * n), 8000, Codec.ULAW))
        end = asyncio.get_running_loop().time() + 0.6
        while (left := end - asyncio.get_running_loop().time()) > 0:
            try:
                sizes.append(len(await asyncio.wait_for(s.binary.get(), left)))
            except TimeoutError:
                break
    finally:
        await tr.close()
    assert sizes and all(n % 160 == 0 for n in sizes)
    assert sum(sizes) == 240 * 8


async def test_partial_tail_is_padded_with_silence_once_the_queue_runs_dry(
    asterisk: FakeAsterisk,
) -> None:
    tr, s = await asterisk.connect()
    try:
        await tr.send(ulaw_ms(110))
        first = await asyncio.wait_for(s.binary.get(), 1)
        assert first == b"\x55" * 800  # the whole frames go out at once
        await tr.send(ulaw_ms(5))  # the tail grows while Asterisk still plays
        tail = await asyncio.wait_for(s.binary.get(), 1)
    finally:
        await tr.close()
    assert tail == b"\x55" * 120 + b"\xff" * 40  # ulaw silence pads the last frame


async def test_xoff_holds_sends_until_xon(asterisk: FakeAsterisk) -> None:
    tr, s = await asterisk.connect()
    events: list[TransportEvent] = []
    tr.on_event = events.append
    try:
        await s.ws.send_str("MEDIA_XOFF")
        await asyncio.sleep(0.05)
        assert tr.xoff
        await tr.send(ulaw_ms(200))
        assert await s.audio_within(0.2) == b""
        assert tr.queued_ms == pytest.approx(200)
        await s.ws.send_str("MEDIA_XON")
        data = await s.audio_within(0.3)
        assert len(data) == 1600
    finally:
        await tr.close()
    assert events == [FlowEvent(True), FlowEvent(False)]


async def test_flush_sends_flush_media_drops_local_queue_and_freezes_played(
    asterisk: FakeAsterisk,
) -> None:
    tr, s = await asterisk.connect()
    try:
        await tr.send(ulaw_ms(2000))
        await s.audio_within(0.1)
        await s.ws.send_str("MEDIA_XOFF")
        await asyncio.sleep(0.05)
        await tr.send(ulaw_ms(500))  # held locally by XOFF
        assert tr.queued_ms > 1500
        await tr.flush()
        assert await asyncio.wait_for(s.text.get(), 1) == "FLUSH_MEDIA"
        played = tr.played_ms
        assert 100 <= played <= 400
        assert tr.queued_ms == 0
        await asyncio.sleep(0.1)
        assert tr.played_ms == played  # flushed audio is never counted as played
        # After a flush sending works again at once (the queue at Asterisk is empty).
        await tr.send(ulaw_ms(40))
        assert len(await s.audio_within(0.2)) == 320
    finally:
        await tr.close()


async def test_slin16_is_little_endian_pcm(asterisk: FakeAsterisk) -> None:
    asterisk.start_message = (
        "MEDIA_START connection_id:x channel:c format:slin16 optimal_frame_size:640"
    )
    tr, s = await asterisk.connect(wire_format="slin16")
    try:
        assert (tr.wire_codec, tr.wire_rate) == (Codec.PCM16, 16000)
        await tr.send(AudioChunk(np.full(320, 0x0102, "<i2").tobytes(), 16000, Codec.PCM16))
        data = await asyncio.wait_for(s.binary.get(), 1)
        assert len(data) == 640 and data[:4] == b"\x02\x01\x02\x01"
        await s.ws.send_bytes(np.full(320, 0x0304, "<i2").tobytes())
        chunk = await asyncio.wait_for(tr.frames().__anext__(), 1)
        assert chunk.sample_rate == 16000 and chunk.data[:2] == b"\x04\x03"
        await tr.send(tone16(100))  # 8 kHz/16 kHz PCM of any length is accepted
        assert len(await s.audio_within(0.3)) == 3200
    finally:
        await tr.close()


async def test_json_control_format_is_answered_in_json(asterisk: FakeAsterisk) -> None:
    asterisk.start_message = json.dumps(
        {"event": "MEDIA_START", "connection_id": CONN, "format": "ulaw", "optimal_frame_size": 160}
    )
    tr, s = await asterisk.connect()
    try:
        await s.ws.send_str(json.dumps({"event": "DTMF_END", "digit": "5"}))
        await s.ws.send_str(json.dumps({"event": "QUEUE_DRAINED"}))
        assert await next_event(tr) == DtmfEvent("5")
        other = await next_event(tr)
        assert isinstance(other, ControlMessageEvent)
        await tr.flush()
        assert json.loads(await asyncio.wait_for(s.text.get(), 1)) == {"command": "FLUSH_MEDIA"}
    finally:
        await tr.close()


async def test_no_media_start_or_wrong_format_is_a_media_error(asterisk: FakeAsterisk) -> None:
    asterisk.start_message = None
    with pytest.raises(MediaError, match="no MEDIA_START"):
        await WebSocketMediaTransport.connect(
            asterisk.base_url, CONN, username="u", password="p", start_timeout=0.3
        )
    asterisk.start_message = "MEDIA_START connection_id:x format:alaw optimal_frame_size:160"
    with pytest.raises(MediaError, match="alaw"):
        await WebSocketMediaTransport.connect(asterisk.base_url, CONN, username="u", password="p")


async def test_a_connect_cancelled_before_media_start_leaves_nothing_open(
    asterisk: FakeAsterisk,
) -> None:
    """The call ends while the attach waits for MEDIA_START: nobody gets a transport to
    close, so connect() itself must close the WebSocket and end its reader."""
    asterisk.start_message = None
    connecting = asyncio.ensure_future(
        WebSocketMediaTransport.connect(asterisk.base_url, CONN, username="u", password="p")
    )
    s = await asyncio.wait_for(asterisk.sessions.get(), 2)
    connecting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await connecting
    readers = [t for t in asyncio.all_tasks() if t.get_name().startswith("voxtra-ws-media")]
    assert readers == []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 2
    while not s.ws.closed:
        assert loop.time() < deadline, "the media WebSocket was left open"
        await asyncio.sleep(0.01)


async def test_unreachable_server_is_a_media_error() -> None:
    with pytest.raises(MediaError, match="cannot connect"):
        await WebSocketMediaTransport.connect(
            "http://127.0.0.1:1", CONN, username="u", password="p"
        )


async def test_malformed_control_is_counted_not_fatal(asterisk: FakeAsterisk) -> None:
    tr, s = await asterisk.connect()
    try:
        await s.ws.send_str("not a control message")
        await s.ws.send_str("DTMF_END digit:xx")
        await s.ws.send_str("DTMF_END digit:1")
        assert await next_event(tr) == DtmfEvent("1")
        assert tr.stats.malformed == 2 and not tr.closed
    finally:
        await tr.close()


async def test_hangup_sends_the_command(asterisk: FakeAsterisk) -> None:
    tr, s = await asterisk.connect()
    try:
        await tr.hangup()
        assert await asyncio.wait_for(s.text.get(), 1) == "HANGUP"
    finally:
        await tr.close()


async def test_unread_control_events_stay_bounded_and_the_last_ones_are_kept(
    asterisk: FakeAsterisk,
) -> None:
    """Nobody reads events(): 300 DTMF messages keep only the newest 64 (no growth)."""
    tr, s = await asterisk.connect(max_events=64)
    try:
        for i in range(300):
            await s.ws.send_str(f"DTMF_END digit:{i % 10}")
        await s.ws.send_str("DTMF_END digit:#")
        for _ in range(200):
            if tr.stats.dropped_events + 64 >= 301:
                break
            await asyncio.sleep(0.01)
        assert tr.stats.dropped_events == 301 - 64
        it = tr.events().__aiter__()
        kept = [await asyncio.wait_for(it.__anext__(), 1) for _ in range(64)]
        assert kept[-1] == DtmfEvent("#")
        assert kept[0] == DtmfEvent(str((301 - 64) % 10))
    finally:
        await tr.close()
