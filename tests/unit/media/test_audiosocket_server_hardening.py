"""AudioSocketServer against hostile clients: real sockets on loopback, no Asterisk.

Each test opens the connections an attacker on the network could, and checks the
server closes them at once, counts them, and still takes the call it was told about.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
import uuid
from collections.abc import AsyncIterator

import pytest

from voxtra.config import MediaSettings, SettingsError, VoxtraSettings
from voxtra.errors import MediaError
from voxtra.media.audiosocket import (
    build_audio,
    build_dtmf,
    build_error,
    build_hangup,
    build_message,
    build_uuid,
)
from voxtra.media.audiosocket_transport import AudioSocketServer, AudioSocketTransport
from voxtra.media.transport import HangupEvent


async def dial(
    server: AudioSocketServer, local_host: str | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = server.local_address
    local = None if local_host is None else (local_host, 0)
    return await asyncio.open_connection(host, port, local_addr=local)


async def closed_by_server(reader: asyncio.StreamReader, within: float = 3.0) -> bool:
    """Did the server end the connection (EOF or reset) within ``within`` seconds?"""
    try:
        async with asyncio.timeout(within):
            while await reader.read(65536):
                pass  # a hangup message may come first
    except TimeoutError:
        return False
    except (ConnectionError, OSError):
        return True
    return True


async def still_open(reader: asyncio.StreamReader, quiet: float = 0.3) -> bool:
    """Is the connection still up (nothing but audio for ``quiet`` seconds)?"""
    return not await closed_by_server(reader, quiet)


async def wait_for_count(probe: object, attr: str, value: int, within: float = 3.0) -> None:
    async with asyncio.timeout(within):
        while getattr(probe, attr) < value:
            await asyncio.sleep(0.01)


@pytest.fixture
async def server() -> AsyncIterator[AudioSocketServer]:
    # claim_timeout left at its default on purpose: before, a stray UUID was held for it.
    async with AudioSocketServer("127.0.0.1", 0) as srv:
        yield srv


async def test_unknown_uuids_are_refused_at_once(server: AudioSocketServer) -> None:
    # Before: every one became a transport held for claim_timeout (300 connections gave
    # 301 unclaimed transports).
    peers = []
    for _ in range(20):
        reader, writer = await dial(server)
        writer.write(build_uuid(uuid.uuid4()) + build_audio(bytes(320)))
        peers.append((reader, writer))
    closed = [await closed_by_server(reader) for reader, _ in peers]
    for _, writer in peers:
        writer.close()
    assert all(closed), f"{closed.count(False)} of 20 unknown UUIDs still connected"
    assert server.stats.refused_unknown_uuid == 20
    assert server.stats.accepted == 0 and server.expected == 0
    # The call the app does expect still gets through.
    call = server.expect(uuid.uuid4())
    reader, writer = await dial(server)
    writer.write(build_uuid(call))
    transport = await server.accept(call, timeout=2)
    try:
        assert transport.uuid == call and not transport.closed
        assert server.stats.accepted == 1
    finally:
        await transport.close()
        writer.close()


async def test_an_expected_uuid_is_taken_once(server: AudioSocketServer) -> None:
    call = uuid.uuid4()
    waiting = asyncio.create_task(server.accept(call, timeout=2))
    await asyncio.sleep(0.02)
    first_r, first_w = await dial(server)
    first_w.write(build_uuid(call))
    transport = await waiting
    second_r, second_w = await dial(server)
    second_w.write(build_uuid(call) + build_audio(b"\x07\x00" * 160))
    assert await closed_by_server(second_r), "a second connection with a taken UUID"
    second_w.close()
    # The call is the first connection's: its audio arrives, the intruder's did not.
    first_w.write(build_audio(b"\x01\x00" * 160))
    frame = await asyncio.wait_for(anext(aiter(transport.frames())), 2)
    assert frame.data == b"\x01\x00" * 160
    assert await still_open(first_r)
    # Once that call has ended its UUID is not taken again.
    first_w.write(build_hangup())
    await asyncio.wait_for(wait_closed(transport), 2)
    first_w.close()
    third_r, third_w = await dial(server)
    third_w.write(build_uuid(call))
    reused = await closed_by_server(third_r)
    third_w.close()
    assert reused, "a finished call's UUID was taken again"
    assert server.stats.refused_duplicate == 1
    assert server.stats.refused_unknown_uuid == 1
    assert server.stats.accepted == 1


async def wait_closed(transport: AudioSocketTransport) -> None:
    async for _ in transport.events():
        pass


async def test_slow_greeters_are_timed_out() -> None:
    async with AudioSocketServer("127.0.0.1", 0, uuid_timeout=0.3) as srv:
        silent_r, silent_w = await dial(srv)
        # One byte at a time (a valid UUID message, eventually): the limit is on the
        # whole greeting, not on each read.
        slow_r, slow_w = await dial(srv)
        message = build_uuid(uuid.uuid4())

        async def trickle() -> None:
            for byte in message:
                if slow_w.is_closing():
                    return
                slow_w.write(bytes([byte]))
                await asyncio.sleep(0.1)

        trickling = asyncio.create_task(trickle())
        try:
            assert await closed_by_server(silent_r)
            assert await closed_by_server(slow_r)
        finally:
            trickling.cancel()
            silent_w.close()
            slow_w.close()
        assert srv.stats.greeting_timeouts == 2
        assert srv.stats.accepted == 0 and srv.pending == 0


async def test_un_greeted_connections_are_capped() -> None:
    async with AudioSocketServer("127.0.0.1", 0, uuid_timeout=30, max_pending=4) as srv:
        idle = [await dial(srv) for _ in range(10)]
        await wait_for_count(srv.stats, "refused_over_limit", 6)
        assert srv.pending == 4
        closed = [await closed_by_server(reader, 0.5) for reader, _ in idle]
        # The oldest went: a connection that has waited longest is the least likely to
        # be Asterisk, which sends its UUID as it connects.
        assert closed == [True] * 6 + [False] * 4
        # Idle connections do not lock the real call out.
        call = srv.expect(uuid.uuid4())
        _reader, writer = await dial(srv)
        writer.write(build_uuid(call))
        transport = await srv.accept(call, timeout=2)
        try:
            assert not transport.closed
            assert srv.pending <= 4
        finally:
            await transport.close()
            writer.close()
            for _, w in idle:
                w.close()


async def test_unknown_messages_and_unread_events_stay_bounded(server: AudioSocketServer) -> None:
    call = uuid.uuid4()
    waiting = asyncio.create_task(server.accept(call, timeout=2))
    await asyncio.sleep(0.02)
    _reader, writer = await dial(server)
    writer.write(build_uuid(call))
    transport = await waiting
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        big = bytes(65535)
        for _ in range(800):  # before: each one queued as an event (+62 MB in all)
            writer.write(build_message(0x42, big))
            await writer.drain()
        for _ in range(100):
            writer.write(build_error(7) + build_dtmf("5"))
        writer.write(build_hangup())
        await writer.drain()
        async with asyncio.timeout(10):
            while not transport.closed:
                await asyncio.sleep(0.01)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        writer.close()
    events = [e async for e in transport.events()]
    assert len(events) <= 64, f"{len(events)} events queued"  # before: 1,001
    assert grown < 8 * 2**20, f"{grown / 2**20:.1f} MB kept"  # before: +62 MB
    assert isinstance(events[-1], HangupEvent)  # the newest survive: the hangup is there
    assert transport.unknown_messages == 800
    assert server.stats.unknown_messages == 800
    assert transport.dropped_events == 201 - len(events)
    assert server.stats.dropped_events == transport.dropped_events
    await transport.close()


async def test_bind_address_and_allowed_peers_are_honoured() -> None:
    # The default is loopback, not every interface.
    async with AudioSocketServer() as srv:
        assert srv.local_address[0] == "127.0.0.1"
    # 127.0.0.2 is loopback too (Linux routes 127/8): a listener there is not on .1.
    async with AudioSocketServer("127.0.0.2", 0) as srv:
        host, port = srv.local_address
        assert host == "127.0.0.2"
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
    async with AudioSocketServer("127.0.0.1", 0, allowed_peers=["127.0.0.3"]) as srv:
        call = srv.expect(uuid.uuid4())
        stranger_r, stranger_w = await dial(srv)  # from 127.0.0.1
        stranger_w.write(build_uuid(call))
        assert await closed_by_server(stranger_r)
        stranger_w.close()
        assert srv.stats.refused_peer == 1
        _reader, writer = await dial(srv, local_host="127.0.0.3")
        writer.write(build_uuid(call))
        transport = await srv.accept(call, timeout=2)
        assert not transport.closed
        await transport.close()
        writer.close()


async def test_the_app_builds_its_server_from_the_media_settings() -> None:
    from voxtra.app import VoxtraApp

    settings = VoxtraSettings(
        media=MediaSettings(
            transport="audiosocket", bind_host="127.0.0.2", audiosocket_peers="127.0.0.9"
        )
    )
    assert settings.media.audiosocket_peers == ("127.0.0.9",)
    with pytest.raises(SettingsError):
        VoxtraSettings(media={"audiosocket_peers": "asterisk.local"})
    app = VoxtraApp(settings=settings)
    server = await app.audiosocket_server()
    try:
        assert server.local_address[0] == "127.0.0.2"
        assert server.allowed_peers is not None
        assert {str(a) for a in server.allowed_peers} == {"127.0.0.9"}
    finally:
        await server.close()


async def test_expected_uuids_expire_and_a_late_connection_is_refused() -> None:
    async with AudioSocketServer("127.0.0.1", 0, claim_timeout=0.2) as srv:
        never = srv.expect(uuid.uuid4())
        await wait_for_count(srv.stats, "expired", 1)
        assert srv.expected == 0
        reader, writer = await dial(srv)
        writer.write(build_uuid(never))
        assert await closed_by_server(reader)
        writer.close()
        # accept() that times out forgets its UUID too.
        late = uuid.uuid4()
        with pytest.raises(MediaError, match="no AudioSocket connection"):
            await srv.accept(late, timeout=0.1)
        assert srv.expected == 0
        reader, writer = await dial(srv)
        writer.write(build_uuid(late))
        assert await closed_by_server(reader)
        writer.close()
        assert srv.stats.refused_unknown_uuid == 2
        # forget() (the channel was never created) does the same at once.
        gone = srv.expect(uuid.uuid4())
        srv.forget(gone)
        assert srv.expected == 0


async def test_concurrent_attaches_share_one_server() -> None:
    # Before: each call that attached while the first server was still starting made
    # a listener of its own (50 calls at once: 11 of them on listeners never closed).
    from voxtra.app import VoxtraApp

    app = VoxtraApp(settings=VoxtraSettings(media=MediaSettings(transport="audiosocket")))
    servers = await asyncio.gather(*(app.audiosocket_server() for _ in range(10)))
    try:
        assert len({id(s) for s in servers}) == 1
    finally:
        for server in {id(s): s for s in servers}.values():
            await server.close()
