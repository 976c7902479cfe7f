"""RTP over UDP for Asterisk ExternalMedia (``transport=udp``, ``encapsulation=rtp``).

Bind address and advertised address are separate because in containers/NAT the
address Asterisk must send to is not the one we bind. The remote (where our RTP goes)
is Asterisk's ``UNICASTRTP_LOCAL_ADDRESS``/``PORT`` channel variables, set with
``set_remote`` once the channel exists.

Inbound takes nothing from strangers. Until the remote is known nothing is read (the
first sender must not become the peer our audio goes to; ``learn_remote=True`` opts
in to symmetric RTP for peers no signalling describes, e.g. tests). After that, a
datagram from any other address is dropped unread, and a packet is delivered only if
it carries the negotiated payload type and exactly one 20 ms frame; each kind of drop
is counted in ``stats``. The jitter buffer bounds what a sequence jump can emit, and
the tick's conversion is linear in frames (a hostile stream once cost quadratic time
there: 64 packets, 13 s with the whole event loop stalled).

Cost per call is what limits how many calls one process carries, so the per-frame
work is done in the shared ``Ticker``'s 20 ms tick, for all calls together: each
call's socket is drained (no event-loop callback per packet), or, with ``endpoint=``
(what ``CallMedia`` uses), one socket serves every call and is read with one
``recvmmsg`` and written with one ``sendmmsg`` per tick (``voxtra.media.rtp_endpoint``);
in-order packets skip the jitter buffer's reordering, and resampling and G.711 for
every call run as one batch at the end of the tick (``_TickBatch``).

Outbound, every tick sends one packet once the remote is known: the next queued frame,
or a pre-encoded frame of silence when nothing is queued, so sequence numbers and
timestamps run on without gaps or markers (see ``voxtra.media.transport``).

Wire formats: ``ulaw`` (PT 0), ``alaw`` (PT 8), ``slin`` (8 kHz, PT 10) and ``slin16``
(16 kHz, PT 118 as Asterisk sends it); ``slin``/``slin16`` are BIG-endian on the wire
and converted to Voxtra's little-endian PCM here. The outbound payload type is a
setting because what Asterisk expects back for slin16 is still being investigated.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from voxtra.errors import ConfigError, MediaError
from voxtra.media import g711
from voxtra.media.convert import ChunkConverter
from voxtra.media.frames import FRAME_MS, AudioChunk, Codec
from voxtra.media.jitter import JitterBuffer
from voxtra.media.pacer import Ticker
from voxtra.media.resample import Quality, StreamResampler, resample_many
from voxtra.media.rtp import (
    PT_L16_8K,
    PT_PCMA,
    PT_PCMU,
    PT_SLIN16_ASTERISK,
    RtpPacket,
    RtpParseError,
    RtpSender,
)
from voxtra.media.rtp_endpoint import RtpEndpoint
from voxtra.media.transport import MediaTransport, silence_frame

__all__ = ["WIRE_FORMATS", "RtpTransport", "WireFormat"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WireFormat:
    name: str
    codec: Codec
    rate: int
    payload_type: int
    big_endian: bool = False
    also_accepted: tuple[int, ...] = ()
    """Other inbound payload types meaning this format (RFC 3551's L16 numbers)."""

    @property
    def frame_bytes(self) -> int:
        """Payload bytes of one 20 ms frame: the only inbound size accepted."""
        return AudioChunk.frame_bytes(self.codec, self.rate)


WIRE_FORMATS: dict[str, WireFormat] = {
    "ulaw": WireFormat("ulaw", Codec.ULAW, 8000, PT_PCMU),
    "alaw": WireFormat("alaw", Codec.ALAW, 8000, PT_PCMA),
    "slin": WireFormat("slin", Codec.PCM16, 8000, PT_L16_8K, True, (11,)),
    "slin16": WireFormat("slin16", Codec.PCM16, 16000, PT_SLIN16_ASTERISK, True),
}


def _swap16(data: bytes) -> bytes:
    out: bytes = np.frombuffer(data, dtype=np.uint16).byteswap().tobytes()
    return out


_FIXED = struct.Struct("!BBHII")
_RECV_SIZE = 2048  # larger than any RTP packet Asterisk sends us (slin16: 652 bytes)
_MAX_DRAIN = 64
"""At most this many datagrams per socket per tick, so a flood cannot stall the ticker."""
_MAX_CONCEAL_PER_TICK = 20
"""Silence frames for lost packets delivered per call per tick (400 ms). The jitter
buffer bounds each gap (200 ms), but 64 packets in bursts of 4 after a jump each still
made 224 frames in one tick (10 ms of conversion, per call); this bounds the tick."""
_MAX_ROUNDS = 4
"""Batched resampling rounds per tick (a stream's k-th frame each; see _deliver_inbound)."""
_MAX_DISCARD = 512
"""And at most this many from foreign sources, read only to be dropped (about 1 us each):
reading them keeps the kernel's receive buffer free for the peer's packets."""


def _codec_many(fn: Callable[[bytes], bytes], parts: list[bytes], ratio: float) -> list[bytes]:
    """``[fn(p) for p in parts]`` as one table lookup over all of them (G.711 is per byte)."""
    body = fn(b"".join(parts))
    out = []
    pos = 0
    for part in parts:
        n = int(len(part) * ratio)
        out.append(body[pos : pos + n])
        pos += n
    return out


class _TickBatch:
    """Work the RTP streams of one ticker hand in during a tick, done for all at its end.

    Resampling is per-stream state but the same arithmetic for every call, and G.711
    is a table lookup: one ``resample_many`` matrix product and one lookup per tick do
    every call's conversion. Inbound frames (``set_inbound_format``) are converted and
    delivered; each stream's deferred outbound frame is converted and sent. A stream
    with several inbound frames in one tick has them resampled in one call, in order.
    """

    def __init__(self) -> None:
        self.inbound: list[tuple[RtpTransport, ChunkConverter, bytes]] = []
        """(transport, its converter, wire payload in wire byte order)"""
        self.outbound: list[tuple[RtpTransport, StreamResampler, bytes]] = []
        """(transport, its framer's resampler, one source-rate PCM frame)"""
        self.endpoints: dict[RtpEndpoint, int] = {}
        """Shared sockets of this ticker's streams (and how many use each): what they
        queued during the tick goes out in one batch once conversions are done."""

    def after_tick(self) -> None:
        # Send first, then read: the tick's packets leave as close to its deadline as
        # the wake allows, and the inbound work (read, jitter, decode, hand-over) follows.
        if self.outbound:
            self._send_outbound()
        for endpoint in self.endpoints:
            endpoint.flush()
        for endpoint in self.endpoints:
            endpoint.read()
        if self.inbound:
            self._deliver_inbound()

    def add_endpoint(self, endpoint: RtpEndpoint) -> None:
        """One more stream of this ticker on ``endpoint``: the batch reads it after it sends."""
        self.endpoints[endpoint] = self.endpoints.get(endpoint, 0) + 1
        endpoint.read_in_tick = False

    def drop_endpoint(self, endpoint: RtpEndpoint) -> None:
        """One stream fewer on ``endpoint``; with none left it reads in its own tick again."""
        left = self.endpoints.get(endpoint, 0) - 1
        if left > 0:
            self.endpoints[endpoint] = left
        else:
            self.endpoints.pop(endpoint, None)
            endpoint.read_in_tick = True

    def _send_outbound(self) -> None:
        """Resample every stream's deferred frame for this tick at once, then send each."""
        due, self.outbound = self.outbound, []
        outs = resample_many([rs for _, rs, _ in due], [pcm for _, _, pcm in due])
        # The usual case: the output is exactly one wire frame with nothing partial
        # before it, so encode all of those together and skip the framer's cutting.
        ready: dict[int, bytes] = {}
        for codec, encode in ((Codec.ULAW, g711.pcm16_to_ulaw), (Codec.ALAW, g711.pcm16_to_alaw)):
            idx = [
                j
                for j, (tr, _, _) in enumerate(due)
                if tr.wire_codec is codec and tr._framer.takes_whole(len(outs[j]))
            ]
            if idx:
                frames = _codec_many(encode, [outs[j] for j in idx], 0.5)
                ready.update(zip(idx, frames, strict=True))
        for j, ((tr, _, _), pcm) in enumerate(zip(due, outs, strict=True)):
            if not tr._live:
                continue
            frame = ready.get(j)
            if frame is not None:
                tr._send_frame(frame)
                continue
            cut = tr._framer.take_converted(pcm)
            if not cut:  # cannot happen for aligned whole frames; stay safe anyway
                tr._send_silence()
                continue
            tr._out.extendleft(reversed(cut[1:]))
            tr._send_frame(cut[0])

    def _deliver_inbound(self) -> None:
        """Decode, resample and deliver every inbound frame of this tick, linear in frames.

        Frames are grouped per converter once. It used to take one round per frame of
        the busiest stream, each round rescanning every pending entry: quadratic, so
        a stream of 2,000 concealment frames cost 142 ms in one tick (measured).
        """
        pending, self.inbound = self.inbound, []
        groups: dict[int, tuple[RtpTransport, ChunkConverter, list[bytes]]] = {}
        for tr, conv, payload in pending:
            group = groups.get(id(conv))
            if group is None:
                groups[id(conv)] = (tr, conv, [payload])
            else:
                group[2].append(payload)
        streams = list(groups.values())
        for codec, decode in (
            (Codec.ULAW, g711.ulaw_to_pcm16),
            (Codec.ALAW, g711.alaw_to_pcm16),
        ):
            mine = [frames for tr, _, frames in streams if tr.wire_codec is codec]
            if mine:
                decoded = iter(_codec_many(decode, [f for fr in mine for f in fr], 2.0))
                for frames in mine:
                    frames[:] = [next(decoded) for _ in frames]
        # Round k resamples the k-th frame of every stream that has one, all in one
        # matrix product: the usual tick is one round. When the ticker falls behind,
        # every stream has two or three frames; each stream resampled alone then cost
        # ~25 us (500 streams: 12 ms more in a tick already late, measured), so late
        # ticks got later. A few rounds at most, and only while they batch several
        # streams: what is left of a burst goes through its stream's resampler in one
        # pass (a flood's thousands of frames must not be as many rounds).
        streams.sort(key=lambda st: len(st[2]), reverse=True)
        live = len(streams)
        k = 0
        while k < _MAX_ROUNDS and live:
            while live and len(streams[live - 1][2]) <= k:
                live -= 1
            if not live or (k and live < 2):
                break
            batch = streams[:live]
            outs = resample_many(
                [conv.resampler for _, conv, _ in batch],  # type: ignore[misc]
                [frames[k] for _, _, frames in batch],
            )
            for (tr, conv, _), out in zip(batch, outs, strict=True):
                if out:
                    tr._enqueue(conv.finish(out))
            k += 1
        for tr, conv, frames in streams[:live]:
            if len(frames) <= k or conv.resampler is None:
                continue
            rest = frames[k:]
            out = conv.resampler.process(b"".join(rest))
            step = conv.rate * FRAME_MS // 1000 * 2  # one 20 ms frame out, in PCM16
            last = (len(rest) - 1) * step
            for pos in range(0, last, step):
                tr._enqueue(conv.finish(out[pos : pos + step]))
            if out[last:]:
                tr._enqueue(conv.finish(out[last:]))


class RtpTransport(MediaTransport):
    """One call's RTP stream. Create with ``await RtpTransport.open(...)``.

    The socket is non-blocking and not registered with the event loop: each 20 ms tick
    of the shared ``Ticker`` first drains what arrived (``recv`` until it would block),
    then sends at most one frame. With hundreds of calls that replaces one event-loop
    callback per inbound packet with one tight loop per call per tick; inbound frames
    are at most one tick (20 ms) later than with a per-packet callback.
    """

    def __init__(
        self,
        wire_format: str = "ulaw",
        *,
        bind_host: str = "0.0.0.0",
        bind_port: int = 0,
        advertised_host: str | None = None,
        remote: tuple[str, int] | None = None,
        payload_type: int | None = None,
        jitter_depth: int = 3,
        ticker: Ticker | None = None,
        max_queue_ms: int = 60_000,
        resample_quality: Quality = "HQ",
        name: str = "rtp",
        learn_remote: bool = False,
        endpoint: RtpEndpoint | None = None,
    ) -> None:
        fmt = WIRE_FORMATS.get(wire_format)
        if fmt is None:
            raise ConfigError(f"unknown RTP wire format {wire_format!r}; use {list(WIRE_FORMATS)}")
        super().__init__(
            fmt.codec, fmt.rate, max_queue_ms=max_queue_ms, resample_quality=resample_quality
        )
        self._framer.defer = True  # resampled per tick for all calls at once (_TickBatch)
        self.wire_format = fmt
        self.name = name
        self.bind_host = bind_host
        self.bind_port = bind_port
        self.advertised_host = advertised_host
        self.remote = remote
        self._learn_remote = learn_remote
        self._peer: tuple[str, int] | None = None
        """``remote`` as ``recvfrom`` reports a source address, for the latch check."""
        self._peer_of: tuple[str, int] | None = None
        self._warned: set[str] = set()
        self._tick_concealed = 0
        self.jitter = JitterBuffer(jitter_depth)
        self.sender = RtpSender(
            fmt.payload_type if payload_type is None else payload_type,
            fmt.rate * FRAME_MS // 1000,
        )
        if endpoint is not None:
            if ticker is not None and ticker is not endpoint.ticker:
                raise ConfigError("a shared RTP endpoint serves the streams of its own ticker")
            ticker = endpoint.ticker
        self._endpoint = endpoint
        """Shared socket (``voxtra.media.rtp_endpoint``) instead of one of our own."""
        self._dest: bytes | tuple[str, int] | None = None
        """The peer as the shared endpoint sends to it."""
        self._live = False
        self._joined = False
        self._ticker = ticker if ticker is not None else Ticker()
        self._own_ticker = ticker is None
        self._batch = self._ticker.hook("voxtra.rtp", _TickBatch)
        self._tick_handle: int | None = None
        self._sock: socket.socket | None = None
        self._local: tuple[str, int] | None = None
        self._idle_ticks = 0
        self._was_sending = False
        self._silence = AudioChunk.silence(fmt.codec, fmt.rate)
        # Outbound filler, in wire byte order (PCM silence is zeros either way).
        self._silence_wire = silence_frame(fmt.codec, fmt.rate)
        self.inbound_payload_types: set[int] = set()
        """Payload types seen on accepted inbound packets."""
        self._accept_pts = frozenset(
            {fmt.payload_type, *fmt.also_accepted}
            | ({payload_type} if payload_type is not None else set())
        )
        self._frame_bytes = fmt.frame_bytes
        self._packet_len = 12 + fmt.frame_bytes  # the fast path's packet: no CSRC/ext/pad

    @classmethod
    async def open(cls, wire_format: str = "ulaw", **kwargs: object) -> RtpTransport:
        """Create, bind and start pacing."""
        self = cls(wire_format, **kwargs)  # type: ignore[arg-type]
        await self.start()
        return self

    async def start(self) -> None:
        endpoint = self._endpoint
        if endpoint is not None:
            endpoint.join(self)
            self._joined = True
            self._batch.add_endpoint(endpoint)
            self._local = endpoint.local_address
            self._live = True
            self._route()
            self.learn_remote = self._learn_remote  # tells the endpoint if we learn
            self._tick_handle = self._ticker.add(self._tick)
            return
        loop = asyncio.get_running_loop()
        where = f"{self.bind_host}:{self.bind_port}"
        try:
            infos = await loop.getaddrinfo(
                self.bind_host, self.bind_port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
            )
        except OSError as exc:
            raise MediaError(f"cannot bind RTP on {where}: {exc}") from exc
        family, type_, proto, _, addr = infos[0]
        sock = socket.socket(family, type_, proto)
        try:
            sock.setblocking(False)
            sock.bind(addr)
        except OSError as exc:
            sock.close()
            raise MediaError(f"cannot bind RTP on {where}: {exc}") from exc
        self._sock = sock
        host, port = sock.getsockname()[:2]
        self._local = (str(host), int(port))
        self._live = True
        self._tick_handle = self._ticker.add(self._tick)

    @property
    def call_id(self) -> str:
        return self.name

    @property
    def local_address(self) -> tuple[str, int]:
        """The address actually bound."""
        if self._local is None:
            raise MediaError("RTP transport not started")
        return self._local

    @property
    def learn_remote(self) -> bool:
        """Symmetric RTP: take the first valid sender as the remote. Off by default: a
        stranger's packet would otherwise decide where the caller's audio goes. On a
        shared socket, a datagram from an address no call has goes to the oldest call
        still learning (each learns one source)."""
        return self._learn_remote

    @learn_remote.setter
    def learn_remote(self, value: bool) -> None:
        self._learn_remote = value
        if self._endpoint is not None and self._joined:
            self._endpoint.learning(self, value and self.remote is None)

    def learn(self, data: bytes, source: tuple[str, int]) -> bool:
        """Shared socket: a datagram from an unknown ``source``; True if it became the peer."""
        self._datagram(data, source)
        if self.remote is None:
            return False
        self._route()
        return True

    @property
    def endpoint(self) -> RtpEndpoint | None:
        """The shared socket this transport uses, if any (its ``stats`` count the
        datagrams from strangers, which no call can be charged with)."""
        return self._endpoint

    @property
    def advertised_address(self) -> str:
        """``host:port`` to give Asterisk as ``external_host``."""
        host, port = self.local_address
        if self.advertised_host:
            host = self.advertised_host
        elif host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"{host}:{port}"

    def set_remote(self, host: str, port: int) -> None:
        """Where to send (Asterisk's UNICASTRTP_LOCAL_ADDRESS / _PORT).

        Also the only source inbound packets are taken from from now on (Asterisk's
        RTP is symmetric: it sends from the address it receives on).
        """
        self.remote = (host, int(port))
        if self._endpoint is not None and self._live:
            self._route()

    def _route(self) -> None:
        """Shared socket: take the peer's datagrams from the endpoint, send to it there."""
        endpoint = self._endpoint
        if endpoint is None:
            return
        self._peer_of = self.remote
        self._peer = self._source_key(self.remote)
        endpoint.route(self, self._peer)
        if self._peer is not None:
            endpoint.learning(self, False)
        self._dest = None if self._peer is None else endpoint.name_for(self._peer)

    def feed(self, datagrams: list[bytes]) -> None:
        """This tick's datagrams from the peer, read by the shared endpoint."""
        self._tick_concealed = 0
        for data in datagrams:
            self._datagram(data)

    # --- inbound --------------------------------------------------------------------

    def _drain(self) -> None:
        """Read the datagrams waiting on the socket (called from the tick).

        Nothing is read until the remote is known (``set_remote``), unless
        ``learn_remote``: the kernel holds what arrives meanwhile. Then only the
        remote's datagrams are handled; others are dropped and counted.
        """
        sock = self._sock
        if sock is None:
            return
        self._tick_concealed = 0
        remote = self.remote
        if remote is None and not self.learn_remote:
            return
        if remote is not self._peer_of:
            self._peer, self._peer_of = self._source_key(remote), remote
        peer = self._peer
        handled = foreign = 0
        while handled < _MAX_DRAIN and foreign < _MAX_DISCARD:
            try:
                data, addr = sock.recvfrom(_RECV_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:  # e.g. ICMP port unreachable reported on the socket
                logger.debug("%s: RTP socket error: %s", self.name, exc)
                handled += 1
                continue
            if peer is None:  # learn_remote, nothing learnt yet
                handled += 1
                self._datagram(data, (str(addr[0]), int(addr[1])))
                if self.remote is not None:
                    self._peer, self._peer_of = self._source_key(self.remote), self.remote
                    peer = self._peer
            elif addr[0] == peer[0] and addr[1] == peer[1]:
                handled += 1
                self._datagram(data)
            else:
                foreign += 1
                self.stats.dropped_foreign_source += 1
                self._warn_once(
                    "source",
                    "%s: dropping RTP from %s:%s: the peer is %s:%s",
                    self.name,
                    addr[0],
                    addr[1],
                    *peer,
                )

    def _source_key(self, remote: tuple[str, int] | None) -> tuple[str, int] | None:
        """``remote`` spelled as ``recvfrom`` on this socket spells a source address.

        A hostname is resolved here, once, synchronously: Asterisk gives an IP
        address, so this is only a fallback (and ``sendto`` would resolve it per packet).
        """
        if remote is None:
            return None
        host, port = remote
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            try:
                info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
                ip = ipaddress.ip_address(info[0][4][0])
            except (OSError, ValueError, IndexError):
                logger.warning("%s: cannot resolve the RTP peer %r", self.name, host)
                return (host, int(port))
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        family = (
            self._endpoint.family
            if self._endpoint is not None
            else self._sock.family
            if self._sock is not None
            else socket.AF_INET
        )
        if isinstance(ip, ipaddress.IPv4Address) and family == socket.AF_INET6:
            return (f"::ffff:{ip}", int(port))  # how a dual-stack socket reports IPv4
        return (ip.compressed, int(port))

    def _warn_once(self, kind: str, msg: str, *args: object) -> None:
        """Log the first drop of each kind per call: a flood costs one line, not one each."""
        if kind not in self._warned:
            self._warned.add(kind)
            logger.warning(msg, *args)

    def _datagram(self, data: bytes, addr: tuple[str, int] | None = None) -> None:
        """One inbound datagram from the peer (``addr``: its source, in learn mode)."""
        if self._closed:
            return
        # Fast path: the usual packet (V=2, no padding/extension/CSRC, one frame of the
        # negotiated type) that is exactly the next one expected, with nothing buffered.
        if len(data) == self._packet_len and data[0] == 0x80:
            _, b1, seq, _, ssrc = _FIXED.unpack_from(data)
            if (b1 & 0x7F) in self._accept_pts and self.jitter.push_in_order(seq, ssrc):
                self._deliver_payload(data[12:])  # no loss/late/dup/reorder stats changed
                return
        try:
            pkt = RtpPacket.parse(data)
        except RtpParseError:
            self.stats.malformed += 1
            return
        pt = pkt.payload_type
        if pt not in self._accept_pts:
            # Includes RFC 4733 events: DTMF reaches the app through ARI instead.
            self.stats.dropped_payload_type += 1
            self._warn_once("pt", "%s: dropping RTP of payload type %d", self.name, pt)
            return
        if len(pkt.payload) != self._frame_bytes:
            # Asterisk sends 20 ms frames of the format it was asked for; anything else
            # would reach a reader (and WebRTC VAD) as a frame of a length it cannot use.
            self.stats.dropped_size += 1
            self._warn_once(
                "size", "%s: dropping an RTP payload of %d bytes", self.name, len(pkt.payload)
            )
            return
        if self.remote is None and addr is not None:
            self.remote = addr  # learn_remote: answer where valid RTP comes from
            logger.debug("%s: learned remote %s:%d", self.name, *addr)
        self.inbound_payload_types.add(pt)
        self.jitter.push(pkt)
        for item in self.jitter.pop_ready():
            if item is not None:
                self._deliver_payload(item.payload)
            elif self._tick_concealed < _MAX_CONCEAL_PER_TICK:
                # a lost packet is a frame of silence: timing downstream stays honest
                self._tick_concealed += 1
                self.stats.concealed += 1
                self._deliver_payload(self._silence.data)
        self._sync_stats()

    def _deliver_payload(self, payload: bytes) -> None:
        if self.wire_format.big_endian:
            if len(payload) % 2:
                self.stats.malformed += 1
                return
            payload = _swap16(payload)
        conv = self._in_conv
        if conv is None:
            self._enqueue(AudioChunk(payload, self.wire_rate, self.wire_codec))
        elif conv.resampler is None:
            self._enqueue(conv.finish(g711.decode(payload, self.wire_codec)))
        else:
            self._batch.inbound.append((self, conv, payload))  # decoded in the batch

    def _sync_stats(self) -> None:
        js = self.jitter.stats
        st = self.stats
        st.lost, st.late, st.duplicates, st.reordered = (
            js.lost,
            js.late,
            js.duplicates,
            js.reordered,
        )
        st.dropped_stray, st.resyncs = js.strays, js.resyncs

    # --- outbound -------------------------------------------------------------------

    def _tick(self, skipped: int) -> None:
        """One 20 ms slot (called by the ticker): take in what arrived, send one frame.

        The frame is the next queued one, or silence when nothing is queued: the stream
        to Asterisk never pauses (Asterisk passes no media to the phone otherwise).
        """
        if self._endpoint is None:
            self._drain()
        self._idle_ticks += skipped
        if not self._live or self.remote is None:
            self._idle_ticks += 1
            return
        if not self._out and self._framer.deferred_frames:
            deferred = self._framer.pop_deferred()
            if deferred is not None:
                self._space.set()
                self._batch.outbound.append((self, *deferred))
                return  # sent by the batch at the end of this tick
        frame = self._pop_frame()
        if frame is None:
            if self._was_sending:
                self.stats.underruns += 1
                self._was_sending = False
            if self._silence_due():
                self._send_silence()
            else:
                self._idle_ticks += 1
            return
        self._send_frame(frame)

    def _send_silence(self) -> None:
        """Send the shared silence frame in this slot; it does not count as played."""
        remote = self.remote
        if not self._live or remote is None:
            self._idle_ticks += 1
            return
        packet = self.sender.build(self._silence_wire, skipped_frames=self._idle_ticks)
        self._put(packet, remote)
        self._idle_ticks = 0
        self._silence_sent()

    def _send_frame(self, frame: bytes) -> None:
        remote = self.remote
        if not self._live or remote is None:
            return
        if self.wire_format.big_endian:
            frame = _swap16(frame)
        packet = self.sender.build(frame, skipped_frames=self._idle_ticks)
        self._put(packet, remote)
        self._idle_ticks = 0
        self._was_sending = True
        self._frame_sent()
        pacer = self._ticker.pacer
        if pacer is not None:
            self.stats.pacing_lateness_s.append(pacer.last_lateness)

    def _put(self, packet: bytes, remote: tuple[str, int]) -> None:
        """Send one packet now (own socket) or with the tick's others (shared socket)."""
        endpoint = self._endpoint
        if endpoint is not None:
            if self._dest is not None:
                endpoint.queue(packet, self._dest)
            return
        sock = self._sock
        if sock is None:
            return
        try:
            sock.sendto(packet, remote)
        except OSError as exc:  # full buffer or ICMP error: this frame is lost, go on
            logger.debug("%s: RTP send failed: %s", self.name, exc)

    async def _on_flush(self) -> None:
        self._was_sending = False

    async def _shutdown(self) -> None:
        if self._tick_handle is not None:
            self._ticker.remove(self._tick_handle)
            self._tick_handle = None
        self._live = False
        endpoint = self._endpoint
        if endpoint is not None and self._joined:
            self._joined = False
            self._batch.drop_endpoint(endpoint)
            endpoint.leave(self)
        if self._own_ticker:
            await self._ticker.aclose()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
