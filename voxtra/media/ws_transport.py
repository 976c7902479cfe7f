"""chan_websocket media (Asterisk 20.16+/22.6+): ExternalMedia over a WebSocket.

ARI's ``externalMedia`` with ``transport=websocket``, ``encapsulation=none`` and
``connection_type=server`` creates a channel that waits for us to connect to
``ws://ASTERISK:8088/media/<MEDIA_WEBSOCKET_CONNECTION_ID>`` (subprotocol ``media``).
BINARY frames carry raw audio in the channel's format (``slin``/``slin16`` are
little-endian here, unlike RTP); TEXT frames carry control (:mod:`voxtra.media.chanws`).

Outbound pacing is chan_websocket's job: it queues what we send (up to about 1000
frames) and plays 20 ms per tick. So frames go out as soon as they are queued, until
Asterisk says ``MEDIA_XOFF``; the rest waits in our bounded local queue until
``MEDIA_XON``. ``flush()`` sends ``FLUSH_MEDIA`` so Asterisk drops its queue too.

Because the queue that matters is inside Asterisk, ``played_ms`` cannot be counted
from frames sent. It is estimated on the wall clock: audio sent since the current
talk-spurt began plays at 1x from the moment its first frame was sent, so what has
played of the spurt is ``min(sent_ms, elapsed_ms)``. A spurt ends when that estimate
catches up with what was sent (Asterisk's queue ran dry); its length is then added
to the finished total. ``flush()`` closes the spurt at the estimate, so flushed audio
is never counted. ``queued_ms`` is our local queue plus the estimated backlog inside
Asterisk, so ``played_ms + queued_ms`` is everything accepted by ``send``.

Idle, we keep Asterisk's queue from running dry with silence: chan_websocket plays
only what it was sent. Measured (Asterisk 22.10, a pjsua2 phone in the call): with
nothing sent over the WebSocket the phone got no RTP at all (0 packets in 5 s); with
silence sent it got a packet every 20 ms. A frame of silence goes out when the
estimated remote backlog has been dry for ``_IDLE_HANGOVER_S`` after audio (at once
when idle already), and the next one 20 ms after it on the same
timeline (not "now + 20 ms", which would drift by our timer's lateness every frame),
so Asterisk holds at most about a frame of it: audio sent after idling starts at most
that much later, and a spurt's played estimate starts where the silence ahead of it
ends. Audio that streams in at 1x (an echo, a streaming TTS) keeps the backlog above
zero and gets no silence between its frames: a first version that topped the backlog
up to 20 ms put a silence frame after nearly every echoed frame (the echo test heard
14 pieces instead of one). Silence counts in ``stats.silence_out`` only, never in
``played_ms``/``queued_ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from pydantic import SecretStr

from voxtra.errors import ConfigError, MediaError
from voxtra.media.chanws import (
    ChanWsProtocolError,
    Command,
    CommandRejected,
    ControlFormat,
    DtmfEnd,
    MediaStart,
    MediaXoff,
    MediaXon,
    build_command,
    parse_control,
)
from voxtra.media.frames import FRAME_MS, AudioChunk, Codec
from voxtra.media.resample import Quality
from voxtra.media.transport import (
    ControlMessageEvent,
    DtmfEvent,
    FlowEvent,
    HangupEvent,
    MediaTransport,
)

__all__ = ["WS_FORMATS", "WebSocketMediaTransport", "WsFormat", "media_url"]

logger = logging.getLogger(__name__)

MAX_MESSAGE = 65500
"""chan_websocket closes the socket (and hangs up) on larger messages."""

_BATCH_FRAMES = 10
"""Frames coalesced into one BINARY message when several are queued (200 ms)."""


_TAIL_MARGIN_MS = 10.0
"""A partial last frame is padded and sent when Asterisk has this much left to play."""

_IDLE_HANGOVER_S = 0.06
"""Idle silence starts only once Asterisk's queue has been dry this long after audio.
Audio streamed at 1x (an echo) arrives with some jitter; silence put in the moment the
estimated backlog touched zero stayed in Asterisk's queue ahead of the late frame, a
real 20 ms hole in the audio (a CI run's slin16 echo came back in two pieces, 10 ms
apart). A late frame without silence only delays a packet, which the phone's jitter
buffer absorbs; 60 ms covers that jitter and keeps the idle gap well under what NAT
bindings and SBCs time out on."""

_SILENCE_CONTIGUOUS_S = 0.005
"""Idle silence continues the timeline of what was sent before it when that ran out
at most this long ago (our timer's usual lateness); after a longer stall it restarts
at now rather than bursting frames out to catch up."""


@dataclass(frozen=True, slots=True)
class WsFormat:
    name: str
    codec: Codec
    rate: int


WS_FORMATS: dict[str, WsFormat] = {
    "ulaw": WsFormat("ulaw", Codec.ULAW, 8000),
    "alaw": WsFormat("alaw", Codec.ALAW, 8000),
    "slin": WsFormat("slin", Codec.PCM16, 8000),
    "slin16": WsFormat("slin16", Codec.PCM16, 16000),
}


def media_url(base_url: str, connection_id: str) -> str:
    """``ws://host:port/media/<id>`` from an ARI base URL (http, https, ws or wss)."""
    base = base_url.rstrip("/")
    if base.endswith("/ari"):
        base = base[: -len("/ari")]
    if base.startswith("http://"):
        base = "ws://" + base[len("http://") :]
    elif base.startswith("https://"):
        base = "wss://" + base[len("https://") :]
    elif not base.startswith(("ws://", "wss://")):
        raise ConfigError(f"base_url must be an http(s) or ws(s) URL, got {base_url!r}")
    if not connection_id or "/" in connection_id:
        raise ConfigError(f"invalid media connection id {connection_id!r}")
    return f"{base}/media/{connection_id}"


class WebSocketMediaTransport(MediaTransport):
    """One call's chan_websocket media. Create with ``await ...connect(...)``."""

    def __init__(
        self,
        wire_format: str = "ulaw",
        *,
        connection_id: str = "",
        max_queue_ms: int = 60_000,
        resample_quality: Quality = "HQ",
        clock: Callable[[], float] = time.monotonic,
        max_events: int = 64,
    ) -> None:
        fmt = WS_FORMATS.get(wire_format)
        if fmt is None:
            raise ConfigError(
                f"unknown WebSocket wire format {wire_format!r}; use {list(WS_FORMATS)}"
            )
        super().__init__(
            fmt.codec,
            fmt.rate,
            max_queue_ms=max_queue_ms,
            resample_quality=resample_quality,
            max_events=max_events,
        )
        self.wire_format = fmt
        self.connection_id = connection_id
        self.media_start: MediaStart | None = None
        self.control_format = ControlFormat.TEXT
        self.xoff = False
        self._clock = clock
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._session: aiohttp.ClientSession | None = None
        self._own_session = False
        self._started = asyncio.Event()
        self._ended = asyncio.Event()
        self._wake = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._frame_bytes = AudioChunk.frame_bytes(fmt.codec, fmt.rate)
        self._send_unit = self._frame_bytes  # bytes per message multiple (optimal size)
        self._pending = b""  # outbound bytes not yet a whole optimal-size unit
        self._in_buf = b""  # inbound bytes not yet a whole 20 ms frame
        # played_ms estimate (see the module docstring)
        self._played_done_ms = 0.0
        self._spurt_start: float | None = None
        self._spurt_sent_ms = 0.0
        self._silence_until = 0.0  # clock time the silence queued in Asterisk runs out
        self._idle = True  # the last thing sent was silence (or nothing yet)
        self._silence_unit = b""  # one send unit of silence, made when first needed

    # --- construction ---------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        base_url: str,
        connection_id: str,
        *,
        username: str,
        password: str | SecretStr,
        wire_format: str = "ulaw",
        session: aiohttp.ClientSession | None = None,
        start_timeout: float = 5.0,
        **kwargs: object,
    ) -> WebSocketMediaTransport:
        """Connect to Asterisk's media WebSocket and wait for ``MEDIA_START``.

        ``connection_id`` is the channel's ``MEDIA_WEBSOCKET_CONNECTION_ID``. Raises
        ``MediaError`` if the connection fails or no ``MEDIA_START`` comes in time.
        """
        self = cls(wire_format, connection_id=connection_id, **kwargs)  # type: ignore[arg-type]
        url = media_url(base_url, connection_id)
        if session is None:
            session = aiohttp.ClientSession()
            self._own_session = True
        self._session = session
        # Imported here: the ARI client is a heavier module and only the header is needed.
        from voxtra.ari.client import basic_auth_header

        refused: MediaError | None = None
        try:
            self._ws = await session.ws_connect(
                url,
                protocols=("media",),
                headers={"Authorization": basic_auth_header(username, password)},
                autoping=True,
                heartbeat=None,
                max_msg_size=1 << 20,
                timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
            )
        except aiohttp.ClientResponseError as exc:
            # Not chained: its request_info holds our headers, the password included.
            refused = MediaError(f"cannot connect media WebSocket {url}: {exc}")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            await self._close_session()
            raise MediaError(f"cannot connect media WebSocket {url}: {exc}") from exc
        except BaseException:
            # Cancelled (the call ended while attaching): the session is ours to close.
            await self._close_session()
            raise
        if refused is not None:
            await self._close_session()
            raise refused from None
        self._reader = asyncio.get_running_loop().create_task(
            self._read(), name=f"voxtra-ws-media-read-{connection_id}"
        )
        try:
            await asyncio.wait_for(self._wait_started(), start_timeout)
        except TimeoutError:
            await self.close()
            raise MediaError(f"no MEDIA_START from {url} within {start_timeout} s") from None
        except BaseException:
            # Cancelled while waiting for MEDIA_START: the caller never gets this
            # transport to close, and the reader task and the WebSocket were left open
            # until Asterisk closed it (a fake that never does: for ever).
            await self.close()
            raise
        if self._closed:
            await self.close()
            raise MediaError(
                f"media WebSocket {url} closed before MEDIA_START: {self.close_reason}"
            )
        return self

    async def _wait_started(self) -> None:
        started = asyncio.ensure_future(self._started.wait())
        ended = asyncio.ensure_future(self._ended.wait())
        try:
            await asyncio.wait({started, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            started.cancel()
            ended.cancel()

    def _mark_closed(self, reason: str) -> None:
        super()._mark_closed(reason)
        self._ended.set()
        self._wake.set()

    @property
    def call_id(self) -> str:
        return self.connection_id or "websocket"

    # --- position bookkeeping -------------------------------------------------------

    def _spurt_played(self, now: float) -> float:
        if self._spurt_start is None:
            return 0.0
        # The start is in the future while silence sent before the spurt still plays.
        return min(self._spurt_sent_ms, max(0.0, (now - self._spurt_start) * 1000.0))

    def _remote_backlog_ms(self, now: float | None = None) -> float:
        now = self._clock() if now is None else now
        return self._spurt_sent_ms - self._spurt_played(now)

    def _close_spurt(self, now: float) -> None:
        self._played_done_ms += self._spurt_played(now)
        self._spurt_start = None
        self._spurt_sent_ms = 0.0

    def _account_sent(self, ms: float) -> None:
        now = self._clock()
        if self._spurt_start is not None and self._remote_backlog_ms(now) <= 0.0:
            self._close_spurt(now)  # Asterisk's queue ran dry: a new spurt starts
        if self._spurt_start is None:
            self._spurt_start = max(now, self._silence_until)
        self._spurt_sent_ms += ms

    def _remote_end(self) -> float:
        """Clock time everything sent (audio and silence) is estimated to have played."""
        end = self._silence_until
        if self._spurt_start is not None:
            end = max(end, self._spurt_start + self._spurt_sent_ms / 1000.0)
        return end

    @property
    def played_ms(self) -> float:
        """Estimated audio played to the channel so far (see the module docstring)."""
        return self._played_done_ms + self._spurt_played(self._clock())

    @property
    def queued_ms(self) -> float:
        """Local queue plus the estimated unplayed backlog inside Asterisk."""
        local = super().queued_ms + len(self._pending) * FRAME_MS / self._frame_bytes
        return local + self._remote_backlog_ms()

    # --- inbound --------------------------------------------------------------------

    async def _read(self) -> None:
        assert self._ws is not None
        ws = self._ws
        reason = "media WebSocket closed"
        try:
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.BINARY:
                    self._audio_in(msg.data)
                elif msg.type is aiohttp.WSMsgType.TEXT:
                    self._control_in(msg.data)
                elif msg.type is aiohttp.WSMsgType.ERROR:
                    reason = f"media WebSocket error: {ws.exception()}"
                    break
            if ws.close_code is not None:
                reason = f"media WebSocket closed (code {ws.close_code})"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a transport must end cleanly, never crash the loop
            logger.exception("%s: media WebSocket reader failed", self.call_id)
            reason = f"media WebSocket reader failed: {exc}"
        if not self._closed:
            self._emit(HangupEvent(reason))
            self._mark_closed(reason)
        await self._close_session()

    def _audio_in(self, data: bytes) -> None:
        if self._closed:
            return
        buf = self._in_buf + data
        fb = self._frame_bytes
        n = len(buf) // fb * fb
        self._in_buf = buf[n:]
        for i in range(0, n, fb):
            self._deliver(AudioChunk(buf[i : i + fb], self.wire_rate, self.wire_codec))

    def _control_in(self, text: str) -> None:
        try:
            event = parse_control(text)
        except ChanWsProtocolError as exc:
            self.stats.malformed += 1
            logger.warning("%s: bad control message %r: %s", self.call_id, text[:80], exc)
            return
        if isinstance(event, MediaStart):
            self._on_media_start(event)
        elif isinstance(event, DtmfEnd):
            self._emit(DtmfEvent(event.digit))
        elif isinstance(event, MediaXoff):
            self.xoff = True
            self._emit(FlowEvent(True))
        elif isinstance(event, MediaXon):
            self.xoff = False
            self._wake.set()
            self._emit(FlowEvent(False))
        else:
            if isinstance(event, CommandRejected):
                logger.warning("%s: Asterisk refused a command: %s", self.call_id, event.error_text)
            self._emit(ControlMessageEvent(event))

    def _on_media_start(self, event: MediaStart) -> None:
        fmt = event.format.lower()
        if fmt and fmt != self.wire_format.name:
            reason = (
                f"Asterisk announced format {fmt!r}, transport expects {self.wire_format.name!r}"
            )
            logger.error("%s: %s", self.call_id, reason)
            self._mark_closed(reason)
            return
        self.media_start = event
        self.control_format = event.wire_format
        if event.connection_id:
            self.connection_id = event.connection_id
        size = event.optimal_frame_size
        # Messages must be whole multiples of the optimal size (the rest is dropped).
        self._send_unit = size if size <= MAX_MESSAGE // 2 else self._frame_bytes
        self._started.set()
        self._wake.set()
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(
                self._send_loop(), name=f"voxtra-ws-media-send-{self.call_id}"
            )

    # --- outbound -------------------------------------------------------------------

    def _on_queued(self) -> None:
        self._wake.set()

    async def _send_loop(self) -> None:
        try:
            while not self._closed:
                self._wake.clear()
                if self.xoff:
                    await self._wake.wait()
                    continue
                if self._out:
                    batch = [self._pending]
                    while self._out and len(batch) <= _BATCH_FRAMES:
                        frame = self._pop_frame()
                        if frame is not None:
                            batch.append(frame)
                    await self._send_audio(b"".join(batch), len(batch) - 1)
                    continue
                if self._framer.pending_ms > 0 or self._pending:
                    # A partial frame is left: pad it out only when Asterisk is about to
                    # run dry, in case the rest of it is still coming from ``send``.
                    backlog = self._remote_backlog_ms()
                    if backlog > FRAME_MS:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), (backlog - FRAME_MS) / 1000.0)
                        continue
                    tail = self._pop_frame(hold=False) or b""
                    data = self._pending + tail
                    data += self._silence_bytes(-len(data) % self._send_unit)
                    await self._send_audio(data, 1 if tail else 0)
                    continue
                due_in = self._remote_end() - self._clock()
                if not self._idle:
                    due_in += _IDLE_HANGOVER_S
                if due_in <= 0:
                    await self._send_silence()
                    continue
                timer = asyncio.get_running_loop().call_later(due_in, self._wake.set)
                try:
                    await self._wake.wait()
                finally:
                    timer.cancel()
        except asyncio.CancelledError:
            raise
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            logger.warning("%s: media WebSocket send failed: %s", self.call_id, exc)
            if not self._closed:
                self._emit(HangupEvent(f"media WebSocket send failed: {exc}"))
                self._mark_closed(f"send failed: {exc}")

    async def _send_silence(self) -> None:
        """Send one unit of silence (nothing queued); it is not played audio."""
        unit = self._send_unit
        if len(self._silence_unit) != unit:
            self._silence_unit = self._silence_bytes(unit)
        if self._ws is None or self._closed:
            return
        await self._ws.send_bytes(self._silence_unit)
        ms = unit * FRAME_MS / self._frame_bytes
        now = self._clock()
        start = self._remote_end()
        if start < now - _SILENCE_CONTIGUOUS_S:
            start = now
        self._silence_until = start + ms / 1000.0
        self._idle = True
        self.stats.silence_out += max(1, unit // self._frame_bytes)

    def _silence_bytes(self, n: int) -> bytes:
        fill = AudioChunk.silence(self.wire_codec, self.wire_rate, ms=1).data[:1]
        return fill * n

    async def _send_audio(self, data: bytes, frames: int) -> None:
        """Send whole optimal-size units of ``data``; keep the remainder for later."""
        unit = self._send_unit
        n = len(data) // unit * unit
        self._pending = data[n:]
        if n and self._ws is not None and not self._closed:
            await self._ws.send_bytes(data[:n])
            self._account_sent(n * FRAME_MS / self._frame_bytes)
            self._idle = False
        self.stats.frames_out += frames

    async def send_command(self, command: Command, **params: str) -> None:
        """Send a chan_websocket command (in the control format Asterisk uses)."""
        if self._ws is None or self._closed:
            raise MediaError(f"{self.call_id}: media WebSocket is closed")
        await self._ws.send_str(build_command(command, self.control_format, **params))

    async def hangup(self) -> None:
        """Ask Asterisk to hang up the channel (it then closes the WebSocket)."""
        await self.send_command(Command.HANGUP)

    async def _on_flush(self) -> None:
        self._pending = b""
        now = self._clock()
        self._close_spurt(now)
        self._silence_until = now  # FLUSH_MEDIA drops queued silence too
        self.xoff = False  # FLUSH_MEDIA empties Asterisk's queue and resets its pause
        self._wake.set()
        if self._ws is not None and not self._closed and self._started.is_set():
            try:
                await self.send_command(Command.FLUSH_MEDIA)
            except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
                logger.debug("%s: FLUSH_MEDIA not sent: %s", self.call_id, exc)

    # --- teardown -------------------------------------------------------------------

    async def close(self) -> None:
        """Close the WebSocket (Asterisk then hangs up the channel); safe to repeat.

        Also releases the tasks and session after the far end already hung up.
        """
        self._mark_closed("closed locally")
        await self._shutdown()

    async def _shutdown(self) -> None:
        self._close_spurt(self._clock())
        self._wake.set()
        current = asyncio.current_task()
        for task in (self._sender, self._reader):
            if task is not None and task is not current and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._sender = self._reader = None
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
            self._ws = None
        await self._close_session()

    async def _close_session(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
        self._session = None
