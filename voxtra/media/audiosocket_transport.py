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

Who may connect: only a UUID the app registered with ``expect`` (or is accepting)
is taken, once; any other UUID, a second connection with a taken UUID, a peer not in
``allowed_peers``, a connection that sends no UUID within ``uuid_timeout`` and
connections past ``max_pending`` un-greeted ones are closed at once and counted in
``server.stats``. Each call's event queue is bounded (oldest dropped, counted) and
message kinds it has no use for are dropped, counted, never queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import uuid as uuid_mod
from collections.abc import Callable, Iterable
from dataclasses import dataclass

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
from voxtra.media.transport import (
    ControlMessageEvent,
    DtmfEvent,
    HangupEvent,
    MediaTransport,
    silence_frame,
)

__all__ = ["AS_FORMATS", "AudioSocketServer", "AudioSocketStats", "AudioSocketTransport"]

logger = logging.getLogger(__name__)

AS_FORMATS: dict[str, int] = {"slin": 8000, "slin16": 16000}
"""ExternalMedia ``format`` values this transport speaks, and their sample rates."""

_READ_SIZE = 8192

_SEND_BUFFER = 32 * 1024
"""SO_SNDBUF of a call's socket. Linux autotunes a TCP send buffer up to 4 MB: with
the peer not reading (Asterisk frozen, or gone without a FIN), about 3 MB of audio
(some 3 minutes at 8 kHz) went into the kernel, where ``flush()`` cannot reach it,
before anything stayed queued here. With 32 KB (the kernel doubles it) 3.8 s of
8 kHz audio (1.8 s at 16 kHz) left before the rest waited here: far more than a
reading Asterisk ever leaves unread."""


@dataclass(slots=True)
class AudioSocketStats:
    """What an ``AudioSocketServer`` took and refused (counts since it started)."""

    accepted: int = 0
    """Connections that presented an expected UUID and became a call's transport."""
    refused_unknown_uuid: int = 0
    """Connections whose UUID nobody expected (closed at once)."""
    refused_duplicate: int = 0
    """Connections with a UUID another connection had already taken."""
    refused_no_uuid: int = 0
    """Connections that closed, or sent something other than a valid UUID first."""
    refused_peer: int = 0
    """Connections from an address not in ``allowed_peers``."""
    refused_over_limit: int = 0
    """Connections refused because ``max_pending`` others were still greeting."""
    greeting_timeouts: int = 0
    """Connections that sent no UUID within ``uuid_timeout``."""
    expired: int = 0
    """Expected UUIDs nobody claimed within ``claim_timeout`` (a connection is hung up)."""
    dropped_events: int = 0
    """Events dropped (oldest first) because a call's event queue was full."""
    unknown_messages: int = 0
    """Messages of kinds a call has no use for (dropped, not queued)."""

    @property
    def refused(self) -> int:
        """Every connection closed before it became a call's transport."""
        return (
            self.refused_unknown_uuid
            + self.refused_duplicate
            + self.refused_no_uuid
            + self.refused_peer
            + self.refused_over_limit
            + self.greeting_timeouts
        )


def _as_uuid(value: str | uuid_mod.UUID) -> uuid_mod.UUID:
    if isinstance(value, uuid_mod.UUID):
        return value
    try:
        return uuid_mod.UUID(value)
    except ValueError:
        raise ConfigError(f"AudioSocket call id must be a UUID, got {value!r}") from None


_SILENCE_MESSAGES: dict[int, bytes] = {}


def _silence_message(rate: int) -> bytes:
    """The audio message of one 20 ms silence frame at ``rate`` (built once per rate)."""
    msg = _SILENCE_MESSAGES.get(rate)
    if msg is None:
        msg = _SILENCE_MESSAGES[rate] = build_audio(silence_frame(Codec.PCM16, rate), rate)
    return msg


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
        max_events: int = 64,
        server_stats: AudioSocketStats | None = None,
    ) -> None:
        rate = AS_FORMATS.get(wire_format)
        if rate is None:
            raise ConfigError(
                f"unknown AudioSocket wire format {wire_format!r}; use {list(AS_FORMATS)}"
            )
        super().__init__(
            Codec.PCM16,
            rate,
            max_queue_ms=max_queue_ms,
            resample_quality=resample_quality,
            max_events=max_events,
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
        self.unknown_messages = 0
        """Messages of kinds this transport has no use for (dropped, not queued)."""
        self._server_stats = server_stats

    def _start(self, early: list[Message]) -> None:
        """Handle messages that arrived with the UUID, then start reading and pacing."""
        for msg in early:
            self._message(msg)
        if self._closed:
            return
        sock = self._writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SEND_BUFFER)
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
            first = self.peer_error is None
            self.peer_error = AudioSocketError(msg.error_code)
            (logger.warning if first else logger.debug)(
                "%s: Asterisk reported AudioSocket error %s", self.uuid, msg.error_code
            )
            # The error code is the payload's first byte; the rest is not kept (the
            # framing allows 64 KB a message).
            self._emit(ControlMessageEvent(Message(kind, msg.payload[:1])))
        else:
            # A second UUID or a kind chan_audiosocket does not send: nothing to act
            # on, and queueing it let a peer grow memory without bound.
            self.unknown_messages += 1
            if self._server_stats is not None:
                self._server_stats.unknown_messages += 1

    def _event_dropped(self) -> None:
        if self._server_stats is not None:
            self._server_stats.dropped_events += 1

    @property
    def dropped_events(self) -> int:
        """Events dropped because the queue held ``max_events`` unread ones."""
        return self.stats.dropped_events

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
        """One 20 ms slot (called by the ticker): write one frame, silence if none queued.

        Measured: chan_audiosocket passes on only what we write, so with nothing written
        a SIP phone in the call got no RTP at all (0 packets in 5 s); with a silence
        message per slot it gets a packet every 20 ms.

        Nothing is written while the socket still holds unsent data (the kernel's
        buffer is full: Asterisk is not reading). Writing on, audio piled up in the
        stream's buffer without bound (3.8 MB on top of the kernel's, a peer that read
        nothing fed 410 s of audio) and ``close()`` waited for it to drain, for ever.
        Held here, the audio stays in the bounded queue: ``send()`` waits, and
        ``flush()`` drops it.
        """
        if self._closed or self._writer.is_closing():
            return
        if self._writer.transport.get_write_buffer_size():
            return
        frame = self._pop_frame()
        if frame is None:
            if self._was_sending:
                self.stats.underruns += 1
                self._was_sending = False
            if self._silence_due():
                self._writer.write(_silence_message(self.wire_rate))
                self._silence_sent()
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
        if self._writer.transport.get_write_buffer_size():
            # Asterisk is not reading: a graceful close waits for the unsent data to
            # drain (for ever, from a frozen peer), so reset the connection instead.
            self._writer.transport.abort()
        elif not self._writer.is_closing():
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


class _Greeting:
    """A connection that has not sent its UUID yet."""

    __slots__ = ("evicted", "writer")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.evicted = False


class _Expected:
    """One UUID the app is about to give Asterisk, and what became of it."""

    __slots__ = ("claimed", "future", "timer", "transport", "waiting")

    def __init__(self, future: asyncio.Future[AudioSocketTransport]) -> None:
        self.future = future
        self.transport: AudioSocketTransport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.waiting = False  # an accept() is awaiting it (its own timeout applies)
        self.claimed = False  # accept() returned the transport


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # a dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d
    return ip


class AudioSocketServer:
    """TCP listener that Asterisk's AudioSocket channels connect to, one per call.

    Use as ``async with AudioSocketServer(...) as server`` or ``await server.start()``.
    Register each call's UUID with ``expect`` before giving it to Asterisk, then
    ``await accept(uuid)``; ``accept`` alone registers it too, for a caller that is
    sure to ask before Asterisk connects. A connection is taken only for an expected
    UUID that no other connection took; everything else is closed at once (see
    ``stats``). An expected UUID nobody ``accept``\\ s within ``claim_timeout`` seconds
    is forgotten, and its connection, if any, hung up.

    ``bind_host`` defaults to loopback: listening on every interface is a choice the
    caller makes (``media.bind_host``). ``allowed_peers``, when given, are the only
    source addresses taken (Asterisk's, as this host sees it; NAT and container
    networks change it, so there is no guess from the ARI URL).
    """

    def __init__(
        self,
        bind_host: str = "127.0.0.1",
        bind_port: int = 0,
        *,
        advertised_host: str | None = None,
        wire_format: str = "slin",
        ticker: Ticker | None = None,
        uuid_timeout: float = 3.0,
        claim_timeout: float = 10.0,
        max_pending: int = 64,
        max_events: int = 64,
        allowed_peers: Iterable[str] | None = None,
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
        # chan_audiosocket sends its UUID in the same write as the connect completes
        # (loopback: well under 1 ms), so 3 s only ever cuts off a slow or idle client.
        self.uuid_timeout = uuid_timeout
        # Asterisk connects while ARI's externalMedia request is still being answered;
        # 10 s is the attach's own accept timeout in CallMedia.
        self.claim_timeout = claim_timeout
        self.max_pending = max(1, max_pending)
        self.max_events = max_events
        try:
            self.allowed_peers = (
                None if allowed_peers is None else frozenset(_ip(a) for a in allowed_peers)
            )
        except ValueError as exc:
            raise ConfigError(f"AudioSocket allowed peers must be IP addresses: {exc}") from None
        self.max_queue_ms = max_queue_ms
        self.resample_quality: Quality = resample_quality
        self.stats = AudioSocketStats()
        self._ticker = ticker if ticker is not None else Ticker()
        self._own_ticker = ticker is None
        self._server: asyncio.Server | None = None
        self._expected: dict[uuid_mod.UUID, _Expected] = {}
        self._transports: set[AudioSocketTransport] = set()
        self._greeting: dict[asyncio.Task[None], _Greeting] = {}  # oldest first
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def rejected(self) -> int:
        """Connections closed before they became a call's transport (``stats.refused``)."""
        return self.stats.refused

    @property
    def pending(self) -> int:
        """Connections still to send their UUID."""
        return len(self._greeting)

    @property
    def expected(self) -> int:
        """UUIDs registered and not yet claimed or forgotten."""
        return sum(1 for e in self._expected.values() if not e.claimed)

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

    def expect(self, call_uuid: str | uuid_mod.UUID) -> uuid_mod.UUID:
        """Register ``call_uuid`` as one Asterisk is about to present; returns it.

        Call before creating the ExternalMedia channel: a connection with a UUID
        nobody expects is refused. Forgotten after ``claim_timeout`` seconds unless
        ``accept`` is waiting for it or has returned it.
        """
        key = _as_uuid(call_uuid)
        if key in self._expected:
            raise MediaError(f"AudioSocket call {key} is already expected")
        entry = _Expected(asyncio.get_running_loop().create_future())
        self._expected[key] = entry
        self._arm(key, entry)
        return key

    def forget(self, call_uuid: str | uuid_mod.UUID) -> None:
        """Stop expecting ``call_uuid`` (the channel was never created); idempotent.

        A connection that already presented it and was not claimed is hung up.
        """
        key = _as_uuid(call_uuid)
        entry = self._expected.get(key)
        if entry is not None and not entry.claimed:
            self._drop(key, entry)

    async def accept(
        self, call_uuid: str | uuid_mod.UUID, timeout: float | None = 10.0
    ) -> AudioSocketTransport:
        """The transport of the connection that announces ``call_uuid``.

        Works whether Asterisk connected before or after this call, as long as the
        UUID was ``expect``\\ ed (or this call came first). Raises ``MediaError`` on
        timeout; the UUID is then forgotten, so a late connection is refused.
        """
        key = _as_uuid(call_uuid)
        entry = self._expected.get(key)
        if entry is None:
            self.expect(key)
            entry = self._expected[key]
        elif entry.claimed or entry.waiting:
            raise MediaError(f"already accepting AudioSocket call {key}")
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        entry.waiting = True
        try:
            transport = await asyncio.wait_for(asyncio.shield(entry.future), timeout)
        except BaseException as exc:
            # Timed out, cancelled (even just as the connection came: nobody will take
            # it), or the server closed: a late connection with this UUID must find
            # nobody expecting it.
            entry.waiting = False
            if self._expected.get(key) is entry:
                self._drop(key, entry)
            if isinstance(exc, TimeoutError):
                raise MediaError(
                    f"no AudioSocket connection for {key} within {timeout} s"
                ) from None
            raise
        entry.waiting = False
        entry.claimed = True
        if transport.closed:
            self._forget(transport)
        return transport

    # --- connections ---------------------------------------------------------------

    def _refuse(self, writer: asyncio.StreamWriter, counter: str, what: str) -> None:
        """Close a connection at once (RST, nothing lingers) and count why."""
        count = getattr(self.stats, counter) + 1
        setattr(self.stats, counter, count)
        # A flood of refusals must not flood the log: the first, then every 100th.
        if count == 1 or count % 100 == 0:
            logger.warning("AudioSocket: %s (%s: %d so far)", what, counter, count)
        else:
            logger.debug("AudioSocket: %s", what)
        writer.transport.abort()

    def _peer_allowed(self, writer: asyncio.StreamWriter) -> bool:
        if self.allowed_peers is None:
            return True
        peer = writer.get_extra_info("peername")
        try:
            return peer is not None and _ip(str(peer[0])) in self.allowed_peers
        except ValueError:
            return False

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._peer_allowed(writer):
            peer = writer.get_extra_info("peername")
            self._refuse(writer, "refused_peer", f"connection from {peer} not allowed")
            return
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - start_server always runs us in a task
            writer.transport.abort()
            return
        if len(self._greeting) >= self.max_pending:
            # Evict the oldest, not refuse the newest: chan_audiosocket sends its UUID
            # at once, so a connection that has waited longest is the least likely to
            # be Asterisk, and idle connections cannot lock Asterisk out.
            oldest_task, oldest = next(iter(self._greeting.items()))
            del self._greeting[oldest_task]
            oldest.evicted = True
            self._refuse(
                oldest.writer,
                "refused_over_limit",
                f"{self.max_pending} connections greeting; closing the oldest",
            )
        greeting = _Greeting(writer)
        self._greeting[task] = greeting
        try:
            await self._greet(reader, greeting)
        finally:
            self._greeting.pop(task, None)

    async def _greet(self, reader: asyncio.StreamReader, greeting: _Greeting) -> None:
        writer = greeting.writer
        parser = AudioSocketParser()
        messages: list[Message] = []
        try:
            async with asyncio.timeout(self.uuid_timeout):
                while not messages:
                    data = await reader.read(_READ_SIZE)
                    if not data:
                        break
                    messages = parser.feed(data)
        except TimeoutError:
            self._refuse(writer, "greeting_timeouts", f"no UUID within {self.uuid_timeout} s")
            return
        except (AudioSocketProtocolError, ConnectionError, OSError) as exc:
            if not greeting.evicted:
                self._refuse(writer, "refused_no_uuid", f"connection without a valid UUID: {exc}")
            return
        if greeting.evicted:
            return
        if not messages or messages[0].kind != Kind.UUID:
            self._refuse(writer, "refused_no_uuid", "connection without a valid UUID")
            return
        call_uuid = messages[0].uuid
        entry = self._expected.get(call_uuid)
        if entry is None:
            self._refuse(writer, "refused_unknown_uuid", f"UUID {call_uuid} not expected")
            return
        if entry.transport is not None:
            self._refuse(writer, "refused_duplicate", f"UUID {call_uuid} already connected")
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
            max_events=self.max_events,
            server_stats=self.stats,
        )
        self.stats.accepted += 1
        entry.transport = transport
        self._transports.add(transport)
        transport.on_closed = self._forget
        transport._start(messages[1:])
        if not entry.future.done():
            entry.future.set_result(transport)

    # --- bookkeeping ---------------------------------------------------------------

    def _arm(self, key: uuid_mod.UUID, entry: _Expected) -> None:
        entry.timer = asyncio.get_running_loop().call_later(
            self.claim_timeout, self._expire, key, entry
        )

    def _drop(self, key: uuid_mod.UUID, entry: _Expected) -> None:
        """Stop expecting ``key``; hang up its connection if nobody claimed it."""
        del self._expected[key]
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        if not entry.future.done():
            entry.future.set_exception(MediaError(f"AudioSocket call {key} no longer expected"))
            if not entry.waiting:
                entry.future.exception()  # nobody will ask: no "never retrieved" warning
        transport = entry.transport
        if transport is not None and not entry.claimed and not transport.closed:
            task = asyncio.get_running_loop().create_task(transport.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def _forget(self, transport: AudioSocketTransport) -> None:
        self._transports.discard(transport)
        entry = self._expected.get(transport.uuid)
        # A claimed call's UUID stays taken while its connection lives (a second
        # connection with it is a duplicate); once it ends the UUID is unknown again.
        if entry is not None and entry.transport is transport and entry.claimed:
            del self._expected[transport.uuid]

    def _expire(self, call_uuid: uuid_mod.UUID, entry: _Expected) -> None:
        entry.timer = None
        if self._expected.get(call_uuid) is not entry or entry.claimed or entry.waiting:
            return
        self.stats.expired += 1
        if entry.transport is not None:
            logger.warning("AudioSocket call %s never accepted; hanging up", call_uuid)
        else:
            logger.debug("AudioSocket call %s expected but never connected", call_uuid)
        self._drop(call_uuid, entry)

    async def close(self) -> None:
        """Stop listening and close every call's transport."""
        if self._server is not None:
            self._server.close()
        for key, entry in list(self._expected.items()):
            if entry.timer is not None:
                entry.timer.cancel()
                entry.timer = None
            if not entry.future.done():
                entry.future.set_exception(MediaError("AudioSocket server closed"))
                if not entry.waiting:
                    entry.future.exception()  # nobody will ask: no "never retrieved"
            del self._expected[key]
        for transport in list(self._transports):
            await transport.close()
        # Pending greetings are aborted, not cancelled: their read ends at once, and a
        # cancelled connection task makes Python 3.11's streams log an error.
        for greeting in self._greeting.values():
            greeting.evicted = True
            greeting.writer.transport.abort()
        for task in list(self._greeting) + list(self._closing):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
        if self._own_ticker:
            await self._ticker.aclose()
