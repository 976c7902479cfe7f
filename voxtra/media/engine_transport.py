"""A call's ``MediaTransport`` backed by its row of the app's one ``MediaEngine``.

``CallMedia`` opens one of these per ExternalMedia RTP call when ``media.engine`` is
on (ulaw/alaw): every call's RTP then moves through the engine's one socket, one
``recvmmsg`` and one ``sendmmsg`` per tick, with decoding, resampling and the RTP
headers done as arrays (``voxtra.media.engine``). The facade keeps ``RtpTransport``'s
contract: ``frames()`` yields 20 ms frames in the wire format or the format
``set_inbound_format`` asked for, ``send()`` queues any audio, ``flush()`` drops it,
``played_ms`` counts what went out, ``CallEnded`` after ``close()``; the engine takes
datagrams only from the address Asterisk gave (``set_remote``) and applies the same
checks (payload type, frame size, RFC 3550 probation of strays).

Per tick, inside the engine's tick (outbound first, ``EngineHub._before_read``, so
the tick's packets leave before the read; then ``EngineHub._on_tick``):

- inbound, each stream whose frame came gets it as one slice of the tick's arrays:
  the G.711 payload as received, its 8 kHz PCM, or its PCM at the engine's rate
  (16 kHz), whichever its reader asked for; any other format goes through the
  transport's converter. Frames found lost are handed on as silence first (at most
  ``_MAX_CONCEAL`` a tick), as ``RtpTransport`` does;
- outbound, only streams with audio queued (or just finished) take a Python step: the
  next wire frame goes into the engine's ``out_wire`` row (no resampling or encoding
  in the tick: ``send()`` already converted it). Every other stream gets the
  engine's pre-filled silence row, counted in ``stats.silence_out`` when read. Right
  after audio, ``voxtra.media.transport.IDLE_HANGOVER_SLOTS`` slots stay empty
  (``out_skip``), as on the per-call path, so an echo's late frame leaves no hole.

``learn_remote`` (no UNICASTRTP address from Asterisk) takes the first valid sender
from an address no call has, oldest learning call first, as the shared ``RtpEndpoint``
does. Not carried: ``slin``/``slin16`` (the engine is G.711: ``CallMedia`` gives those
calls ``RtpTransport``); a stranger's datagram belongs to no call, so it is counted on
the engine (``EngineHub.engine.stats``), as the shared endpoint counts it on itself.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence

import numpy as np

from voxtra.errors import ConfigError, MediaError
from voxtra.media.engine import EngineStream, MediaEngine, TickAudio
from voxtra.media.frames import AudioChunk, Codec
from voxtra.media.pacer import Ticker
from voxtra.media.rtp import PT_PCMA, PT_PCMU
from voxtra.media.transport import MediaTransport, TransportStats

__all__ = ["ENGINE_WIRE_FORMATS", "EngineHub", "EngineTransport"]

logger = logging.getLogger(__name__)

ENGINE_WIRE_FORMATS = {"ulaw": Codec.ULAW, "alaw": Codec.ALAW}
_MAX_CONCEAL = 10
"""Silence frames handed on for lost packets per call per tick (200 ms, the per-call
jitter buffer's bound for one gap)."""
_FRAME = 160

# What a reader's frames are cut from: the wire payload, 8 kHz PCM, the engine's PCM.
_IN_WIRE, _IN_PCM8, _IN_PCM, _IN_CONVERT = 0, 1, 2, 3


class EngineTransport(MediaTransport):
    """One call's media on the app's ``MediaEngine`` (``await hub.open(...)``)."""

    def __init__(self, hub: EngineHub, stream: EngineStream, codec: Codec, name: str) -> None:
        super().__init__(codec, 8000)
        self.hub = hub
        self.stream = stream
        self.name = name
        self._learn = False
        self._was_sending = False
        self._in_kind = _IN_WIRE
        self._by_hub = True
        self._busy = False
        """In the hub's list of streams that need a Python step in the tick."""
        self._silence_chunk = AudioChunk.silence(codec, 8000)

    @property
    def call_id(self) -> str:
        return self.name

    @property
    def local_address(self) -> tuple[str, int]:
        return self.hub.engine.local_address

    @property
    def advertised_address(self) -> str:
        """``host:port`` to give Asterisk as ``external_host`` (the engine's socket)."""
        return self.hub.engine.advertised_address

    @property
    def learn_remote(self) -> bool:
        """Symmetric RTP: the first valid sender from an address no call has becomes
        the remote (off by default, as on ``RtpTransport``: a stranger's packet would
        decide where the caller's audio goes). For peers no signalling describes."""
        return self._learn

    @learn_remote.setter
    def learn_remote(self, value: bool) -> None:
        self._learn = value
        if not self._closed:
            self.stream.learn(value)

    @property
    def remote(self) -> tuple[str, int] | None:
        """Where RTP goes: Asterisk's address (``set_remote``), or the one learnt."""
        return self.stream.remote

    def set_remote(self, host: str, port: int) -> None:
        """Where to send (Asterisk's UNICASTRTP address); the only source read from."""
        if self._closed:
            return
        self.stream.set_remote(host, port)

    @property
    def inbound_payload_types(self) -> set[int]:
        """Payload types seen on accepted inbound packets (as ``RtpTransport``'s): the
        engine accepts only the call's own G.711 type."""
        if not self._stats.frames_in:
            return set()
        return {PT_PCMA if self.wire_codec is Codec.ALAW else PT_PCMU}

    # stats: the stream's counters live in the engine's arrays; read them when asked
    @property
    def stats(self) -> TransportStats:
        st = self._stats
        s = self.stream
        st.lost, st.late, st.duplicates = s.lost, s.late, s.duplicates
        st.malformed, st.dropped_payload_type, st.dropped_size = (
            s.malformed,
            s.dropped_payload_type,
            s.dropped_size,
        )
        st.dropped_stray, st.resyncs, st.reordered = s.strays, s.resyncs, s.reordered
        st.silence_out = max(0, s.frames_out - self._played_frames)
        return st

    @stats.setter
    def stats(self, value: TransportStats) -> None:
        self._stats = value

    def set_inbound_format(self, codec: Codec, rate: int) -> None:
        super().set_inbound_format(codec, rate)
        if self._in_conv is None:
            kind = _IN_WIRE
        elif codec is Codec.PCM16 and rate == 8000:
            kind = _IN_PCM8
        elif codec is Codec.PCM16 and rate == self.hub.engine.sample_rate:
            kind = _IN_PCM
        else:
            kind = _IN_CONVERT
        if (kind == _IN_PCM) != (self._in_kind == _IN_PCM):
            self.hub.reading_pcm(self, kind == _IN_PCM)
        self._in_kind = kind

    # the base class's per-frame steps, on the plain stats object (the property reads
    # the engine's counters: too dear per frame)
    def _enqueue(self, frame: AudioChunk) -> None:
        self._queue_in(frame, self._stats)

    def _frame_sent(self) -> None:
        self._count_sent(self._stats)

    def _convert_in(self, chunk: AudioChunk) -> None:
        self._deliver(chunk)

    def _next_frame(self) -> bytes | None:
        return self._pop_frame()

    def _idle_slot(self) -> bool:
        """An empty slot: True once the hangover is over (silence from then on)."""
        return self._silence_due()

    def _on_queued(self) -> None:
        if not self._busy:
            self._busy = True
            self.hub.busy.append(self)

    async def _on_flush(self) -> None:
        self._was_sending = False
        self._on_queued()  # its next slot is silence at once (the base reset dry slots)

    async def _shutdown(self) -> None:
        self.hub.forget(self)


class EngineHub:
    """The app's one ``MediaEngine`` and the call transports on it."""

    _shared: dict[Ticker, dict[str, EngineHub]] = {}

    def __init__(self, engine: MediaEngine) -> None:
        self.engine = engine
        engine.wire_out = True
        engine.on_tick = self._on_tick
        engine.before_read = self._before_read  # the calls' audio leaves before the read
        self._by_id: dict[int, EngineTransport] = {}
        self.busy: list[EngineTransport] = []
        """Transports with audio queued, or in their hangover after it."""
        self._pcm_readers = 0
        engine.resample_in = False  # until a reader asks for the engine's rate
        self._key: tuple[Ticker, str] | None = None

    @classmethod
    def shared(
        cls,
        ticker: Ticker,
        bind_host: str,
        ports: Sequence[int],
        *,
        advertised_host: str | None = None,
        capacity: int = 1024,
    ) -> EngineHub:
        """The hub of ``ticker`` on ``bind_host`` (its engine bound on a port of
        ``ports`` and started on first use)."""
        table = cls._shared.setdefault(ticker, {})
        key = f"{bind_host}|{advertised_host}"
        found = table.get(key)
        if found is not None and not found.engine.closed:
            return found
        order = list(ports)
        start = random.randrange(len(order)) if order else 0
        last: MediaError | None = None
        for port in order[start:] + order[:start] or [0]:
            try:
                engine = MediaEngine(
                    ticker=ticker,
                    bind_host=bind_host,
                    bind_port=port,
                    advertised_host=advertised_host,
                    sample_rate=16000,
                    capacity=capacity,
                    wire_out=True,
                )
            except MediaError as exc:
                last = exc
                continue
            made = cls(engine)
            made._key = (ticker, key)
            table[key] = made
            engine.start()
            return made
        raise MediaError(f"no free port for the media engine on {bind_host}: {last}")

    @classmethod
    async def close_all(cls, ticker: Ticker) -> None:
        """Close every hub of ``ticker`` (the app stopping)."""
        for hub in list(cls._shared.pop(ticker, {}).values()):
            await hub.aclose()

    @property
    def full(self) -> bool:
        return len(self.engine) >= self.engine.capacity

    def open(self, wire_format: str, *, name: str) -> EngineTransport:
        """A transport for one call in ``wire_format`` (``ulaw`` or ``alaw``)."""
        codec = ENGINE_WIRE_FORMATS.get(wire_format)
        if codec is None:
            raise ConfigError(
                f"the media engine carries {sorted(ENGINE_WIRE_FORMATS)}, not {wire_format!r}"
            )
        stream = self.engine.add(wire_format, name=name)
        transport = EngineTransport(self, stream, codec, name)
        self._by_id[stream.id] = transport
        return transport

    def reading_pcm(self, transport: EngineTransport, reads: bool) -> None:
        """``transport`` starts (or stops) reading the engine's resampled rows: the
        engine resamples inbound only while somebody does (an echo or an 8 kHz
        reader needs none of it)."""
        if reads:
            self._pcm_readers += 1
            self.engine.restart_resampling(transport.stream)
        else:
            self._pcm_readers -= 1
        self.engine.resample_in = self._pcm_readers > 0

    def forget(self, transport: EngineTransport) -> None:
        if transport._in_kind == _IN_PCM and transport._by_hub:
            self.reading_pcm(transport, False)
        transport._by_hub = False
        self._by_id.pop(transport.stream.id, None)
        transport.stream.close()
        if transport._busy:
            transport._busy = False
            self.busy.remove(transport)
        if not self._by_id:
            # The last call gone: after this tick, the engine stops ticking and closes
            # its socket, so an idle app runs no ticker (50 loop wakes a second) and
            # holds no port; the next call opens a new engine. (Kept open, the Asterisk
            # kill test found the ticker task and the socket outliving every call.)
            try:
                asyncio.get_running_loop().call_soon(self._close_if_idle)
            except RuntimeError:  # no loop running (a sync teardown): nothing is ticking
                self._close_if_idle()

    def _close_if_idle(self) -> None:
        if self._by_id or self.engine.closed:
            return
        self.engine.close()
        self._unshare()

    def _unshare(self) -> None:
        if self._key is not None:
            ticker, key = self._key
            table = self._shared.get(ticker)
            if table is not None and table.get(key) is self:
                del table[key]

    def __len__(self) -> int:
        return len(self._by_id)

    async def aclose(self) -> None:
        for transport in list(self._by_id.values()):
            await transport.close()
        await self.engine.aclose()
        self._unshare()

    # --- the tick (inside MediaEngine.tick) -------------------------------------------

    def _on_tick(self, audio: TickAudio) -> None:
        by_id = self._by_id
        ids = audio.ids
        lost = audio.lost
        if lost is not None and lost.any():
            for row in np.flatnonzero(lost).tolist():
                tr = by_id.get(int(ids[row]))
                if tr is not None:
                    _conceal(tr, min(int(lost[row]), _MAX_CONCEAL))
        rows = np.flatnonzero(audio.present)
        if len(rows):
            wire, pcm8, pcm = audio.wire, audio.pcm8, audio.pcm
            assert wire is not None and pcm8 is not None
            rate = self.engine.sample_rate
            for row, sid in zip(rows.tolist(), ids[rows].tolist(), strict=True):
                tr = by_id.get(sid)
                if tr is None or tr._closed:
                    continue
                kind = tr._in_kind
                if kind == _IN_WIRE:
                    tr._enqueue(AudioChunk(wire[row].tobytes(), 8000, tr.wire_codec))
                elif kind == _IN_PCM:
                    tr._enqueue(AudioChunk(pcm[row].tobytes(), rate, Codec.PCM16))
                elif kind == _IN_PCM8:
                    tr._enqueue(AudioChunk(pcm8[row].tobytes(), 8000, Codec.PCM16))
                else:
                    tr._convert_in(AudioChunk(wire[row].tobytes(), 8000, tr.wire_codec))

    def _before_read(self) -> None:
        if self.busy:
            self._outbound()

    def _outbound(self) -> None:
        """The streams with audio: their next frame into ``out_wire`` (one copy for all)."""
        engine = self.engine
        pacer = engine.ticker.pacer
        lateness = pacer.last_lateness if pacer is not None else 0.0
        rows: list[int] = []
        frames: list[bytes] = []
        still: list[EngineTransport] = []
        for tr in self.busy:
            if tr._closed:
                tr._busy = False
                continue
            if tr.remote is None:  # nothing goes out before Asterisk's address is known
                still.append(tr)
                continue
            frame = tr._next_frame()
            if frame is not None:
                rows.append(tr.stream.index)
                frames.append(frame)
                tr._frame_sent()
                tr._was_sending = True
                tr._stats.pacing_lateness_s.append(lateness)
                still.append(tr)
                continue
            if tr._was_sending:
                tr._stats.underruns += 1
                tr._was_sending = False
            if tr._idle_slot():  # idle: the engine's silence row from now on
                tr._busy = False
            else:
                engine.out_skip[tr.stream.index] = True
                still.append(tr)
        self.busy = still
        if rows:
            engine.out_wire[rows] = np.frombuffer(b"".join(frames), np.uint8).reshape(-1, _FRAME)


def _conceal(tr: EngineTransport, count: int) -> None:
    """Hand on ``count`` frames of silence for packets found lost."""
    if tr._closed:
        return
    for _ in range(count):
        tr._stats.concealed += 1
        tr._convert_in(tr._silence_chunk)
