"""A tick's datagrams in one system call each way: ``recvmmsg`` / ``sendmmsg`` via ctypes.

One UDP socket serves every RTP stream of an app (``voxtra.media.rtp_endpoint``), so a
20 ms tick's packets can be read with one ``recvmmsg`` and written with one
``sendmmsg`` instead of a ``recvfrom`` / ``sendto`` per packet (each about 2.5 us of
syscall on this VM, plus the Python call around it). ctypes calls libc on buffers made
once: message headers, I/O vectors and address slots are fixed, and per call only the
lengths (and, sending, the data and destination addresses) are written, with numpy
views over those arrays rather than a ctypes field access per packet.

Linux only (glibc or musl export both calls); elsewhere, or if libc lacks them,
``MmsgSocket.available`` is False and callers use plain ``recvfrom`` / ``sendto``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import socket
import sys
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = [
    "NAME_SLOT",
    "MmsgArrays",
    "MmsgSocket",
    "address_from_key",
    "mmsg_supported",
    "sockaddr_bytes",
]

logger = logging.getLogger(__name__)

MSG_DONTWAIT = 0x40
MSG_TRUNC = 0x20
_NAME_SIZE = 28  # sockaddr_in6; sockaddr_in (16) fits too


class _Iovec(ctypes.Structure):
    _fields_ = (("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t))


class _Msghdr(ctypes.Structure):
    _fields_ = (
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.c_void_p),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    )


class _Mmsghdr(ctypes.Structure):
    _fields_ = (("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint32))


_HDR = ctypes.sizeof(_Mmsghdr)
_OFF_NAMELEN = _Msghdr.msg_namelen.offset
_OFF_FLAGS = _Msghdr.msg_flags.offset
_OFF_LEN = _Mmsghdr.msg_len.offset


def _load() -> tuple[object, object] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        recv = libc.recvmmsg
        send = libc.sendmmsg
    except (OSError, AttributeError):
        return None
    recv.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p)
    recv.restype = ctypes.c_int
    send.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
    send.restype = ctypes.c_int
    return recv, send


_CALLS = _load()


def mmsg_supported() -> bool:
    """Whether ``recvmmsg`` / ``sendmmsg`` can be called on this platform."""
    return _CALLS is not None


def sockaddr_bytes(family: int, host: str, port: int) -> bytes:
    """``(host, port)`` as the kernel writes it into a source address, for ``family``.

    On an ``AF_INET6`` socket an IPv4 host is written as ``::ffff:a.b.c.d``. Only the
    part after the family field is returned (port and address; for IPv6 also flow
    info 0): the key ``MmsgSocket.recv`` gives each datagram.
    """
    port_b = port.to_bytes(2, "big")
    if family == socket.AF_INET:
        return port_b + socket.inet_pton(socket.AF_INET, host)
    try:
        addr = socket.inet_pton(socket.AF_INET6, host)
    except OSError:
        addr = b"\0" * 10 + b"\xff\xff" + socket.inet_pton(socket.AF_INET, host)
    return port_b + b"\0\0\0\0" + addr


def address_from_key(family: int, key: bytes) -> tuple[str, int]:
    """``(host, port)`` back from a source key (``sockaddr_bytes``)."""
    port = int.from_bytes(key[:2], "big")
    if family == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, key[2:6]), port
    addr = key[6:22]
    if addr[:12] == b"\0" * 10 + b"\xff\xff":
        return socket.inet_ntop(socket.AF_INET, addr[12:]), port
    return socket.inet_ntop(socket.AF_INET6, addr), port


def _native_family(family: int) -> bytes:
    return int(family).to_bytes(2, sys.byteorder)


class _Slots:
    """``capacity`` message headers and their I/O vectors, made once: slot ``i`` reads
    or writes ``data_len`` bytes at ``data_base + i * data_stride`` and its address at
    ``names_base + i * name_stride`` (``name_len`` bytes)."""

    def __init__(
        self,
        capacity: int,
        *,
        data_base: int,
        data_stride: int,
        data_len: int,
        names_base: int,
        name_stride: int,
        name_len: int,
    ) -> None:
        self.iov = (_Iovec * capacity)()
        self.hdr = (_Mmsghdr * capacity)()
        for i in range(capacity):
            self.iov[i].iov_base = data_base + i * data_stride
            self.iov[i].iov_len = data_len
            h = self.hdr[i].msg_hdr
            h.msg_name = names_base + i * name_stride
            h.msg_namelen = name_len
            h.msg_iov = ctypes.addressof(self.iov[i])
            h.msg_iovlen = 1
        self.address = ctypes.addressof(self.hdr)
        hdr_bytes = np.frombuffer(memoryview(self.hdr).cast("B"), np.uint8)
        fields = hdr_bytes.reshape(capacity, _HDR)
        self.namelen = fields[:, _OFF_NAMELEN : _OFF_NAMELEN + 4].view(np.uint32)[:, 0]
        """Each header's address length (the kernel rewrites it on a read)."""
        self.msg_len = fields[:, _OFF_LEN : _OFF_LEN + 4].view(np.uint32)[:, 0]
        self.flags = fields[:, _OFF_FLAGS : _OFF_FLAGS + 4].view(np.int32)[:, 0]
        self.iov_words = np.frombuffer(memoryview(self.iov).cast("B"), np.uint64).reshape(
            capacity, 2
        )
        """Each I/O vector as (base, length) words, for rewriting them as arrays."""


class _Mmsg:
    """What both socket wrappers share: the checks, the counters, the two calls."""

    def __init__(self, sock: socket.socket, capacity: int, slot: int) -> None:
        if _CALLS is None:
            raise OSError(errno.ENOSYS, "recvmmsg/sendmmsg not available")
        self.sock = sock
        self.fd = sock.fileno()
        self.family = sock.family
        self.capacity = capacity
        self.slot = slot
        self._recv_fn, self._send_fn = _CALLS
        self.recv_calls = 0
        self.send_calls = 0
        self.send_errors = 0

    def _read(self, slots: _Slots) -> int:
        """One ``recvmmsg`` into ``slots`` (again once after a queued error); how many."""
        n = self._recvmmsg(slots)
        if n < 0 and ctypes.get_errno() not in (errno.EAGAIN, errno.EWOULDBLOCK):
            # e.g. an ICMP error queued on the socket (ECONNREFUSED) or EINTR: that
            # call consumed it; one more reads the datagrams behind it.
            logger.debug("recvmmsg: %s", errno.errorcode.get(ctypes.get_errno(), "?"))
            n = self._recvmmsg(slots)
        return max(n, 0)

    def _recvmmsg(self, slots: _Slots) -> int:
        slots.namelen[:] = _NAME_SIZE  # the kernel wrote each source's length there
        self.recv_calls += 1
        n: int = self._recv_fn(  # type: ignore[operator]
            self.fd, slots.address, self.capacity, MSG_DONTWAIT, None
        )
        return n

    def _write(self, slots: _Slots, n: int) -> int:
        """``sendmmsg`` of the first ``n`` slots; how many the kernel took (a packet it
        refuses, an ICMP error reported on the socket or a full buffer, is skipped:
        like a lost UDP datagram, the stream goes on)."""
        sent = 0
        while sent < n:
            r: int = self._send_fn(  # type: ignore[operator]
                self.fd, slots.address + sent * _HDR, n - sent, MSG_DONTWAIT
            )
            self.send_calls += 1
            if r > 0:
                sent += r
                continue
            err = ctypes.get_errno()
            if err == errno.EINTR:
                continue
            logger.debug("sendmmsg: %s", errno.errorcode.get(err, err))
            self.send_errors += 1
            sent += 1
        return sent


class MmsgSocket(_Mmsg):
    """``recvmmsg`` / ``sendmmsg`` on one non-blocking UDP socket, on fixed buffers.

    ``recv()`` returns up to ``capacity`` datagrams and their source keys (see
    ``sockaddr_bytes``); ``send(packets, names)`` sends each packet to the full
    sockaddr in ``names`` (from ``sockaddr_for``). Buffers are reused: what ``recv``
    returns is copied out as bytes, so it stays valid.
    """

    def __init__(self, sock: socket.socket, capacity: int = 1024, slot: int = 2048) -> None:
        super().__init__(sock, capacity, slot)
        self._key_len = 6 if self.family == socket.AF_INET else 22
        self._name_len = 16 if self.family == socket.AF_INET else _NAME_SIZE
        # Receive side: fixed slots.
        self._rdata = np.zeros(capacity * slot, np.uint8)
        self._rnames = np.zeros(capacity * _NAME_SIZE, np.uint8)
        self._r = _Slots(
            capacity,
            data_base=self._rdata.ctypes.data,
            data_stride=slot,
            data_len=slot,
            names_base=self._rnames.ctypes.data,
            name_stride=_NAME_SIZE,
            name_len=_NAME_SIZE,
        )
        self._rdata_mv = self._rdata.data.cast("B")
        # Send side: data packed back to back; iovecs and names rewritten per call.
        self._sdata = np.zeros(capacity * slot, np.uint8)
        self._snames = np.zeros(capacity * _NAME_SIZE, np.uint8)
        self._s = _Slots(
            capacity,
            data_base=0,
            data_stride=0,
            data_len=0,
            names_base=self._snames.ctypes.data,
            name_stride=self._name_len,
            name_len=self._name_len,
        )
        self._sbase = np.uint64(self._sdata.ctypes.data)

    def sockaddr_for(self, host: str, port: int) -> bytes:
        """The destination address for ``send``, in this socket's family."""
        name = _native_family(self.family) + sockaddr_bytes(self.family, host, port)
        return name.ljust(self._name_len, b"\0")

    def recv(self) -> tuple[list[bytes], list[bytes]]:
        """Datagrams waiting now (at most ``capacity``) and their source keys.

        Empty lists when nothing waits. A datagram longer than ``slot`` is cut
        (``MSG_TRUNC``) and returned as empty bytes, which every parser refuses.
        """
        n = self._read(self._r)
        if not n:
            return [], []
        lens = self._r.msg_len[:n].tolist()
        flags = self._r.flags[:n].tolist()
        mv = self._rdata_mv
        slot = self.slot
        datas = [
            bytes(mv[i * slot : i * slot + ln]) if not f & MSG_TRUNC else b""
            for i, (ln, f) in enumerate(zip(lens, flags, strict=True))
        ]
        names = self._rnames[: n * _NAME_SIZE].tobytes()
        k = self._key_len
        keys = [names[i * _NAME_SIZE + 2 : i * _NAME_SIZE + 2 + k] for i in range(n)]
        return datas, keys

    def send(self, packets: Sequence[bytes], names: Sequence[bytes]) -> int:
        """Send ``packets[i]`` to ``names[i]``; returns how many the kernel took.

        A packet the kernel refuses (an ICMP error reported on the socket, a full
        buffer) is skipped: like a lost UDP datagram, the stream goes on.
        """
        total = 0
        for start in range(0, len(packets), self.capacity):
            total += self._send_chunk(
                packets[start : start + self.capacity], names[start : start + self.capacity]
            )
        return total

    def _send_chunk(self, packets: Sequence[bytes], names: Sequence[bytes]) -> int:
        n = len(packets)
        if not n:
            return 0
        data = b"".join(packets)
        if len(data) > len(self._sdata):
            raise ValueError("packets larger than the send buffer")
        ctypes.memmove(self._sdata.ctypes.data, data, len(data))
        name_data = b"".join(names)
        ctypes.memmove(self._snames.ctypes.data, name_data, len(name_data))
        lens = np.fromiter(map(len, packets), np.uint64, n)
        offsets = np.cumsum(lens) - lens
        words = self._s.iov_words
        words[:n, 0] = offsets + self._sbase
        words[:n, 1] = lens
        return self._write(self._s, n)


NAME_SLOT = 32
"""Bytes per address slot in ``MmsgArrays`` (a sockaddr_in6 is 28): rows stay aligned."""


class MmsgArrays(_Mmsg):
    """``recvmmsg`` / ``sendmmsg`` on fixed slots exposed as numpy arrays.

    For callers that handle a tick's datagrams as arrays (``voxtra.media.engine``):
    nothing is made per datagram. ``recv()`` fills row ``i`` of ``rdata`` with the
    ``i``-th datagram (``rlen[i]`` bytes, at most ``slot``: a longer one is cut) and
    row ``i`` of ``rnames`` with its source sockaddr; ``send(n)`` sends row ``i`` of
    ``sdata`` (``slen[i]`` bytes) to the sockaddr in row ``i`` of ``snames``, for
    ``i < n``. Each slot's buffer and address pointers are set once, here.
    """

    def __init__(self, sock: socket.socket, capacity: int = 1024, slot: int = 2048) -> None:
        super().__init__(sock, capacity, slot)
        self.name_len = 16 if self.family == socket.AF_INET else _NAME_SIZE
        self.rdata = np.zeros((capacity, slot), np.uint8)
        self.rnames = np.zeros((capacity, NAME_SLOT), np.uint8)
        self.sdata = np.zeros((capacity, slot), np.uint8)
        self.snames = np.zeros((capacity, NAME_SLOT), np.uint8)
        self._r = _Slots(
            capacity,
            data_base=self.rdata.ctypes.data,
            data_stride=slot,
            data_len=slot,
            names_base=self.rnames.ctypes.data,
            name_stride=NAME_SLOT,
            name_len=_NAME_SIZE,
        )
        self._s = _Slots(
            capacity,
            data_base=self.sdata.ctypes.data,
            data_stride=slot,
            data_len=0,
            names_base=self.snames.ctypes.data,
            name_stride=NAME_SLOT,
            name_len=self.name_len,
        )
        self.rlen = self._r.msg_len
        self.slen = self._s.iov_words[:, 1]

    def recv(self) -> int:
        """Read what waits (up to ``capacity`` datagrams) into the rows; how many."""
        return self._read(self._r)

    def send(self, n: int) -> int:
        """Send the first ``n`` rows; how many the kernel took (a refused one is skipped)."""
        return self._write(self._s, n)

    def name_row(self, host: str, port: int) -> npt.NDArray[np.uint8]:
        """The sockaddr of ``(host, port)`` in this socket's family, as one ``snames`` row."""
        name = _native_family(self.family) + sockaddr_bytes(self.family, host, port)
        return np.frombuffer(name.ljust(NAME_SLOT, b"\0"), np.uint8).copy()
