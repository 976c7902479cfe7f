"""The one media transport contract, and the framing/queueing every transport shares.

Inbound: ``frames()`` (also ``async for chunk in transport``) yields 20 ms
``AudioChunk`` frames in the transport's wire format (``wire_codec`` at ``wire_rate``:
ulaw/alaw at 8 kHz or PCM16 at 8/16 kHz), silence included, until the call ends;
``set_inbound_format(codec, rate)`` makes it yield another format, converted by the
transport (the RTP transport converts all its ticker's calls in one batch per tick).

Outbound: ``send(chunk)`` takes audio of any length, codec and supported rate,
converts it to the wire format (G.711 tables, polyphase resampler), cuts it into 20 ms
frames and queues it; the transport paces it out (the RTP transport resamples each
call's frame when it is due, for all its calls at once). The queue is bounded:
``send`` waits when it is full. ``flush()`` drops everything queued (barge-in).

The outbound stream never pauses: when nothing is queued every transport sends a
20 ms frame of silence in the wire format (one pre-encoded frame per format,
``silence_frame``), so RTP sequence numbers and timestamps run on. Measured: with
nothing sent, Asterisk passed nothing on to a SIP phone over any of the three
transports (0 packets in 5 s; ``transmit_silence`` does not cover a bridged channel),
and carriers, SBCs and NAT bindings drop calls after 30-60 s without media. Silence
is not audio the app sent: it never counts in ``played_ms``, ``queued_ms`` or
``stats.frames_out`` (``stats.silence_out`` counts it), and queued audio goes out in
place of the next silence frame. ``queued_ms`` / ``played_ms`` follow the pipeline's
``MediaIO`` contract.

Control: ``events()`` yields ``DtmfEvent``, ``HangupEvent``, ``FlowEvent`` (XOFF/XON)
and ``ControlMessageEvent`` (any other chan_websocket event), and ``on_event`` may be
set to a callback that sees each one as it happens.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import numpy as np

from voxtra.errors import CallEnded, MediaError
from voxtra.media import g711
from voxtra.media.convert import ChunkConverter
from voxtra.media.frames import FRAME_MS, AudioChunk, Codec
from voxtra.media.resample import Quality, StreamResampler
from voxtra.media.wakes import ReaderWakes, reader_wakes

__all__ = [
    "ControlMessageEvent",
    "DtmfEvent",
    "FlowEvent",
    "HangupEvent",
    "MediaTransport",
    "OutboundFramer",
    "TransportEvent",
    "TransportStats",
    "silence_frame",
]

logger = logging.getLogger(__name__)

IDLE_HANGOVER_SLOTS = 3
"""Empty 20 ms slots after audio before filler silence starts (60 ms: an echo's
arrival jitter; well under what carriers and NAT bindings time out on)."""

_now = time.monotonic  # the hold's clock (tests pin it)

_HOLD_S = IDLE_HANGOVER_SLOTS * FRAME_MS / 1000
"""A ``send`` this recent means the app feeds audio in real time: a partial frame it
left waits (up to the hangover) for the rest instead of going out padded."""


_SILENCE_FRAMES: dict[tuple[Codec, int], bytes] = {}


def silence_frame(codec: Codec, rate: int) -> bytes:
    """One 20 ms frame of digital silence in ``codec`` at ``rate`` (made once, shared).

    mu-law 0xFF, A-law 0xD5, PCM zeros (the same in either byte order).
    """
    key = (codec, rate)
    frame = _SILENCE_FRAMES.get(key)
    if frame is None:
        frame = _SILENCE_FRAMES[key] = AudioChunk.silence(codec, rate).data
    return frame


@dataclass(frozen=True, slots=True)
class TransportEvent:
    """Base of control events surfaced by a transport."""


@dataclass(frozen=True, slots=True)
class DtmfEvent(TransportEvent):
    digit: str


@dataclass(frozen=True, slots=True)
class HangupEvent(TransportEvent):
    reason: str = ""


@dataclass(frozen=True, slots=True)
class FlowEvent(TransportEvent):
    """The far end asked us to pause (``paused=True``, XOFF) or resume (XON)."""

    paused: bool


@dataclass(frozen=True, slots=True)
class ControlMessageEvent(TransportEvent):
    """Any other protocol event, e.g. a chan_websocket ``MediaMarkProcessed``."""

    message: object


@dataclass(slots=True)
class TransportStats:
    frames_in: int = 0
    frames_out: int = 0
    silence_out: int = 0
    """Frames of silence sent because nothing was queued (not in ``frames_out``)."""
    lost: int = 0
    late: int = 0
    duplicates: int = 0
    reordered: int = 0
    underruns: int = 0
    """Times the outbound queue ran dry right after audio had been playing."""
    inbound_dropped: int = 0
    """Inbound frames dropped because nobody consumed ``frames()`` fast enough."""
    malformed: int = 0
    dropped_foreign_source: int = 0
    """Datagrams from anyone but the peer (RTP: the address Asterisk gave), dropped unread."""
    dropped_payload_type: int = 0
    """Packets of a payload type other than the negotiated one (or a DTMF event)."""
    dropped_size: int = 0
    """Packets whose payload is not exactly one 20 ms frame of the wire format."""
    dropped_stray: int = 0
    """Packets far outside the stream (a sequence jump, another SSRC) not confirmed as a
    new stream by the packet after them (RFC 3550 probation), dropped."""
    resyncs: int = 0
    """Times the inbound stream restarted (new SSRC or sequence range, confirmed)."""
    concealed: int = 0
    """Silence frames delivered for lost packets (at most 200 ms per gap, whatever ``lost``)."""
    dropped_events: int = 0
    """Control events dropped because ``max_events`` unread ones were queued."""
    pacing_lateness_s: deque[float] = field(default_factory=lambda: deque(maxlen=3000))
    """Recent per-frame send time minus its ideal 20 ms deadline, seconds (< 0: early)."""

    def pacing_jitter_ms(self, percentile: float = 99.0) -> float:
        if not self.pacing_lateness_s:
            return 0.0
        errors = np.abs(np.fromiter(self.pacing_lateness_s, float))  # early counts as well
        return float(np.percentile(errors, percentile) * 1000)


class OutboundFramer:
    """Converts any audio to one wire format and cuts it into whole 20 ms frames.

    With ``defer=True`` audio at another rate is not resampled on ``push``: it is cut
    into 20 ms frames at its own rate and kept (``deferred_frames``), and the transport
    takes them one per tick (``pop_deferred``), resamples them for all its calls at
    once (``resample_many``) and hands the result back (``take_converted``). Anything
    that would reorder audio (a chunk in another format, the end of a stream, a flush)
    first converts what is deferred, so the output is the same either way.
    """

    def __init__(
        self, codec: Codec, rate: int, quality: Quality = "HQ", *, defer: bool = False
    ) -> None:
        if codec is not Codec.PCM16 and rate != 8000:
            raise MediaError(f"{codec} is 8 kHz only")
        self.codec = codec
        self.rate = rate
        self.quality: Quality = quality
        self.defer = defer
        self.frame_bytes = AudioChunk.frame_bytes(codec, rate)
        self._pcm_frame = rate * FRAME_MS // 1000 * 2
        self._resampler: StreamResampler | None = None
        self._pcm_tail = b""  # wire-rate PCM16 not yet a whole frame
        self._dirty = False  # the resampler holds input not yet flushed out
        self._src: deque[bytes] = deque()  # deferred: whole 20 ms frames at the source rate
        self._src_tail = b""  # deferred: source-rate PCM16 not yet a whole frame

    @property
    def pending_ms(self) -> float:
        """Audio held here (partial frames and deferred frames), in milliseconds."""
        ms = len(self._pcm_tail) / 2 * 1000 / self.rate + len(self._src) * FRAME_MS
        if self._src_tail and self._resampler is not None:
            ms += len(self._src_tail) / 2 * 1000 / self._resampler.in_rate
        return ms

    @property
    def deferred_frames(self) -> int:
        return len(self._src)

    def push(self, chunk: AudioChunk) -> list[bytes]:
        """Whole wire frames now available from ``chunk`` (the remainder is kept)."""
        data = chunk.data
        if (
            chunk.codec is self.codec
            and chunk.sample_rate == self.rate
            and not self._pcm_tail
            and not self._src
            and not self._src_tail
            and len(data) % self.frame_bytes == 0
        ):
            # Already whole frames in the wire format (an echo, a G.711 prompt): no
            # decode/re-encode round trip. (mu-law 0x7f stays 0x7f rather than becoming
            # 0xff; both are zero.)
            fb = self.frame_bytes
            if len(data) == fb:
                return [data]
            return [data[i : i + fb] for i in range(0, len(data), fb)]
        pcm = g711.to_pcm16(chunk)
        rate = pcm.sample_rate
        if rate == self.rate:
            return self._cut(self._pcm_tail + self._undefer() + pcm.data)
        if self._resampler is None or self._resampler.in_rate != rate:
            head = self._undefer()
            self._resampler = StreamResampler(rate, self.rate, self.quality)
        else:
            head = b""
        self._dirty = True
        if (
            self.defer
            and not self._pcm_tail
            and not head
            and self._resampler.aligned
            and rate * FRAME_MS % 1000 == 0
        ):
            fb = rate * FRAME_MS // 1000 * 2
            buf = self._src_tail + pcm.data
            n = len(buf) // fb * fb
            self._src.extend([buf[i : i + fb] for i in range(0, n, fb)])
            self._src_tail = buf[n:]
            return []
        data = self._resampler.process(self._undefer_input() + pcm.data)
        return self._cut(self._pcm_tail + head + data)

    def pop_deferred(self) -> tuple[StreamResampler, bytes] | None:
        """The next deferred source frame and the resampler it must go through."""
        if not self._src or self._resampler is None:
            return None
        return self._resampler, self._src.popleft()

    def takes_whole(self, pcm_bytes: int) -> bool:
        """Would ``take_converted`` of this many PCM bytes be exactly one frame, as is?"""
        return pcm_bytes == self._pcm_frame and not self._pcm_tail

    def take_converted(self, pcm: bytes) -> list[bytes]:
        """Wire frames from a deferred frame's resampled output (normally exactly one)."""
        return self._cut(self._pcm_tail + pcm)

    def finish(self) -> list[bytes]:
        """Drain the resampler and pad the last partial frame with silence."""
        data = self._pcm_tail + self._undefer()
        if self._dirty and self._resampler is not None:
            data += self._resampler.flush()
            self._dirty = False
        self._pcm_tail = b""
        if not data:
            return []
        data += bytes(-len(data) % self._pcm_frame)
        return self._cut(data)

    def reset(self) -> None:
        self._pcm_tail = b""
        self._src.clear()
        self._src_tail = b""
        self._dirty = False
        if self._resampler is not None:
            self._resampler.reset()

    def _undefer_input(self) -> bytes:
        """Take every deferred source sample out of the deferred queue, in order."""
        if not self._src and not self._src_tail:
            return b""
        data = b"".join(self._src) + self._src_tail
        self._src.clear()
        self._src_tail = b""
        return data

    def _undefer(self) -> bytes:
        """Resample everything deferred now (wire-rate PCM), before audio that follows it."""
        data = self._undefer_input()
        if not data or self._resampler is None:
            return b""
        return self._resampler.process(data)

    def _cut(self, data: bytes) -> list[bytes]:
        n = len(data) // self._pcm_frame * self._pcm_frame
        self._pcm_tail = data[n:]
        if not n:
            return []
        body = data[:n]
        if self.codec is Codec.ULAW:
            body = g711.pcm16_to_ulaw(body)
        elif self.codec is Codec.ALAW:
            body = g711.pcm16_to_alaw(body)
        fb = self.frame_bytes
        if n == self._pcm_frame:
            return [body]
        return [body[i : i + fb] for i in range(0, len(body), fb)]


EventCallback = Callable[[TransportEvent], None]


class MediaTransport(abc.ABC):
    """Base class and contract of every media transport (RTP, WebSocket, AudioSocket)."""

    def __init__(
        self,
        wire_codec: Codec,
        wire_rate: int,
        *,
        max_queue_ms: int = 60_000,
        inbound_queue_frames: int = 500,
        resample_quality: Quality = "HQ",
        max_events: int = 64,
    ) -> None:
        self.wire_codec = wire_codec
        self.wire_rate = wire_rate
        self.stats = TransportStats()
        self.on_event: EventCallback | None = None
        self._framer = OutboundFramer(wire_codec, wire_rate, resample_quality)
        self._out: deque[bytes] = deque()
        self._max_out = max(1, max_queue_ms // FRAME_MS)
        self._space = asyncio.Event()
        self._space.set()
        self._send_lock = asyncio.Lock()
        # Inbound frames: a deque plus the futures of waiting readers, not an
        # asyncio.Queue: with hundreds of calls each frame's hand-over is on the hot path.
        self._in: deque[AudioChunk] = deque()
        self._in_waiters: list[asyncio.Future[None]] = []
        self._in_ended = False
        self._in_limit = max(1, inbound_queue_frames)
        self._wakes: ReaderWakes | None = None
        self._in_conv: ChunkConverter | None = None
        self._resample_quality: Quality = resample_quality
        # Control events are read only by whoever iterates events(); a call that never
        # does kept every one (AudioSocket: 800 unknown 64 KB messages, +62 MB). Bounded:
        # the oldest goes, so the last ones (a hangup) are always there.
        self._events: asyncio.Queue[TransportEvent | None] = asyncio.Queue()
        self._max_events = max(1, max_events)
        self._closed = False
        self._played_frames = 0
        self._dry_slots = IDLE_HANGOVER_SLOTS  # idle from the start: silence at once
        self._pushed_at = 0.0  # monotonic time of the last send(): is audio still coming?
        self.close_reason = ""

    # --- the contract ---------------------------------------------------------------

    async def frames(self) -> AsyncIterator[AudioChunk]:
        """Inbound 20 ms frames in the wire format, until the call ends."""
        q = self._in
        while True:
            if q:
                yield q.popleft()
            elif self._in_ended:
                return  # every reader sees the end
            else:
                fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._in_waiters.append(fut)
                try:
                    await fut
                finally:
                    if not fut.done():  # cancelled while waiting
                        fut.cancel()
                        if fut in self._in_waiters:  # else it waits for its wake's slice
                            self._in_waiters.remove(fut)

    def __aiter__(self) -> AsyncIterator[AudioChunk]:
        return self.frames()

    def set_inbound_format(self, codec: Codec, rate: int) -> None:
        """Make ``frames()`` yield ``codec`` at ``rate`` instead of the wire format.

        The transport converts as frames arrive (the RTP transport does it for all
        its ticker's calls at once), which is cheaper than each reader converting.
        Frames already queued stay as they were. The wire format itself undoes it.
        """
        if codec is self.wire_codec and rate == self.wire_rate:
            self._in_conv = None
        else:
            self._in_conv = ChunkConverter(
                codec, rate, source_rate=self.wire_rate, quality=self._resample_quality
            )

    @property
    def inbound_format(self) -> tuple[Codec, int]:
        """What ``frames()`` yields: ``(codec, sample_rate)``."""
        conv = self._in_conv
        return (self.wire_codec, self.wire_rate) if conv is None else (conv.codec, conv.rate)

    async def events(self) -> AsyncIterator[TransportEvent]:
        """Control events (DTMF, hangup, flow control, protocol messages) until closed."""
        while True:
            ev = await self._events.get()
            if ev is None:
                self._events.put_nowait(None)
                return
            yield ev

    async def send(self, chunk: AudioChunk) -> None:
        """Queue audio of any length/codec/rate; waits while the outbound queue is full."""
        if self._closed:
            raise CallEnded(self.call_id, f"media transport closed: {self.close_reason}")
        if self._queued_frames() < self._max_out and not self._send_lock.locked():
            # Room and nobody waiting before us: queue now. Nothing below awaits, so this
            # is as atomic as the locked path (the per-frame hot path of an echo/agent).
            self._push(chunk)
            return
        async with self._send_lock:
            while self._queued_frames() >= self._max_out:
                self._space.clear()
                await self._space.wait()
                if self._closed:
                    raise CallEnded(self.call_id, "media transport closed")
            self._push(chunk)

    def _push(self, chunk: AudioChunk) -> None:
        """Frame ``chunk`` into the outbound queue (``send``'s both paths)."""
        self._pushed_at = _now()
        frames = self._framer.push(chunk)
        if frames:
            self._out.extend(frames)
            self._on_queued()

    async def flush(self) -> None:
        """Drop every queued frame (and the partial one); playback stops within a frame."""
        self._out.clear()
        self._framer.reset()
        self._space.set()
        self._dry_slots = IDLE_HANGOVER_SLOTS  # what is dropped leaves silence at once
        await self._on_flush()

    @property
    def queued_ms(self) -> float:
        return len(self._out) * FRAME_MS + self._framer.pending_ms

    @property
    def played_ms(self) -> float:
        return float(self._played_frames * FRAME_MS)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def call_id(self) -> str:
        """An identifier for errors and logs (subclasses return something better)."""
        return type(self).__name__

    async def close(self) -> None:
        """Stop the transport; ``frames()`` and ``events()`` end."""
        if self._closed:
            return
        self._mark_closed("closed locally")
        await self._shutdown()

    # --- for subclasses -------------------------------------------------------------

    @abc.abstractmethod
    async def _shutdown(self) -> None:
        """Release sockets/tasks."""

    async def _on_flush(self) -> None:
        """Tell the far end to drop its queue too (WebSocket)."""
        return None

    def _on_queued(self) -> None:
        """New frames are queued (a push-driven transport wakes its sender)."""
        return None

    def _queued_frames(self) -> int:
        return len(self._out) + self._framer.deferred_frames

    def _pop_frame(self, *, hold: bool = True) -> bytes | None:
        """The next wire frame to send, or None for an empty slot (counted as dry).

        With nothing queued, what the framer still holds (a partial frame, the
        resampler's last milliseconds) is padded out with silence and sent at once,
        unless the app is feeding audio in real time (its last ``send`` less than the
        hangover ago) and the stream has been dry for less than ``IDLE_HANGOVER_SLOTS``
        (``hold=False``: at once, always). Padded out on the first empty slot, an echo
        whose next frame came one slot late had the resampler's held 2-3 ms sent with
        17 ms of silence in its slot, and the next frame started from a reset
        resampler: a 10 ms hole near the end of a 16 kHz RTP echo, in 2 of 10 runs with
        two CPU hogs on the box (a CI run failed on it). The far end's jitter buffer
        absorbs the empty slot instead. Audio queued ahead of time (a prompt, a TTS
        answer) ends as before: its tail goes as soon as the queue runs dry.
        """
        if not self._out:
            held = (
                hold
                and self._dry_slots < IDLE_HANGOVER_SLOTS
                and _now() - self._pushed_at < _HOLD_S
            )
            tail = None if held else self._framer.finish()
            if not tail:
                self._dry_slots += 1
                return None
            self._out.extend(tail)
        self._dry_slots = 0
        frame = self._out.popleft()
        if len(self._out) < self._max_out:
            self._space.set()
        return frame

    def _frame_sent(self) -> None:
        """A frame of queued audio went out: it counts as played."""
        self._count_sent(self.stats)

    def _count_sent(self, stats: TransportStats) -> None:
        self._played_frames += 1
        stats.frames_out += 1
        self._dry_slots = 0

    def _silence_due(self) -> bool:
        """Whether this empty slot gets filler silence (else it stays empty, as before).

        Not the first empty slots after audio: an echo's frame that comes a little late
        would find silence sent in its slot and go out a slot later, leaving a 20 ms hole
        in the audio (a CI run's RTP echo came back in two pieces). An empty slot only
        delays the next frame, which the far end's jitter buffer absorbs. Idle streams
        and flushed ones get silence at once. Asked after ``_pop_frame`` found the slot
        empty (which counts the dry slots).
        """
        return self._dry_slots > IDLE_HANGOVER_SLOTS

    def _silence_sent(self) -> None:
        """A frame of filler silence went out: nothing the app sent, nothing played."""
        self.stats.silence_out += 1

    def _deliver(self, frame: AudioChunk) -> None:
        """Hand one inbound wire frame to ``frames()``, converted as the reader asked."""
        if self._in_conv is not None:
            frame = self._in_conv.convert(frame)
            if not frame.data:
                return
        self._enqueue(frame)

    def _enqueue(self, frame: AudioChunk) -> None:
        """Queue one frame for ``frames()`` as is (dropping the oldest if nobody reads)."""
        self._queue_in(frame, self.stats)

    def _queue_in(self, frame: AudioChunk, stats: TransportStats) -> None:
        """``_enqueue``, counting on ``stats`` (a subclass whose ``stats`` property
        gathers figures from elsewhere passes the plain object it fills)."""
        if self._closed:
            return
        q = self._in
        if len(q) >= self._in_limit:
            q.popleft()
            stats.inbound_dropped += 1
        q.append(frame)
        stats.frames_in += 1
        if self._in_waiters:
            self._wake_readers()

    def _wake_readers(self) -> None:
        """Wake the readers waiting in ``frames()``: through their loop's ``ReaderWakes``,
        so a tick's hundreds of readers run a slice per loop pass (see wakes.py)."""
        waiters, self._in_waiters = self._in_waiters, []
        if not waiters:
            return
        loop = waiters[0].get_loop()
        wakes = self._wakes
        if wakes is None or wakes.loop is not loop:
            wakes = self._wakes = reader_wakes(loop)
        wakes.wake(waiters)

    def _emit(self, event: TransportEvent) -> None:
        if self._events.qsize() >= self._max_events:
            self._events.get_nowait()
            self.stats.dropped_events += 1
            self._event_dropped()
        self._events.put_nowait(event)
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:
                logger.exception("on_event callback failed")

    def _event_dropped(self) -> None:
        """Hook: a subclass counts a dropped event where else it keeps figures."""
        return None

    def _mark_closed(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self.close_reason = reason
        self._out.clear()
        self._space.set()
        self._in_ended = True
        self._wake_readers()
        self._events.put_nowait(None)
