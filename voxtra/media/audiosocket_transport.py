"""AudioSocket over TCP for Asterisk ExternalMedia (``encapsulation=audiosocket``).

Asterisk is the TCP client: ARI's ``externalMedia`` with ``encapsulation=audiosocket``,
``transport=tcp``, ``external_host=HOST:PORT`` and ``data=<uuid>`` makes chan_audiosocket
connect to ``HOST:PORT`` and send that UUID as its first message. One
``AudioSocketServer`` listens for every call; ``await server.accept(uuid)`` hands back
the ``AudioSocketTransport`` of the call that announced ``uuid``. The bind address and
the address given to Asterisk are separate settings (containers, NAT).

Audio is signed 16-bit little-endian PCM, 8 kHz for format ``slin`` (message type
0x10), in 20 ms (320-byte) messages. Unlike chan_websocket, chan_audiosocket queues
what it receives straight onto the channel without timing it, so our sends are paced
at 20 ms by the shared ``Ticker``, as the RTP transport does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid as uuid_mod
from collections.abc import Callable

from voxtra.errors import ConfigError, MediaError
from voxtra.media.audiosocket import (
    AUDIO_RATES,
    AudioSocketError,
    AudioSocketParser,
    AudioSocketProtocolError,
    Kind,
    Message,
    build_audio,
    build_hangup,
)
from voxtra.media.frames import AudioChunk, Codec
from voxtra.media.pacer import Ticker
from voxtra.media.resample import Quality
from voxtra.media.transport import ControlMessageEvent, DtmfEvent, HangupEvent, MediaTransport

__all__ = ["AS_FORMATS", "AudioSocketServer", "AudioSocketTransport"]

logger = logging.getLogger(__name__)

AS_FORMATS: dict[str, int] = {"slin": 8000, "slin16": 16000}
"""ExternalMedia ``format`` values this transport speaks, and their sample rates."""

_READ_SIZE = 8192


def _as_uuid(value: str | uuid_mod.UUID) -> uuid_mod.UUID:
    if isinstance(value, uuid_mod.UUID):
        return value
    try:
        return uuid_mod.UUID(value)
    except ValueError:
        raise ConfigError(f"AudioSocket call id must be a UUID, got {value!r}") from None


class AudioSocketTransport(MediaTransport):
    """One call's AudioSocket connection (made by ``AudioSocketServer``)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        call_uuid: uuid_mod.UUID,
        parser: AudioSocketParser,
        *,
        wire_format: str = "slin",
        ticker: Ticker | None = None,
        max_queue_ms: int = 60_000,
        resample_quality: Quality = "HQ",
    ) -> None:
        rate = AS_FORMATS.get(wire_format)
        if rate is None:
            raise ConfigError(
                f"unknown AudioSocket wire format {wire_format!r}; use {list(AS_FORMATS)}"
            )
        super().__init__(
            Codec.PCM16, rate, max_queue_ms=max_queue_ms, resample_quality=resample_quality
        )
        self.uuid = call_uuid
        self.wire_format = wire_format
        self._reader = reader
        self._writer = writer
        self._parser = parser
        self._frame_bytes = AudioChunk.frame_bytes(Codec.PCM16, rate)
        self._in_buf = b""
        self._ticker = ticker if ticker is not None else Ticker()
        self._own_ticker = ticker is None
        self._tick_handle: int | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._was_sending = False
        self.peer_error: AudioSocketError | None = None
        self.on_closed: Callable[[AudioSocketTransport], None] | None = None

    def _start(self, early: list[Message]) -> None:
        """Handle messages that arrived with the UUID, then start reading and pacing."""
        for msg in early:
            self._message(msg)
        if self._closed:
            return
        self._read_task = asyncio.get_running_loop().create_task(
            self._read(), name=f"voxtra-audiosocket-{self.uuid}"
        )
        self._tick_handle = self._ticker.add(self._tick)

    @property
    def call_id(self) -> str:
        return str(self.uuid)

    @property
    def peer_address(self) -> tuple[str, int] | None:
        peer = self._writer.get_extra_info("peername")
        return None if peer is None else (str(peer[0]), int(peer[1]))

    # --- inbound --------------------------------------------------------------------

    async def _read(self) -> None:
        reason = "AudioSocket connection closed by Asterisk"
        try:
            while not self._closed:
                data = await self._reader.read(_READ_SIZE)
                if not data:
                    break
                try:
                    messages = self._parser.feed(data)
                except AudioSocketProtocolError as exc:
                    self.stats.malformed += 1
                    reason = f"AudioSocket protocol error: {exc}"
                    break
                for msg in messages:
                    self._message(msg)
                    if self._closed:
                        return
        except asyncio.CancelledError:
            raise
        except (ConnectionError, OSError) as exc:
            reason = f"AudioSocket connection lost: {exc}"
        self._ended(reason)

    def _message(self, msg: Message) -> None:
        kind = msg.kind
        if kind in AUDIO_RATES:
            if AUDIO_RATES[kind] != self.wire_rate:
                self.stats.malformed += 1
                return
            buf = self._in_buf + msg.payload
            fb = self._frame_bytes
            n = len(buf) // fb * fb
            self._in_buf = buf[n:]
            for i in range(0, n, fb):
                self._deliver(AudioChunk(buf[i : i + fb], self.wire_rate, Codec.PCM16))
        elif kind == Kind.DTMF:
            self._emit(DtmfEvent(msg.digit))
        elif kind == Kind.HANGUP:
            self._ended("hangup")
        elif kind == Kind.ERROR:
            self.peer_error = AudioSocketError(msg.error_code)
            logger.warning("%s: Asterisk reported AudioSocket error %s", self.uuid, msg.error_code)
            self._emit(ControlMessageEvent(msg))
        else:
            self._emit(ControlMessageEvent(msg))

    def _mark_closed(self, reason: str) -> None:
        was_closed = self._closed
        super()._mark_closed(reason)
        if not was_closed and self.on_closed is not None:
            self.on_closed(self)

    def _ended(self, reason: str) -> None:
        """The far end went away: tell listeners, end the streams, release the socket."""
        if self._closed:
            return
        self._emit(HangupEvent(reason))
        self._mark_closed(reason)
        self._release()

    # --- outbound -------------------------------------------------------------------

    def _tick(self, skipped: int) -> None:
        """One 20 ms slot (called by the ticker): write at most one frame."""
        if self._closed or self._writer.is_closing():
            return
        frame = self._pop_frame()
        if frame is None:
            if self._was_sending:
                self.stats.underruns += 1
                self._was_sending = False
            return
        self._writer.write(build_audio(frame, self.wire_rate))
        self._was_sending = True
        self._frame_sent()
        pacer = self._ticker.pacer
        if pacer is not None:
            self.stats.pacing_lateness_s.append(pacer.last_lateness)

    async def _on_flush(self) -> None:
        self._was_sending = False

    # --- teardown -------------------------------------------------------------------

    async def close(self) -> None:
        """Send a hangup message and close the socket; safe to repeat."""
        hangup = not self._closed
        self._mark_closed("closed locally")
        await self._shutdown(send_hangup=hangup)

    def _release(self) -> None:
        if self._tick_handle is not None:
            self._ticker.remove(self._tick_handle)
            self._tick_handle = None
        if not self._writer.is_closing():
            self._writer.close()

    async def _shutdown(self, *, send_hangup: bool = True) -> None:
        # Closing locally: a hangup message makes Asterisk end the channel cleanly.
        if send_hangup and not self._writer.is_closing():
            with contextlib.suppress(ConnectionError, OSError):
                self._writer.write(build_hangup())
        self._release()
        task, self._read_task = self._read_task, None
        if task is not None and task is not asyncio.current_task() and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._own_ticker:
            await self._ticker.aclose()
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.wait_closed()


class AudioSocketServer:
    """TCP listener that Asterisk's AudioSocket channels connect to, one per call.

    Use as ``async with AudioSocketServer(...) as server`` or ``await server.start()``.
    A connection that announces a UUID nobody ``accept``\\ s within ``claim_timeout``
    seconds is hung up, so stray channels do not pile up.
    """

    def __init__(
        self,
        bind_host: str = "0.0.0.0",
        bind_port: int = 0,
        *,
        advertised_host: str | None = None,
        wire_format: str = "slin",
        ticker: Ticker | None = None,
        uuid_timeout: float = 5.0,
        claim_timeout: float = 30.0,
        max_queue_ms: int = 60_000,
        resample_quality: Quality = "HQ",
    ) -> None:
        if wire_format not in AS_FORMATS:
            raise ConfigError(
                f"unknown AudioSocket wire format {wire_format!r}; use {list(AS_FORMATS)}"
            )
        self.bind_host = bind_host
        self.bind_port = bind_port
        self.advertised_host = advertised_host
        self.wire_format = wire_format
        self.uuid_timeout = uuid_timeout
        self.claim_timeout = claim_timeout
        self.max_queue_ms = max_queue_ms
        self.resample_quality: Quality = resample_quality
        self._ticker = ticker if ticker is not None else Ticker()
        self._own_ticker = ticker is None
        self._server: asyncio.Server | None = None
        self._waiting: dict[uuid_mod.UUID, asyncio.Future[AudioSocketTransport]] = {}
        self._unclaimed: dict[uuid_mod.UUID, AudioSocketTransport] = {}
        self._transports: set[AudioSocketTransport] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self.rejected = 0
        """Connections closed because they sent no valid UUID, or a duplicate one."""

    async def __aenter__(self) -> AudioSocketServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._handle, self.bind_host, self.bind_port)
        except OSError as exc:
            raise MediaError(
                f"cannot listen for AudioSocket on {self.bind_host}:{self.bind_port}: {exc}"
            ) from exc

    @property
    def local_address(self) -> tuple[str, int]:
        if self._server is None or not self._server.sockets:
            raise MediaError("AudioSocket server not started")
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    @property
    def advertised_address(self) -> str:
        """``host:port`` to give Asterisk as ``external_host``."""
        host, port = self.local_address
        if self.advertised_host:
            host = self.advertised_host
        elif host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"{host}:{port}"

    async def accept(
        self, call_uuid: str | uuid_mod.UUID, timeout: float | None = 10.0
    ) -> AudioSocketTransport:
        """The transport of the connection that announces ``call_uuid``.

        Works whether Asterisk connected before or after this call. Raises
        ``MediaError`` on timeout.
        """
        key = _as_uuid(call_uuid)
        ready = self._unclaimed.pop(key, None)
        if ready is not None:
            return ready
        if key in self._waiting:
            raise MediaError(f"already accepting AudioSocket call {key}")
        fut: asyncio.Future[AudioSocketTransport] = asyncio.get_running_loop().create_future()
        self._waiting[key] = fut
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise MediaError(f"no AudioSocket connection for {key} within {timeout} s") from None
        finally:
            self._waiting.pop(key, None)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        try:
            await self._greet(reader, writer)
        finally:
            if task is not None:
                self._handlers.discard(task)

    async def _greet(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        parser = AudioSocketParser()
        messages: list[Message] = []
        try:
            async with asyncio.timeout(self.uuid_timeout):
                while not messages:
                    data = await reader.read(_READ_SIZE)
                    if not data:
                        break
                    messages = parser.feed(data)
        except (TimeoutError, AudioSocketProtocolError, ConnectionError, OSError) as exc:
            logger.warning("AudioSocket connection without a valid UUID: %s", exc)
            messages = []
        if not messages or messages[0].kind != Kind.UUID:
            self.rejected += 1
            writer.close()
            return
        call_uuid = messages[0].uuid
        if call_uuid in self._unclaimed or any(t.uuid == call_uuid for t in self._transports):
            logger.warning("AudioSocket UUID %s connected twice; closing the second", call_uuid)
            self.rejected += 1
            writer.close()
            return
        transport = AudioSocketTransport(
            reader,
            writer,
            call_uuid,
            parser,
            wire_format=self.wire_format,
            ticker=self._ticker,
            max_queue_ms=self.max_queue_ms,
            resample_quality=self.resample_quality,
        )
        self._transports.add(transport)
        transport.on_closed = self._forget
        transport._start(messages[1:])
        fut = self._waiting.get(call_uuid)
        if fut is not None and not fut.done():
            fut.set_result(transport)
        else:
            self._unclaimed[call_uuid] = transport
            asyncio.get_running_loop().call_later(
                self.claim_timeout, self._expire, call_uuid, transport
            )

    def _forget(self, transport: AudioSocketTransport) -> None:
        self._transports.discard(transport)
        if self._unclaimed.get(transport.uuid) is transport:
            del self._unclaimed[transport.uuid]

    def _expire(self, call_uuid: uuid_mod.UUID, transport: AudioSocketTransport) -> None:
        if self._unclaimed.get(call_uuid) is transport:
            del self._unclaimed[call_uuid]
            logger.warning("AudioSocket call %s never accepted; hanging up", call_uuid)
            asyncio.get_running_loop().create_task(transport.close())

    async def close(self) -> None:
        """Stop listening and close every call's transport."""
        if self._server is not None:
            self._server.close()
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(MediaError("AudioSocket server closed"))
        for transport in list(self._transports):
            await transport.close()
        self._unclaimed.clear()
        for task in list(self._handlers):
            task.cancel()
        for task in list(self._handlers):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        if self._own_ticker:
            await self._ticker.aclose()
