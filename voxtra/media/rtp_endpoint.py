"""One UDP socket for many RTP streams, demultiplexed by source address.

Asterisk sends each ExternalMedia channel's RTP from a distinct local port
(``UNICASTRTP_LOCAL_PORT``), and each ``RtpTransport`` already takes media only from
that address. So one socket can serve every channel: each datagram goes to the
transport whose peer sent it, and one from any other address is dropped unread
(``stats.dropped_foreign_source``). Every channel is given the same ``external_host``.

Why: with a socket per call, each tick costs a ``recvfrom`` that succeeds and one that
fails (the ``BlockingIOError`` that says the socket is drained) per call, and a
``sendto`` per call. Measured on this 2-core VM with 500 streams on loopback: reading
2.2 us per packet with a socket per call, 1.05 us with one ``recvmmsg`` on a shared
socket; sending 3.0 us per packet either way (``sendto`` per call or one
``sendmmsg``: on loopback the kernel's delivery to the receiving socket is charged to
the sender, and that is most of it). See docs/performance.md.

The endpoint reads at the start of every tick (a ``Ticker`` callback registered
before any of its transports') and sends what its transports queued during the tick
at its end (``flush``, called by the RTP transports' batch hook after conversions).
"""

from __future__ import annotations

import logging
import socket
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, cast

from voxtra.errors import MediaError
from voxtra.media.mmsg import MmsgSocket, address_from_key, mmsg_supported, sockaddr_bytes
from voxtra.media.pacer import Ticker

__all__ = ["EndpointStats", "RtpEndpoint", "SharedStream"]


class SharedStream(Protocol):
    """What the endpoint needs of a stream it serves (``RtpTransport``)."""

    def feed(self, datagrams: list[bytes]) -> None:
        """This tick's datagrams from the stream's peer, in arrival order."""

    def learn(self, data: bytes, source: tuple[str, int]) -> bool:
        """A datagram from an address no stream has: True if the stream took ``source``
        as its peer (it then routes it with ``route``)."""


logger = logging.getLogger(__name__)

_RECV_SIZE = 2048
_MAX_ROUNDS = 8
"""``recvmmsg`` calls per tick at most (each up to ``capacity`` datagrams): a flood
cannot hold the ticker longer than this many batches."""
_MAX_PER_STREAM = 64
"""Datagrams handed to one transport per tick at most (as with its own socket)."""


@dataclass(slots=True)
class EndpointStats:
    received: int = 0
    sent: int = 0
    dropped_foreign_source: int = 0
    """Datagrams from an address no transport of this endpoint has as its peer."""
    dropped_over_limit: int = 0
    """Datagrams over ``_MAX_PER_STREAM`` for one stream in one tick."""
    recv_calls: int = 0
    send_calls: int = 0


class RtpEndpoint:
    """A bound UDP socket shared by the RTP transports of one ``Ticker``.

    ``RtpEndpoint.shared(ticker, bind_host, ports)`` gives the one for that ticker and
    bind address, binding it (to the first free port of ``ports``) on first use; it
    closes when its last transport leaves. ``use_mmsg=False`` uses ``recvfrom`` /
    ``sendto`` per datagram (also the fallback where ``recvmmsg`` does not exist).
    """

    _shared: weakref.WeakKeyDictionary[Ticker, dict[str, RtpEndpoint]] = weakref.WeakKeyDictionary()

    def __init__(
        self,
        ticker: Ticker,
        bind_host: str = "127.0.0.1",
        ports: range | tuple[int, ...] = (0,),
        *,
        advertised_host: str | None = None,
        use_mmsg: bool = True,
        capacity: int = 1024,
    ) -> None:
        self.ticker = ticker
        self.bind_host = bind_host
        self.advertised_host = advertised_host
        self.stats = EndpointStats()
        self._sock = self._bind(bind_host, ports)
        host, port = self._sock.getsockname()[:2]
        self.local_address = (str(host), int(port))
        self._mmsg = MmsgSocket(self._sock, capacity) if use_mmsg and mmsg_supported() else None
        self._routes: dict[bytes, SharedStream] = {}
        self._members: set[SharedStream] = set()
        self._learners: dict[SharedStream, None] = {}
        """Streams told to take the first valid sender as their peer (``learn_remote``,
        when Asterisk named no address), oldest first."""
        self._out_packets: list[bytes] = []
        self._out_names: list[bytes | tuple[str, int]] = []
        self._on_close: Callable[[], None] | None = None
        self._handle: int | None = ticker.add(self._tick)
        self.closed = False
        self.read_in_tick = True
        """Read at the start of each tick (its own ticker callback). The RTP transports'
        tick batch turns it off and calls ``read()`` itself once the tick's packets are
        sent: reading 200 calls' datagrams first put 1-2 ms between the tick's deadline
        and its ``sendmmsg`` (measured, ``bench/agent_density.py``)."""

    @classmethod
    def shared(
        cls,
        ticker: Ticker,
        bind_host: str,
        ports: range | tuple[int, ...],
        *,
        advertised_host: str | None = None,
    ) -> RtpEndpoint:
        """The endpoint of ``ticker`` on ``bind_host`` (made and bound on first use)."""
        table = cls._shared.setdefault(ticker, {})
        key = f"{bind_host}|{advertised_host}"
        found = table.get(key)
        if found is not None and not found.closed:
            return found
        made = cls(ticker, bind_host, ports, advertised_host=advertised_host)

        def forget() -> None:
            if table.get(key) is made:
                del table[key]

        made._on_close = forget
        table[key] = made
        return made

    @staticmethod
    def _bind(host: str, ports: range | tuple[int, ...]) -> socket.socket:
        last: OSError | None = None
        for port in ports:
            try:
                infos = socket.getaddrinfo(
                    host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE
                )
                family, type_, proto, _, addr = infos[0]
                sock = socket.socket(family, type_, proto)
            except OSError as exc:
                last = exc
                continue
            try:
                sock.setblocking(False)
                # A tick's packets for every call wait here together: 500 calls of
                # slin are 170 KB per tick, over Linux's default 208 KB at 2 ticks.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
                sock.bind(addr)
            except OSError as exc:
                sock.close()
                last = exc
                continue
            return sock
        raise MediaError(f"cannot bind the shared RTP socket on {host} ({ports}): {last}")

    @property
    def family(self) -> int:
        return self._sock.family

    @property
    def advertised_address(self) -> str:
        """``host:port`` to give Asterisk as every channel's ``external_host``."""
        host, port = self.local_address
        if self.advertised_host:
            host = self.advertised_host
        elif host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"{host}:{port}"

    def __len__(self) -> int:
        return len(self._members)

    # --- membership -----------------------------------------------------------------

    def join(self, transport: SharedStream) -> None:
        if self.closed:
            raise MediaError("the shared RTP socket is closed")
        self._members.add(transport)

    def route(self, transport: SharedStream, peer: tuple[str, int] | None) -> bytes | None:
        """Take ``peer``'s datagrams for ``transport`` from now on; its send address.

        ``peer`` is an IP address as ``recvfrom`` spells it (``_source_key``). Another
        transport that had the same peer loses it (the channel it belonged to is gone).
        """
        for key, tr in list(self._routes.items()):
            if tr is transport:
                del self._routes[key]
        if peer is None:
            return None
        try:
            key = sockaddr_bytes(self.family, peer[0], peer[1])
        except OSError:
            logger.warning("shared RTP: cannot route a peer %r", peer)
            return None
        self._routes[key] = transport
        return key

    def name_for(self, peer: tuple[str, int]) -> bytes | tuple[str, int]:
        """What ``queue`` takes as the destination of ``peer``."""
        if self._mmsg is not None:
            return self._mmsg.sockaddr_for(peer[0], peer[1])
        return peer

    def learning(self, transport: SharedStream, on: bool) -> None:
        """Whether ``transport`` waits to learn its peer from the first valid sender."""
        if on:
            self._learners[transport] = None
        else:
            self._learners.pop(transport, None)

    def leave(self, transport: SharedStream) -> None:
        self.route(transport, None)
        self._learners.pop(transport, None)
        self._members.discard(transport)
        if not self._members:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._handle is not None:
            self.ticker.remove(self._handle)
            self._handle = None
        self._sock.close()
        if self._on_close is not None:
            self._on_close()

    # --- the tick -------------------------------------------------------------------

    def _tick(self, skipped: int) -> None:
        if self.read_in_tick:
            self.read()

    def read(self) -> None:
        """Read what arrived and hand each stream its datagrams."""
        if self.closed:
            return
        routes = self._routes
        per: dict[SharedStream, list[bytes]] = {}
        st = self.stats
        mm = self._mmsg
        for _ in range(_MAX_ROUNDS):
            if mm is not None:
                datas, keys = mm.recv()
                st.recv_calls += 1
                full = len(datas) >= mm.capacity
            else:
                datas, keys = self._recv_plain()
                full = len(datas) >= 1024
            st.received += len(datas)
            for data, key in zip(datas, keys, strict=True):
                tr = routes.get(key)
                if tr is None:
                    if not self._learners or not self._learn(data, key):
                        st.dropped_foreign_source += 1
                    continue
                got = per.get(tr)
                if got is None:
                    per[tr] = [data]
                elif len(got) < _MAX_PER_STREAM:
                    got.append(data)
                else:
                    st.dropped_over_limit += 1
            if not full:
                break
        for tr, got in per.items():
            tr.feed(got)

    def _learn(self, data: bytes, key: bytes) -> bool:
        """Offer an unknown source's datagram to the oldest stream still learning."""
        oldest = next(iter(self._learners))
        return oldest.learn(data, address_from_key(self.family, key))

    def _recv_plain(self) -> tuple[list[bytes], list[bytes]]:
        datas: list[bytes] = []
        keys: list[bytes] = []
        sock, family = self._sock, self.family
        for _ in range(1024):
            try:
                data, addr = sock.recvfrom(_RECV_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                logger.debug("shared RTP socket error: %s", exc)
                continue
            self.stats.recv_calls += 1
            datas.append(data)
            keys.append(sockaddr_bytes(family, addr[0], addr[1]))
        return datas, keys

    def queue(self, packet: bytes, name: bytes | tuple[str, int]) -> None:
        """Send ``packet`` to ``name`` (from ``name_for``) with this tick's others."""
        self._out_packets.append(packet)
        self._out_names.append(name)

    def flush(self) -> None:
        """Send what was queued this tick: one ``sendmmsg`` (or a ``sendto`` each)."""
        packets, names = self._out_packets, self._out_names
        if not packets:
            return
        self._out_packets, self._out_names = [], []
        if self.closed:
            return
        self.ticker.note_sent()
        mm = self._mmsg
        if mm is not None:
            before = mm.send_calls
            self.stats.sent += mm.send(packets, cast("list[bytes]", names))
            self.stats.send_calls += mm.send_calls - before
            return
        sock = self._sock
        for packet, name in zip(packets, names, strict=True):
            try:
                sock.sendto(packet, name)
                self.stats.sent += 1
            except OSError as exc:
                logger.debug("shared RTP send failed: %s", exc)
            self.stats.send_calls += 1
