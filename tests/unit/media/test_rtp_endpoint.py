"""One UDP socket for many RTP transports (real sockets on loopback, real ticks)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from voxtra.errors import ConfigError
from voxtra.media.frames import AudioChunk, Codec
from voxtra.media.mmsg import MmsgSocket, mmsg_supported, sockaddr_bytes
from voxtra.media.pacer import Ticker
from voxtra.media.rtp import RtpPacket, RtpSender
from voxtra.media.rtp_endpoint import RtpEndpoint
from voxtra.media.rtp_transport import RtpTransport
from voxtra.media.transport import MediaTransport

LAYOUTS = [pytest.param(True, id="mmsg"), pytest.param(False, id="plain")]


class Peer:
    """One of Asterisk's per-channel RTP sockets."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.setblocking(False)
        self.addr: tuple[str, int] = self.sock.getsockname()[:2]
        self.rtp = RtpSender(0)

    def send(self, to: tuple[str, int], payload: bytes, pt: int = 0) -> None:
        self.rtp.payload_type = pt
        self.sock.sendto(self.rtp.build(payload), to)

    def received(self) -> list[RtpPacket]:
        out = []
        while True:
            try:
                out.append(RtpPacket.parse(self.sock.recv(2048)))
            except BlockingIOError:
                return out

    def close(self) -> None:
        self.sock.close()


async def frames(tr: MediaTransport, n: int) -> list[bytes]:
    got: list[bytes] = []

    async def take() -> None:
        async for chunk in tr:
            got.append(chunk.data)
            if len(got) == n:
                return

    await asyncio.wait_for(take(), 2.0)
    return got


async def ticks(n: int) -> None:
    await asyncio.sleep(0.02 * n + 0.03)


@pytest.mark.parametrize("use_mmsg", LAYOUTS)
async def test_each_call_gets_its_own_peers_audio_and_replies_reach_each_peer(
    use_mmsg: bool,
) -> None:
    if use_mmsg and not mmsg_supported():
        pytest.skip("no recvmmsg here")
    ticker = Ticker()
    endpoint = RtpEndpoint(ticker, "127.0.0.1", use_mmsg=use_mmsg)
    peers = [Peer() for _ in range(3)]
    calls = [await RtpTransport.open("ulaw", endpoint=endpoint, name=f"c{i}") for i in range(3)]
    try:
        for tr, peer in zip(calls, peers, strict=True):
            assert tr.local_address == endpoint.local_address  # one port for every call
            tr.set_remote(*peer.addr)
        for _ in range(4):
            for i, peer in enumerate(peers):
                peer.send(endpoint.local_address, bytes([i + 1]) * 160)
            await asyncio.sleep(0.02)
        for i, tr in enumerate(calls):
            assert await frames(tr, 4) == [bytes([i + 1]) * 160] * 4
            await tr.send(bytes_chunk(0x40 + i))
        await ticks(8)
        for i, peer in enumerate(peers):
            got = peer.received()
            ssrcs = {p.ssrc for p in got}
            assert len(ssrcs) == 1  # one stream per peer
            assert ssrcs == {calls[i].sender.ssrc}
            assert bytes([0x40 + i]) * 160 in [p.payload for p in got]
        assert endpoint.stats.dropped_foreign_source == 0
    finally:
        for tr in calls:
            await tr.close()
        for peer in peers:
            peer.close()
        await ticker.aclose()
    assert endpoint.closed  # the last call closed the shared socket


def bytes_chunk(value: int) -> AudioChunk:
    return AudioChunk(bytes([value]) * 160, 8000, Codec.ULAW)


@pytest.mark.parametrize("use_mmsg", LAYOUTS)
async def test_strangers_and_bad_packets_are_dropped_on_the_shared_socket(use_mmsg: bool) -> None:
    if use_mmsg and not mmsg_supported():
        pytest.skip("no recvmmsg here")
    ticker = Ticker()
    endpoint = RtpEndpoint(ticker, "127.0.0.1", use_mmsg=use_mmsg)
    peer, stranger, early = Peer(), Peer(), Peer()
    tr = await RtpTransport.open("ulaw", endpoint=endpoint)
    try:
        # Before set_remote nothing is routed: the first sender does not become the peer.
        early.send(endpoint.local_address, b"\x11" * 160)
        await ticks(2)
        assert tr.stats.frames_in == 0 and endpoint.stats.dropped_foreign_source == 1
        tr.set_remote(*peer.addr)
        stranger.send(endpoint.local_address, b"\x22" * 160)
        peer.send(endpoint.local_address, b"\x33" * 160, pt=8)  # wrong payload type
        peer.send(endpoint.local_address, b"\x33" * 100)  # not one 20 ms frame
        peer.send(endpoint.local_address, b"\x44" * 160)
        assert await frames(tr, 1) == [b"\x44" * 160]
        await ticks(2)
        assert endpoint.stats.dropped_foreign_source == 2
        assert tr.stats.dropped_payload_type == 1
        assert tr.stats.dropped_size == 1
        assert tr.stats.frames_in == 1
        assert early.received() == [] and stranger.received() == []  # no reply to strangers
    finally:
        await tr.close()
        for p in (peer, stranger, early):
            p.close()
        await ticker.aclose()


async def test_set_remote_moves_the_route() -> None:
    ticker = Ticker()
    endpoint = RtpEndpoint(ticker, "127.0.0.1")
    old, new = Peer(), Peer()
    tr = await RtpTransport.open("ulaw", endpoint=endpoint)
    try:
        tr.set_remote(*old.addr)
        tr.set_remote(*new.addr)
        old.send(endpoint.local_address, b"\x01" * 160)
        new.send(endpoint.local_address, b"\x02" * 160)
        assert await frames(tr, 1) == [b"\x02" * 160]
        await ticks(2)
        assert endpoint.stats.dropped_foreign_source == 1
        assert old.received() == [] and new.received()
    finally:
        await tr.close()
        old.close()
        new.close()
        await ticker.aclose()


async def test_shared_endpoint_is_one_per_ticker_and_reopens_after_the_last_call() -> None:
    ticker = Ticker()
    a = RtpEndpoint.shared(ticker, "127.0.0.1", range(0, 1))
    assert RtpEndpoint.shared(ticker, "127.0.0.1", range(0, 1)) is a
    tr = await RtpTransport.open("ulaw", endpoint=a)
    await tr.close()
    assert a.closed
    b = RtpEndpoint.shared(ticker, "127.0.0.1", range(0, 1))
    assert b is not a and not b.closed
    b.close()
    await ticker.aclose()


async def test_shared_endpoint_refuses_a_foreign_ticker() -> None:
    ticker = Ticker()
    endpoint = RtpEndpoint(ticker, "127.0.0.1")
    try:
        with pytest.raises(ConfigError):
            RtpTransport("ulaw", endpoint=endpoint, ticker=Ticker())
    finally:
        endpoint.close()
        await ticker.aclose()


async def test_learn_remote_on_the_shared_socket_takes_one_sender_per_call() -> None:
    """What calls/media falls back to when Asterisk names no address: each learning
    call takes the first valid sender no other call has, oldest call first."""
    ticker = Ticker()
    endpoint = RtpEndpoint(ticker, "127.0.0.1")
    first, second, bad = Peer(), Peer(), Peer()
    a = await RtpTransport.open("ulaw", endpoint=endpoint)
    b = await RtpTransport.open("ulaw", endpoint=endpoint)
    try:
        a.learn_remote = b.learn_remote = True
        bad.send(endpoint.local_address, b"\x01" * 100)  # not a frame: learns nothing
        await ticks(2)
        assert a.remote is None and b.remote is None
        first.send(endpoint.local_address, b"\x0a" * 160)
        await ticks(2)
        second.send(endpoint.local_address, b"\x0b" * 160)
        first.send(endpoint.local_address, b"\x0a" * 160)
        assert await frames(a, 2) == [b"\x0a" * 160] * 2
        assert await frames(b, 1) == [b"\x0b" * 160]
        assert a.remote == first.addr and b.remote == second.addr
        bad.send(endpoint.local_address, b"\x01" * 160)  # nobody learns any more
        await ticks(3)
        assert a.remote == first.addr and b.remote == second.addr
        assert endpoint.stats.dropped_foreign_source == 2
        assert first.received() and second.received()
    finally:
        await a.close()
        await b.close()
        for p in (first, second, bad):
            p.close()
        await ticker.aclose()


async def test_dual_stack_endpoint_takes_an_ipv4_peer() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    ticker = Ticker()
    try:
        endpoint = RtpEndpoint(ticker, "::")
    except Exception:
        await ticker.aclose()
        pytest.skip("cannot bind ::")
    peer = Peer()
    tr = await RtpTransport.open("ulaw", endpoint=endpoint)
    try:
        tr.set_remote(*peer.addr)
        peer.send(("127.0.0.1", endpoint.local_address[1]), b"\x05" * 160)
        assert await frames(tr, 1) == [b"\x05" * 160]
        await ticks(2)
        assert peer.received()  # the reply reached the IPv4 peer
    finally:
        await tr.close()
        peer.close()
        await ticker.aclose()


@pytest.mark.skipif(not mmsg_supported(), reason="no recvmmsg here")
def test_mmsg_batches_a_tick_in_one_call_each_way() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    peers = [Peer() for _ in range(50)]
    mm = MmsgSocket(sock, capacity=64)
    try:
        for i, peer in enumerate(peers):
            peer.sock.sendto(bytes([i]) * (12 + i), sock.getsockname())
        datas, keys = mm.recv()
        assert mm.recv_calls == 1 and len(datas) == 50
        by_key = dict(zip(keys, datas, strict=True))
        for i, peer in enumerate(peers):
            assert by_key[sockaddr_bytes(socket.AF_INET, *peer.addr)] == bytes([i]) * (12 + i)
        assert mm.recv() == ([], [])
        names = [mm.sockaddr_for(*peer.addr) for peer in peers]
        sent = mm.send([bytes([i]) * (20 + i) for i in range(50)], names)
        assert sent == 50 and mm.send_calls == 1
        for i, peer in enumerate(peers):
            assert peer.sock.recv(2048) == bytes([i]) * (20 + i)
    finally:
        sock.close()
        for peer in peers:
            peer.close()
