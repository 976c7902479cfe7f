"""A batched media engine: every call's audio of a 20 ms tick as one array.

``RtpTransport`` gives each call its own reader (``async for chunk in transport``):
per frame that is a Python object, a queue, a woken task and a ``send()``. Measured
with 500 calls on this 2-core VM (docs/performance.md) those per-frame steps, not the
arithmetic, were most of the ~1,000 us of CPU per call-second. ``MediaEngine`` is the
other way round, for apps that process many calls alike (a media server, a recorder,
a mixer, a model fed in batches): once per tick it

1. reads every datagram waiting on its one UDP socket with one ``recvmmsg`` into
   preallocated rows (``voxtra.media.mmsg.MmsgArrays``),
2. demultiplexes them by source address with a sorted-array search (Asterisk sends
   each ExternalMedia channel from a port of its own) and checks the RTP headers as
   arrays: the usual packet (the next in sequence, from the known SSRC, one 20 ms
   G.711 frame) is copied to its stream's row without a Python step of its own,
3. decodes every stream's frame with one table lookup (mu-law and A-law rows
   together), resamples all of them with one matrix product (``BatchResampler``),
4. calls the app's ``on_tick(TickAudio)`` with the (streams x samples) PCM16 array,
5. resamples and encodes what it returns the same way, writes the RTP headers of
   every stream at once into the send rows, and sends them with one ``sendmmsg``.

A packet out of the ordinary (lost, reordered, duplicated, a new SSRC, a second
packet behind a held one, a malformed one) sends its stream through a per-packet path
for that tick: it keeps a small reorder backlog (``max_backlog`` frames) and, once the
stream is back in order, hands it back to the array path. A stream whose frame did not
come gets silence that tick (``TickAudio.present`` False). Each stream is sent exactly
one packet per tick once its remote is known, as ``RtpTransport`` does.

Scope: G.711 wire formats (``ulaw``, ``alaw``; 20 ms frames), IPv4, remote set by
signalling (``set_remote``, Asterisk's ``UNICASTRTP_LOCAL_ADDRESS``/``PORT``): a
datagram from any other address is dropped and counted. The per-call path
(``RtpTransport``) stays for readers that want a stream of ``AudioChunk`` each.
"""

from __future__ import annotations

import logging
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from voxtra.errors import ConfigError, MediaError
from voxtra.media import g711
from voxtra.media.frames import FRAME_MS, Codec
from voxtra.media.jitter import MAX_DROPOUT, MAX_MISORDER
from voxtra.media.mmsg import MmsgArrays, mmsg_supported
from voxtra.media.pacer import Ticker
from voxtra.media.resample import BatchResampler, Quality
from voxtra.media.rtp import PT_PCMA, PT_PCMU, RtpPacket, RtpParseError, seq_diff

__all__ = ["EngineStats", "EngineStream", "MediaEngine", "TickAudio", "TickHandler"]

logger = logging.getLogger(__name__)

_WIRE = {"ulaw": (Codec.ULAW, PT_PCMU), "alaw": (Codec.ALAW, PT_PCMA)}
_FRAME = 8000 * FRAME_MS // 1000  # G.711 bytes (= samples) in one 20 ms frame
_PACKET = 12 + _FRAME
_DEC = np.concatenate((g711.decode_table(Codec.ULAW), g711.decode_table(Codec.ALAW)))
"""mu-law codes at 0-255, A-law at 256-511: one lookup decodes rows of both laws."""
_ENC = np.concatenate((g711.encode_table(Codec.ULAW), g711.encode_table(Codec.ALAW)))


@dataclass(frozen=True, slots=True)
class TickAudio:
    """One tick's inbound audio of every stream, row ``i`` for stream ``ids[i]``.

    The arrays belong to the engine and are valid during ``on_tick`` only: copy what
    you keep.
    """

    ids: npt.NDArray[np.int64]
    """The streams' ``EngineStream.id``, one per row."""
    pcm: npt.NDArray[np.int16]
    """(streams x samples) PCM16 at the engine's ``sample_rate``: 20 ms a row."""
    present: npt.NDArray[np.bool_]
    """Whether the stream's frame came (False: silence in its place)."""
    wire: npt.NDArray[np.uint8] | None = None
    """(streams x 160) the G.711 payloads as received (rows where ``present``)."""
    pcm8: npt.NDArray[np.int16] | None = None
    """(streams x 160) PCM16 at 8 kHz, decoded before resampling."""
    lost: npt.NDArray[np.int64] | None = None
    """Frames of each stream found lost this tick (before this tick's frame)."""


TickHandler = Callable[[TickAudio], "npt.NDArray[np.int16] | None"]
"""``on_tick``: the outbound PCM16 rows (same shape as ``pcm``), or None for silence."""


@dataclass(slots=True)
class EngineStats:
    received: int = 0
    sent: int = 0
    recv_calls: int = 0
    send_calls: int = 0
    dropped_foreign_source: int = 0
    dropped_over_limit: int = 0
    """Datagrams over ``_MAX_PER_STREAM`` for one stream in one tick (dropped unread)."""
    slow_packets: int = 0
    """Packets that took the per-packet path (anything but the next in order)."""
    handler_errors: int = 0


class EngineStream:
    """One stream of a ``MediaEngine`` (``engine.add()``); its counters live in the
    engine's arrays and are read here."""

    def __init__(self, engine: MediaEngine, stream_id: int, name: str) -> None:
        self.engine = engine
        self.id = stream_id
        self.name = name
        self.index = -1
        """Its row in the engine's arrays (moves when another stream leaves)."""
        self.remote: tuple[str, int] | None = None
        self.closed = False
        self.malformed = 0
        self.dropped_payload_type = 0
        self.dropped_size = 0
        self.duplicates = 0
        self.overflow = 0
        self.reordered = 0
        """Packets that came after a later one of the stream, in time to be played."""
        self.strays = 0
        """Packets far outside the stream (another SSRC, a sequence jump beyond
        ``MAX_DROPOUT`` or ``MAX_MISORDER`` behind) not confirmed by the packet after
        them (RFC 3550 probation, as ``JitterBuffer``): dropped."""
        self.resyncs = 0

    def set_remote(self, host: str, port: int) -> None:
        """Where to send, and the only source taken from (Asterisk's RTP is symmetric)."""
        self.engine.set_remote(self, host, port)

    def learn(self, on: bool = True) -> None:
        """Take the first valid sender as the remote (``MediaEngine.learn``)."""
        self.engine.learn(self, on)

    def close(self) -> None:
        self.engine.remove(self)

    def _count(self, name: str) -> int:
        if self.closed:
            return self.engine.final_counts.get((self.id, name), 0)
        return int(self.engine.counter(name)[self.index])

    @property
    def expected_sequence(self) -> int | None:
        """The sequence number of the peer's next frame (None before its first)."""
        if self.closed:
            return None
        exp = int(self.engine._exp[self.index])
        return None if exp < 0 else exp

    @property
    def ssrc(self) -> int | None:
        """The SSRC of the peer's stream (None before its first packet)."""
        if self.closed or self.expected_sequence is None:
            return None
        return int(self.engine._ssrc_in[self.index])

    @property
    def frames_in(self) -> int:
        """Packets accepted from the peer."""
        return self._count("frames_in")

    @property
    def frames_out(self) -> int:
        return self._count("frames_out")

    @property
    def concealed(self) -> int:
        """Ticks whose frame did not come (silence handed on), once the stream started."""
        return self._count("concealed")

    @property
    def lost(self) -> int:
        return self._count("lost")

    @property
    def late(self) -> int:
        return self._count("late")

    @property
    def caught_up(self) -> int:
        """Quiet frames skipped to shrink the delay a pile-up left (``MediaEngine``'s
        catch-up: after a stall the stream played that many frames behind for good)."""
        return self._count("caught_up")


_MAX_PER_STREAM = 64
"""Datagrams of one stream taken into its per-packet path per tick at most (as the
shared ``RtpEndpoint`` and a per-call socket take): a flood from its peer's address
(spoofed) was all parsed, about 20 us a packet with a reorder check over what waits,
and 10,000 of them made a 217 ms tick (measured on this VM). A stall's backlog is
one packet a stream per 20 ms of it: only one over 1.28 s reaches this, and the
stream then resumes from the next packet, as on those paths."""
_COUNTERS = ("frames_in", "frames_out", "concealed", "lost", "late", "caught_up")
_QUIET_PEAK = 1024
"""A frame whose loudest sample is below this (-30 dBFS) may be skipped to catch up:
a phone line's noise floor is far below it and speech peaks far above."""


class MediaEngine:
    """RTP for many calls on one socket, processed as arrays once per tick.

    ``engine = await MediaEngine.open(sample_rate=16000)``; ``s = engine.add("ulaw")``
    per call (give Asterisk ``engine.advertised_address`` as ``external_host``, then
    ``s.set_remote(host, port)``); ``engine.on_tick = handler``. ``on_tick`` runs in
    the ticker's callback: keep it quick and non-blocking.
    """

    def __init__(
        self,
        *,
        ticker: Ticker | None = None,
        bind_host: str = "127.0.0.1",
        bind_port: int = 0,
        advertised_host: str | None = None,
        sample_rate: int = 16000,
        capacity: int = 1024,
        quality: Quality = "HQ",
        max_backlog: int = 5,
        on_tick: TickHandler | None = None,
        wire_out: bool = False,
    ) -> None:
        if not mmsg_supported():
            raise MediaError("the media engine needs recvmmsg/sendmmsg (Linux)")
        self.ticker = ticker if ticker is not None else Ticker()
        self._own_ticker = ticker is None
        self.sample_rate = sample_rate
        self.capacity = capacity
        self.max_backlog = max_backlog
        self.on_tick = on_tick
        self.advertised_host = advertised_host
        self.wire_out = wire_out
        """Outbound from ``out_wire`` (G.711 payloads the handler wrote, silence by
        default each tick; ``out_skip`` rows send nothing) instead of the PCM16 that
        ``on_tick`` returns: frames already in the wire format skip the resampler and
        the encoder (``voxtra.media.engine_transport``)."""
        self.before_read: Callable[[], None] | None = None
        """With ``wire_out``: fills ``out_wire`` / ``out_skip`` for this tick before the
        engine reads, and the tick's packets leave first; ``on_tick`` then gets the
        inbound audio only. For outbound that does not wait on this tick's inbound (the
        hub's queued call audio): reading, checking and handing over 200 calls' frames
        before the send put 1-2 ms between a tick's deadline and its ``sendmmsg``
        (``bench/agent_density.py --media engine``)."""
        self.resample_in = True
        """Hand ``on_tick`` PCM at ``sample_rate``. False: ``TickAudio.pcm`` is the 8 kHz
        decode (``pcm8``) and the inbound resampling is skipped (a tick's largest
        product: about 45 us per call-second at N=500); ``restart_resampling`` a
        stream before reading its resampled rows again."""
        self.stats = EngineStats()
        self._up = BatchResampler(8000, sample_rate, _FRAME, quality)
        self._down = BatchResampler(sample_rate, 8000, self._up.out_samples, quality)
        self.frame_samples = self._up.out_samples
        """Samples per row of ``TickAudio.pcm`` (and of what ``on_tick`` returns)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            # a tick's packets of every call wait here together (see rtp_endpoint.py)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            sock.bind((bind_host, bind_port))
        except OSError as exc:
            sock.close()
            raise MediaError(f"cannot bind the media engine on {bind_host}: {exc}") from exc
        self._sock = sock
        host, port = sock.getsockname()[:2]
        self.local_address = (str(host), int(port))
        # Room for two packets per stream in one read (a late tick): more waiting than
        # that is read again, per packet.
        self._mm = MmsgArrays(sock, 2 * capacity, _PACKET + 4)
        self._mm.slen[:] = _PACKET
        self._rkeys = self._mm.rnames.view(np.uint64)[:, 0]
        # Header fields of every received row, as views (no copy; rows are 176 bytes):
        # the sequence number (bytes 2-3) and the SSRC (8-11), big-endian.
        self._rseq = self._mm.rdata.view(">u2")[:, 1]
        self._rssrc = self._mm.rdata.view(">u4")[:, 2]
        self._sseq = self._mm.sdata.view(">u2")[:, 1]
        self._sts = self._mm.sdata.view(">u4")[:, 1]
        self._sssrc = self._mm.sdata.view(">u4")[:, 2]
        """Source of each received row: family, port and IPv4 address as one number."""
        cap = capacity
        self._n = 0
        self._n_alaw = 0
        self._streams: list[EngineStream] = []
        self._by_id: dict[int, EngineStream] = {}
        self._next_id = 0
        self._ids = np.zeros(cap, np.int64)
        self._alaw = np.zeros(cap, np.bool_)
        self._dec_off = np.zeros(cap, np.uint16)
        self._enc_off = np.zeros(cap, np.int32)
        self._pt = np.zeros(cap, np.uint8)
        self._silence_code = np.zeros(cap, np.uint8)
        self._key = np.zeros(cap, np.uint64)
        self._names = np.zeros((cap, 32), np.uint8)
        self._has_remote = np.zeros(cap, np.bool_)
        self._exp = np.full(cap, -1, np.int32)
        self._ssrc_in = np.zeros(cap, np.uint32)
        depth = max_backlog + 1
        self._depth = depth
        self._ring = np.zeros((cap, depth, _FRAME), np.uint8)
        """Per stream, frames that came before their turn (a ring from ``_head``)."""
        self._head = np.zeros(cap, np.int64)
        self._held = np.zeros(cap, np.int64)
        """How many frames wait in the ring; the first is sequence ``_exp``."""
        self._seq_out = np.zeros(cap, np.uint16)
        self._ts_out = np.zeros(cap, np.uint32)
        self._ssrc_out = np.zeros(cap, np.uint32)
        self._marker = np.zeros(cap, np.bool_)
        self._hist_up = self._up.new_history(cap)
        self._hist_down = self._down.new_history(cap)
        self._counts = {name: np.zeros(cap, np.int64) for name in _COUNTERS}
        self.final_counts: dict[tuple[int, str], int] = {}
        """Counters of streams that left, by (id, name)."""
        self._backlog: dict[int, dict[int, bytes]] = {}
        self._learning: list[EngineStream] = []
        """Streams waiting to learn their remote from the first valid sender (``learn``)."""
        self._probe: dict[int, tuple[int, int, bytes]] = {}
        """Per stream id: the last stray packet (SSRC, sequence, payload), which becomes
        a new stream only if the next stray is its successor (RFC 3550 probation)."""
        """Per stream id: frames waiting behind a gap (the per-packet path's reorder)."""
        self._route_keys = np.zeros(0, np.uint64)
        self._route_rows = np.zeros(0, np.int64)
        self._routes_dirty = False
        self._snames_rows = -1
        """Rows of ``snames`` that hold streams 0..n-1's addresses in order (-1: none)."""
        self._win = np.zeros((cap, _FRAME), np.uint8)
        self._mark = np.zeros(cap, np.bool_)
        self._tick_lost = np.zeros(cap, np.int64)
        self.out_wire = np.zeros((cap, _FRAME), np.uint8)
        self.out_skip = np.zeros(cap, np.bool_)
        self._handle: int | None = None
        self._ticking = False
        self._leaving: list[EngineStream] = []
        """Streams closed during a tick (from ``on_tick`` or ``before_read``): they leave
        when it ends (``remove``)."""
        self.closed = False

    @classmethod
    async def open(cls, **kwargs: object) -> MediaEngine:
        """Create, bind and start ticking (needs the running loop for the ticker)."""
        self = cls(**kwargs)  # type: ignore[arg-type]
        self.start()
        return self

    def start(self) -> None:
        if self._handle is None and not self.closed:
            self._handle = self.ticker.add(self.tick)

    @property
    def advertised_address(self) -> str:
        """``host:port`` to give Asterisk as every channel's ``external_host``."""
        host, port = self.local_address
        if self.advertised_host:
            host = self.advertised_host
        elif host == "0.0.0.0":
            host = "127.0.0.1"
        return f"{host}:{port}"

    def __len__(self) -> int:
        return self._n

    @property
    def streams(self) -> list[EngineStream]:
        """The streams, in row order."""
        return list(self._streams)

    def counter(self, name: str) -> npt.NDArray[np.int64]:
        """Per-row counter ``name`` (one of ``frames_in``, ``frames_out``, ``concealed``,
        ``lost``, ``late``) for the current streams."""
        return self._counts[name][: self._n]

    # --- membership -------------------------------------------------------------------

    def add(
        self, wire_format: str = "ulaw", *, remote: tuple[str, int] | None = None, name: str = ""
    ) -> EngineStream:
        """A new stream (a call's ExternalMedia channel) in ``wire_format``."""
        if self.closed:
            raise MediaError("the media engine is closed")
        fmt = _WIRE.get(wire_format)
        if fmt is None:
            raise ConfigError(f"the media engine carries {sorted(_WIRE)}, not {wire_format!r}")
        if self._n >= self.capacity:
            raise MediaError(f"the media engine is full ({self.capacity} streams)")
        codec, pt = fmt
        i = self._n
        stream = EngineStream(self, self._next_id, name or f"s{self._next_id}")
        self._next_id += 1
        stream.index = i
        self._streams.append(stream)
        self._by_id[stream.id] = stream
        self._n += 1
        alaw = codec is Codec.ALAW
        self._n_alaw += alaw
        self._ids[i] = stream.id
        self._alaw[i] = alaw
        self._dec_off[i] = 256 if alaw else 0
        self._enc_off[i] = 65536 if alaw else 0
        self._pt[i] = pt
        self._silence_code[i] = 0xD5 if alaw else 0xFF
        self._key[i] = 0
        self._has_remote[i] = False
        self._exp[i] = -1
        self._held[i] = 0
        self._head[i] = 0
        self._seq_out[i] = secrets.randbits(16)
        self._ts_out[i] = secrets.randbits(32)
        self._ssrc_out[i] = secrets.randbits(32)
        self._marker[i] = True
        self._hist_up[i] = 0
        self._hist_down[i] = 0
        for arr in self._counts.values():
            arr[i] = 0
        self._snames_rows = -1
        if remote is not None:
            self.set_remote(stream, *remote)
        return stream

    def set_remote(self, stream: EngineStream, host: str, port: int) -> None:
        if stream.closed:
            raise MediaError("the stream has left the media engine")
        try:
            row = self._mm.name_row(socket.gethostbyname(host), int(port))
        except OSError as exc:
            raise MediaError(f"cannot send RTP to {host}:{port}: {exc}") from exc
        i = stream.index
        stream.remote = (host, int(port))
        if stream in self._learning:
            self._learning.remove(stream)
        self._names[i] = row
        self._key[i] = row[:8].view(np.uint64)[0]
        self._has_remote[i] = True
        self._routes_dirty = True
        self._snames_rows = -1

    def learn(self, stream: EngineStream, on: bool = True) -> None:
        """Symmetric RTP for a stream no signalling gave a remote: the first valid RTP
        packet (its payload type, one 20 ms frame) from an address no stream has makes
        that address its remote. Streams learn one each, oldest first."""
        if stream.closed:
            raise MediaError("the stream has left the media engine")
        if on and stream.remote is None:
            if stream not in self._learning:
                self._learning.append(stream)
        elif stream in self._learning:
            self._learning.remove(stream)

    def _learn(self, rows: npt.NDArray[np.intp], slow: dict[int, list[bytes]]) -> int:
        """Datagrams of this read from unknown sources (``rows``): give valid ones to
        the streams learning their remote; how many were taken."""
        mm = self._mm
        taken = 0
        learnt: dict[int, EngineStream] = {}
        for j in rows.tolist():
            key = int(self._rkeys[j])
            stream = learnt.get(key)
            if stream is None:
                if not self._learning:
                    continue
                candidate = self._learning[0]
                data = mm.rdata[j]
                if not (
                    int(mm.rlen[j]) == _PACKET
                    and data[0] == 0x80
                    and (data[1] & 0x7F) == self._pt[candidate.index]
                ):
                    continue
                name = mm.rnames[j]
                host = ".".join(str(int(b)) for b in name[4:8])
                port = int(name[2]) << 8 | int(name[3])
                self._learning.pop(0)
                self.set_remote(candidate, host, port)
                logger.debug(
                    "media engine: %s learned its remote %s:%d", candidate.name, host, port
                )
                learnt[key] = stream = candidate
            slow.setdefault(stream.id, []).append(
                bytes(mm.rdata[j, : min(int(mm.rlen[j]), mm.slot)])
            )
            self.stats.slow_packets += 1
            taken += 1
        return taken

    def restart_resampling(self, stream: EngineStream) -> None:
        """Clear ``stream``'s inbound resampler history (stale after ``resample_in``
        was off): its next row starts clean instead of with old audio's tail."""
        if not stream.closed:
            self._hist_up[stream.index] = 0

    def remove(self, stream: EngineStream) -> None:
        """The stream leaves (its call ended); the last row moves into its place.

        During a tick (``on_tick`` or ``before_read`` closing a stream) it leaves when
        the tick ends: the last row moved under the tick's arrays, and its send then
        failed on their shapes (ValueError out of the tick, which the ticker answers by
        dropping the engine's callback: every call on it went silent for good), or
        sent one call's answer to another's peer.
        """
        if stream.closed or stream.engine is not self:
            return
        if self._ticking:
            if stream not in self._leaving:
                self._leaving.append(stream)
            return
        i, last = stream.index, self._n - 1
        for name, arr in self._counts.items():
            self.final_counts[(stream.id, name)] = int(arr[i])
        stream.closed = True
        self._n_alaw -= bool(self._alaw[i])
        self._backlog.pop(stream.id, None)
        self._probe.pop(stream.id, None)
        if stream in self._learning:
            self._learning.remove(stream)
        del self._by_id[stream.id]
        if i != last:
            moved = self._streams[last]
            for col in self._row_arrays():
                col[i] = col[last]
            moved.index = i
            self._streams[i] = moved
        self._streams.pop()
        self._n -= 1
        stream.index = -1
        self._routes_dirty = True
        self._snames_rows = -1

    def _row_arrays(self) -> list[npt.NDArray[np.generic]]:
        return [
            self._ids,
            self._alaw,
            self._dec_off,
            self._enc_off,
            self._pt,
            self._silence_code,
            self._key,
            self._names,
            self._has_remote,
            self._exp,
            self._ssrc_in,
            self._ring,
            self._head,
            self._held,
            self._seq_out,
            self._ts_out,
            self._ssrc_out,
            self._marker,
            self._hist_up,
            self._hist_down,
            *self._counts.values(),
        ]

    def _rebuild_routes(self) -> None:
        n = self._n
        rows = np.flatnonzero(self._has_remote[:n])
        keys = self._key[rows]
        order = np.argsort(keys, kind="stable")
        self._route_keys = keys[order]
        self._route_rows = rows[order]
        self._routes_dirty = False

    def close(self) -> None:
        """Stop ticking, drop every stream and close the socket (a ticker of its own is
        left to :meth:`aclose`, which awaits its task)."""
        if self.closed:
            return
        self.closed = True
        if self._handle is not None:
            self.ticker.remove(self._handle)
            self._handle = None
        for stream in list(self._streams):
            self.remove(stream)
        self._sock.close()

    async def aclose(self) -> None:
        self.close()
        if self._own_ticker:
            await self.ticker.aclose()

    # --- the tick ---------------------------------------------------------------------

    def tick(self, skipped: int = 0) -> None:
        """One 20 ms tick: read, hand ``on_tick`` the audio, send (the ticker calls this;
        ``skipped``: ticks lost to a resync, which the RTP timestamps skip)."""
        if self.closed:
            return
        self._ticking = True
        try:
            self._tick(skipped)
        finally:
            self._ticking = False
            if self._leaving:  # closed during the tick: their rows move now
                leaving, self._leaving = self._leaving, []
                for stream in leaving:
                    self.remove(stream)

    def _tick(self, skipped: int) -> None:
        n = self._n
        if self._routes_dirty:
            self._rebuild_routes()
        sent_first = self.wire_out and self.before_read is not None and n > 0
        if sent_first:
            self._send_first(n, skipped)
        present = np.zeros(n, np.bool_)
        win = self._win[:n]
        tick_lost = self._tick_lost[:n]
        tick_lost[:] = 0
        slow: dict[int, list[bytes]] = {sid: [] for sid in self._backlog}
        got = self._mm.recv()
        self.stats.recv_calls += 1
        self._ingest(got, present, win, slow)  # also with nothing read: held frames go on
        if got:
            rounds = 1
            while got == self._mm.capacity and rounds < 8:  # more waited than one read holds
                got = self._mm.recv()
                self.stats.recv_calls += 1
                rounds += 1
                self._ingest_slowly(got, slow)
        if slow:
            self._slow_path(slow, present, win)
        if not n:
            return
        if self._held[:n].max() >= 2:
            self._catch_up(n, present, win)
        started = self._exp[:n] >= 0
        self._counts["concealed"][:n] += started & ~present
        if self._n_alaw:  # mu-law and A-law rows: one lookup in the joined table
            pcm8 = _DEC[win.astype(np.uint16) + self._dec_off[:n, None]]
        else:
            pcm8 = np.take(_DEC, win)
        pcm8[~present] = 0
        # nobody reading the engine's rate (resample_in off): the product is skipped
        pcm = self._up.process(pcm8, self._hist_up[:n]) if self.resample_in else pcm8
        out: npt.NDArray[np.int16] | None = None
        wire_out = self.wire_out
        if wire_out and not sent_first:
            self._silence_wire_rows(n)
        if self.on_tick is not None:
            audio = TickAudio(self._ids[:n], pcm, present, win, pcm8, tick_lost)
            try:
                out = self.on_tick(audio)
            except Exception:
                self.stats.handler_errors += 1
                logger.exception("media engine on_tick failed: this tick is silence")
                out = None
            if wire_out:
                out = None
            elif out is not None and (
                out.shape != (n, self.frame_samples) or out.dtype != np.int16
            ):
                self.stats.handler_errors += 1
                logger.error(
                    "media engine on_tick returned %s %s, not (%d, %d) int16: silence",
                    out.shape,
                    out.dtype,
                    n,
                    self.frame_samples,
                )
                out = None
        if wire_out:
            if not sent_first:
                self._send(None, skipped)
            return
        if out is None:
            out = np.zeros((n, self.frame_samples), np.int16)
        self._send(self._down.process(out, self._hist_down[:n]), skipped)

    def _catch_up(self, n: int, present: npt.NDArray[np.bool_], win: npt.NDArray[np.uint8]) -> None:
        """Streams with two or more frames waiting skip this tick's frame if it is quiet.

        Frames pile up in a stream's ring when the ticker fell behind (a stall: a
        read brings several of a stream's packets, and each tick hands on one), and
        the stream then played that many frames late for the rest of the call: after
        a 300 ms stall, 5 frames (100 ms) behind on every call, which is that much
        more turn and barge-in delay (measured, tests/unit/media/test_engine_transport.py).
        A quiet frame is skipped per tick instead, down to the one frame a late
        packet's wait leaves held, as adaptive jitter buffers shrink in silence;
        speech is never skipped.
        """
        held = self._held[:n]
        rows = np.flatnonzero((held >= 2) & present)
        if not len(rows):
            return
        pcm = _DEC[win[rows].astype(np.uint16) + self._dec_off[rows, None]]
        rows = rows[np.abs(pcm.astype(np.int32)).max(axis=1) < _QUIET_PEAK]
        if not len(rows):
            return
        head = self._head[rows]
        win[rows] = self._ring[rows, head]
        self._head[rows] = (head + 1) % self._depth
        held[rows] -= 1
        self._exp[rows] = (self._exp[rows] + 1) & 0xFFFF
        self._counts["caught_up"][rows] += 1

    def _send_first(self, n: int, skipped: int) -> None:
        """``before_read`` fills this tick's wire rows (silence by default), then send."""
        self._silence_wire_rows(n)
        assert self.before_read is not None
        try:
            self.before_read()
        except Exception:
            self.stats.handler_errors += 1
            logger.exception("media engine before_read failed: this tick is silence")
            self._silence_wire_rows(n)
        self._send(None, skipped)

    def _silence_wire_rows(self, n: int) -> None:
        """Every row's ``out_wire`` back to its silence code, none skipped."""
        self.out_wire[:n] = self._silence_code[:n, None]
        self.out_skip[:n] = False

    def _ingest(
        self,
        got: int,
        present: npt.NDArray[np.bool_],
        win: npt.NDArray[np.uint8],
        slow: dict[int, list[bytes]],
    ) -> None:
        """Route and check one read's datagrams as arrays; the ordinary ones to ``win``."""
        mm, st, n = self._mm, self.stats, self._n
        st.received += got
        keys = self._rkeys[:got]
        rk = self._route_keys
        if len(rk):
            pos = np.searchsorted(rk, keys)
            np.minimum(pos, len(rk) - 1, out=pos)
            known = rk[pos] == keys
            row = self._route_rows[pos]
        else:
            known = np.zeros(got, np.bool_)
            row = np.zeros(got, np.int64)
        data = mm.rdata[:got]
        lens = mm.rlen[:got]
        seq = self._rseq[:got].astype(np.int32)  # one byte-swapping copy each
        ssrc = self._rssrc[:got].astype(np.uint32)
        ok = (
            known
            & (lens == _PACKET)
            & (data[:, 0] == 0x80)
            & ((data[:, 1] & 0x7F) == self._pt[row])
            & (ssrc == self._ssrc_in[row])
            & (self._exp[row] >= 0)
        )
        foreign = int(got - np.count_nonzero(known))
        if foreign and self._learning:
            foreign -= self._learn(np.flatnonzero(~known), slow)
        if foreign:
            st.dropped_foreign_source += foreign
        if self._usual_read(ok, known, row, seq, present, win):
            return
        # Each ordinary packet's rank among its stream's packets of this read
        # (arrival order), from a stable sort by stream.
        r_ok = row[ok]
        counts = np.bincount(r_ok, minlength=n)
        if len(r_ok) and counts.max() > 1:
            order = np.argsort(r_ok, kind="stable")
            rs = r_ok[order]
            first = np.searchsorted(rs, rs)  # index of each stream's first packet
            rank = np.empty_like(order)
            rank[order] = np.arange(len(rs)) - first
        else:  # the usual read: at most one packet a stream
            rank = np.zeros(len(r_ok), np.int64)
        held = self._held[:n]
        exp = self._exp[r_ok] + held[r_ok] + rank
        match = seq[ok] == (exp & 0xFFFF)
        # A stream stays on the array path if all its packets are the next in order and
        # its waiting frames fit the ring.
        bad = np.zeros(n, np.bool_)
        bad[r_ok[~match]] = True
        bad |= (counts + held) > self._depth
        for sid in self._backlog:  # frames wait behind a gap: that stream goes per packet
            bad[self._by_id[sid].index] = True
        odd = ~ok & known
        if odd.any() or bad.any():
            bad[row[odd]] = True
            for sid in self._ids[:n][bad].tolist():
                slow.setdefault(sid, [])
            idx = np.flatnonzero(known & bad[row])
            sids = self._ids[row[idx]].tolist()
            for j, sid in zip(idx.tolist(), sids, strict=True):
                packets = slow[sid]
                if len(packets) < _MAX_PER_STREAM:
                    packets.append(bytes(data[j, : min(int(lens[j]), mm.slot)]))
                    st.slow_packets += 1
                else:
                    st.dropped_over_limit += 1
        # The array path. A stream with nothing waiting hands on its first packet
        # straight away (the usual case: one copy); later packets, and all of a stream
        # with frames waiting, join its ring behind them, and it hands on the ring's
        # first frame.
        sel = match & ~bad[r_ok]
        good_pkt = np.flatnonzero(ok)[sel]
        gr = row[good_pkt]
        grank = rank[sel]
        before = held.copy()
        empty = before[gr] == 0
        direct = empty & (grank == 0)
        win[gr[direct]] = data[good_pkt[direct], 12:_PACKET]
        if not direct.all():
            rest = ~direct
            rr = gr[rest]
            slot = (self._head[rr] + before[rr] + grank[rest] - empty[rest]) % self._depth
            self._ring[rr, slot] = data[good_pkt[rest], 12:_PACKET]
        got_per = np.bincount(gr, minlength=n)
        from_ring = np.flatnonzero(~bad & (before > 0))
        if len(from_ring):
            head = self._head[from_ring]
            win[from_ring] = self._ring[from_ring, head]
            self._head[from_ring] = (head + 1) % self._depth
        fast = ~bad & ((before + got_per) > 0)
        held[fast] = before[fast] + got_per[fast] - 1
        present |= fast
        self._exp[:n][fast] = (self._exp[:n][fast] + 1) & 0xFFFF
        self._counts["frames_in"][:n] += got_per

    def _usual_read(
        self,
        ok: npt.NDArray[np.bool_],
        known: npt.NDArray[np.bool_],
        row: npt.NDArray[np.int64],
        seq: npt.NDArray[np.int32],
        present: npt.NDArray[np.bool_],
        win: npt.NDArray[np.uint8],
    ) -> bool:
        """The usual read, in a few array steps: every datagram from a known source is
        its stream's next frame (after those held in its ring), at most one a stream,
        no stream waiting behind a gap. Each payload goes straight to its row, or
        behind its stream's held frames. False (nothing done): the general path.

        Measured at N=500 (tick driven in a loop on loopback sockets): the general
        path's ~50 array operations cost about 20 us per call-second; this one 8.
        Streams a frame behind (one waited for a late packet) stay on it.
        """
        if self._backlog or not np.array_equal(ok, known):
            return False
        n = self._n
        pick: slice | npt.NDArray[np.intp]
        if ok.all():
            r_ok, s_ok, pick = row, seq, slice(0, len(row))
        else:
            pick = np.flatnonzero(ok)
            r_ok, s_ok = row[pick], seq[pick]
        m = len(r_ok)
        if m == 0:
            return False
        held = self._held[:n]
        exp = self._exp[r_ok]
        any_held = bool(held.any())
        if any_held:
            held_r = held[r_ok]
            if not np.array_equal(s_ok, (exp + held_r) & 0xFFFF):
                return False
        elif not np.array_equal(s_ok, exp):
            return False
        mark = self._mark[:n]
        mark[:] = False
        mark[r_ok] = True
        if np.count_nonzero(mark) != m:  # two packets of one stream
            return False
        payload = self._mm.rdata[pick, 12:_PACKET]
        counts_in = self._counts["frames_in"][:n]
        if not any_held:
            win[r_ok] = payload
            present |= mark
            self._exp[r_ok] = (exp + 1) & 0xFFFF
            counts_in += mark
            return True
        direct = held_r == 0
        win[r_ok[direct]] = payload[direct]
        behind = ~direct
        if behind.any():  # behind the stream's held frames, in its ring
            rb = r_ok[behind]
            self._ring[rb, (self._head[rb] + held_r[behind]) % self._depth] = payload[behind]
        waiting = np.flatnonzero(held)  # each plays its ring's first frame
        head = self._head[waiting]
        win[waiting] = self._ring[waiting, head]
        self._head[waiting] = (head + 1) % self._depth
        held[waiting[~mark[waiting]]] -= 1  # nothing came for it: one fewer held
        play = mark.copy()
        play[waiting] = True
        present |= play
        ex = self._exp[:n]
        ex[play] = (ex[play] + 1) & 0xFFFF
        counts_in += mark
        return True

    def _ingest_slowly(self, got: int, slow: dict[int, list[bytes]]) -> None:
        """A later read of the same tick: each datagram through the per-packet path."""
        if not got:
            return
        mm, st = self._mm, self.stats
        st.received += got
        if self._routes_dirty:
            self._rebuild_routes()
        rk = self._route_keys
        if not len(rk):
            st.dropped_foreign_source += got
            return
        # Every source looked up at once, as in ``_ingest``: a stranger's flood fills
        # these reads, and a lookup per datagram cost about 5 us each (8,000 past the
        # first read: a 60 ms tick, measured on this VM; now about the reads' own 1.1 us
        # a datagram).
        keys = self._rkeys[:got]
        pos = np.minimum(np.searchsorted(rk, keys), len(rk) - 1)
        hit = np.flatnonzero(rk[pos] == keys)
        st.dropped_foreign_source += got - len(hit)
        sids = self._ids[self._route_rows[pos[hit]]].tolist()
        for j, sid in zip(hit.tolist(), sids, strict=True):
            packets = slow.setdefault(sid, [])
            if len(packets) < _MAX_PER_STREAM:
                packets.append(bytes(mm.rdata[j, : min(int(mm.rlen[j]), mm.slot)]))
                st.slow_packets += 1
            else:
                st.dropped_over_limit += 1

    def _slow_path(
        self,
        slow: dict[int, list[bytes]],
        present: npt.NDArray[np.bool_],
        win: npt.NDArray[np.uint8],
    ) -> None:
        for sid, packets in slow.items():
            stream = self._by_id.get(sid)
            if stream is None:
                self._backlog.pop(sid, None)
                continue
            payload = self._one_stream(stream, packets)
            if payload is not None:
                win[stream.index] = np.frombuffer(payload, np.uint8)
                present[stream.index] = True

    def _one_stream(self, stream: EngineStream, packets: list[bytes]) -> bytes | None:
        """The per-packet path of one stream for this tick: its frame, or None."""
        i = stream.index
        pending = self._backlog.pop(stream.id, {})
        exp = int(self._exp[i])
        for j in range(int(self._held[i])):
            ring_slot = (int(self._head[i]) + j) % self._depth
            pending[(exp + j) & 0xFFFF] = self._ring[i, ring_slot].tobytes()
        self._held[i] = 0
        self._head[i] = 0
        carried = len(pending)
        """Frames from earlier ticks: a gap before them has had its tick of grace."""
        counts = self._counts
        for data in packets:
            try:
                pkt = RtpPacket.parse(data)
            except RtpParseError:
                stream.malformed += 1
                continue
            if pkt.payload_type != self._pt[i]:
                stream.dropped_payload_type += 1
                continue
            if len(pkt.payload) != _FRAME:
                stream.dropped_size += 1
                continue
            counts["frames_in"][i] += 1
            if exp < 0:  # the first packet: the stream starts there
                exp = pkt.sequence
                self._ssrc_in[i] = pkt.ssrc
            ahead = seq_diff(pkt.sequence, exp)
            if pkt.ssrc != int(self._ssrc_in[i]) or ahead > MAX_DROPOUT or ahead < -MAX_MISORDER:
                # Far outside the stream. One such packet used to restart it, so a
                # spoofed one (Asterisk's address, a jump) made every real packet
                # after it late: a new stream only when the next stray follows it.
                probe = self._probe.pop(stream.id, None)
                if (
                    probe is not None
                    and pkt.ssrc == probe[0]
                    and pkt.sequence == (probe[1] + 1) & 0xFFFF
                ):
                    stream.resyncs += 1
                    pending.clear()
                    self._ssrc_in[i] = pkt.ssrc
                    exp = probe[1]
                    pending[probe[1]] = probe[2]
                    pending[pkt.sequence] = pkt.payload
                    continue
                if probe is not None:
                    stream.strays += 1
                self._probe[stream.id] = (pkt.ssrc, pkt.sequence, pkt.payload)
                continue
            if ahead < 0:
                counts["late"][i] += 1
                continue
            if pkt.sequence in pending:
                stream.duplicates += 1
                continue
            if pending and any(seq_diff(q, pkt.sequence) > 0 for q in pending):
                stream.reordered += 1
            pending[pkt.sequence] = pkt.payload
        payload: bytes | None = None
        if pending and exp not in pending and not carried:
            # The frame due is missing but a later one came this tick: wait one tick
            # for it (a packet one tick late, or swapped with its successor across a
            # read, is then played; before, it was dropped as late). Nothing is handed
            # on this tick; the stream plays one frame later from here on.
            self._backlog[stream.id] = pending
            self._exp[i] = exp
            return None
        if pending:
            if exp not in pending:  # lost (waited a tick): go on from the earliest
                earliest = min(pending, key=lambda q: seq_diff(q, exp))
                counts["lost"][i] += seq_diff(earliest, exp)
                self._tick_lost[i] += seq_diff(earliest, exp)
                exp = earliest
            payload = pending.pop(exp)
            exp = (exp + 1) & 0xFFFF
            while len(pending) > self.max_backlog:  # bound the delay: drop the oldest
                earliest = min(pending, key=lambda q: seq_diff(q, exp))
                del pending[earliest]
                stream.overflow += 1
                if earliest == exp:
                    exp = (exp + 1) & 0xFFFF
            waiting = len(pending)
            if all((exp + j) & 0xFFFF in pending for j in range(waiting)):
                for j in range(waiting):  # in order again: back to the array path
                    self._ring[i, j] = np.frombuffer(pending.pop((exp + j) & 0xFFFF), np.uint8)
                self._held[i] = waiting
            if pending:
                self._backlog[stream.id] = pending
        self._exp[i] = exp
        return payload

    def _send(self, pcm8: npt.NDArray[np.int16] | None, skipped: int) -> None:
        """Encode every stream's frame (``pcm8`` None: take ``out_wire``), write all
        RTP headers at once, one ``sendmmsg``."""
        n, mm = self._n, self._mm
        if skipped:
            self._ts_out[:n] += np.uint32(_FRAME * skipped)
            self._marker[:n] = True
        to = self._has_remote[:n]
        if pcm8 is None and self.out_skip[:n].any():
            # an empty slot: nothing sent, the timestamp runs on and the next packet
            # carries the marker (as RtpSender does after skipped frames)
            skip = self.out_skip[:n]
            self._marker[:n] |= skip & to
            to = to & ~skip
        if to.all():
            m = n
            rows: slice | npt.NDArray[np.intp] = slice(0, n)
            if self._snames_rows != n:
                mm.snames[:n] = self._names[:n]
                self._snames_rows = n
        else:
            rows = np.flatnonzero(to)
            m = len(rows)
            mm.snames[:m] = self._names[rows]
            self._snames_rows = -1
        if m:
            seq = self._seq_out[rows]
            ts = self._ts_out[rows]
            out = mm.sdata[:m]
            out[:, 0] = 0x80
            out[:, 1] = self._pt[rows] | (self._marker[rows].astype(np.uint8) << 7)
            self._sseq[:m] = seq  # big-endian views of the send rows' header fields
            self._sts[:m] = ts
            self._sssrc[:m] = self._ssrc_out[rows]
            if pcm8 is None:
                out[:, 12:_PACKET] = self.out_wire[:n][rows]
            elif self._n_alaw:
                bits = pcm8.view(np.uint16)
                codes = _ENC[bits.astype(np.int32) + self._enc_off[:n, None]]
                out[:, 12:_PACKET] = codes[rows]
            elif isinstance(rows, slice):  # all mu-law, all sent: encode in place
                np.take(_ENC, pcm8.view(np.uint16), out=out[:, 12:_PACKET])
            else:
                out[:, 12:_PACKET] = np.take(_ENC, pcm8.view(np.uint16)[rows])
            self.ticker.note_sent()
            sent = mm.send(m)
            self.stats.sent += sent
            self.stats.send_calls = mm.send_calls
            self._counts["frames_out"][:n] += to
            self._marker[:n] &= ~to
            self._seq_out[:n] += to.astype(np.uint16)
        # the timestamp runs on for every stream, sent to or not (RTP clock)
        self._ts_out[:n] += np.uint32(_FRAME)
