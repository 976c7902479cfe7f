"""The ARI client over the transport seam: statuses, bodies, failures, ownership.

A scripted transport (no Asterisk, no socket) proves what the client does with what
the transport answers; a real aiohttp server on 127.0.0.1 proves that
:class:`AiohttpTransport` speaks HTTP and the events WebSocket as Asterisk expects.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from voxtra.ari.aiohttp_transport import EVENT_MAX_BYTES, AiohttpTransport
from voxtra.ari.client import AriClient
from voxtra.ari.errors import (
    AriBadRequest,
    AriConflict,
    AriConnectionError,
    AriError,
    AriNotFound,
    AriServerError,
    AriUnauthorized,
    AriUnprocessable,
)
from voxtra.ari.models import Channel
from voxtra.ari.stream import AriEventStream
from voxtra.ari.transport import AriRequest, AriResponse

from .scripted import ScriptedTransport, event_text, fixture, json_response, until

# --- the client over a scripted transport ------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, AriBadRequest),
        (401, AriUnauthorized),
        (403, AriUnauthorized),
        (404, AriNotFound),
        (409, AriConflict),
        (422, AriUnprocessable),
        (500, AriServerError),
        (503, AriServerError),
    ],
)
async def test_each_error_status_is_its_typed_error(status: int, error: type[AriError]) -> None:
    transport = ScriptedTransport(
        {("GET", "/channels/c1"): json_response({"message": "said by Asterisk"}, status)}
    )
    ari = AriClient("http://asterisk:8088", "u", "p", transport=transport)
    with pytest.raises(error) as caught:
        await ari.channels.get("c1")
    assert (caught.value.status, caught.value.method, caught.value.path) == (
        status,
        "GET",
        "/channels/c1",
    )
    assert caught.value.message == "said by Asterisk"


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (fixture("error_422", 422, "Unprocessable Entity"), "specified format is unknown"),
        (json_response({"error": "Allocation failed"}, 500), "Allocation failed"),
        (AriResponse(404, b"", "Not Found"), "Not Found"),  # no body: the reason phrase
        (AriResponse(500, b"plain words\n", "Internal Server Error"), "plain words"),
    ],
)
async def test_the_error_message_is_asterisks_own(answer: AriResponse, message: str) -> None:
    ari = AriClient("http://a", "u", "p", transport=ScriptedTransport({("GET", "/x"): answer}))
    with pytest.raises(AriError) as caught:
        await ari.request("GET", "/x")
    assert caught.value.message.startswith(message)


async def test_bodies_decode_as_json_bytes_text_or_nothing() -> None:
    transport = ScriptedTransport(
        {
            ("GET", "/channels/1795306102.21"): fixture("channel"),
            ("POST", "/channels/c1/answer"): AriResponse(204),
            ("GET", "/recordings/stored/r1/file"): AriResponse(200, b"RIFF\x00\x01"),
            ("GET", "/text"): AriResponse(200, b"not json"),
            ("GET", "/empty"): AriResponse(200, b""),
        }
    )
    ari = AriClient("http://a", "u", "p", transport=transport)
    channel = await ari.channels.get("1795306102.21")
    assert isinstance(channel, Channel) and channel.id
    assert await ari.channels.answer("c1") is None
    assert await ari.recordings.get_file("r1") == b"RIFF\x00\x01"
    assert await ari.request("GET", "/text") == "not json"
    assert await ari.request("GET", "/empty") is None


async def test_requests_reach_the_transport_encoded() -> None:
    transport = ScriptedTransport({("POST", "/channels"): fixture("channel_originate")})
    ari = AriClient("http://a", "u", "p", transport=transport)
    await ari.channels.originate(
        "PJSIP/1000", app="demo", app_args=["a", "b"], variables={"X": "1, 2"}
    )
    with pytest.raises(AriNotFound):  # unlisted: the scripted transport's 404
        await ari.channels.get("a/../b")
    originate, get = transport.requests
    assert originate.method == "POST" and originate.path == "/channels"
    assert originate.params["endpoint"] == "PJSIP/1000"
    assert originate.params["appArgs"] == "a,b"  # lists comma-joined
    assert all(isinstance(v, str) for v in originate.params.values())  # None left out
    assert originate.json == {"variables": {"X": "1, 2"}}
    assert get.path == "/channels/a%2F..%2Fb"  # one segment


async def test_no_answer_at_all_is_a_connection_error() -> None:
    refused = AriConnectionError(0, "GET", "/asterisk/ping", "ConnectionRefusedError")
    transport = ScriptedTransport({("GET", "/asterisk/ping"): refused})
    ari = AriClient("http://a", "u", "p", transport=transport)
    with pytest.raises(AriConnectionError) as caught:
        await ari.asterisk.ping()
    assert caught.value.status == 0


async def test_close_closes_only_a_transport_the_client_made() -> None:
    given = ScriptedTransport()
    async with AriClient("http://a", "u", "p", transport=given) as ari:
        assert ari.transport is given
    assert given.closed == 0  # its owner closes it

    own = AriClient("http://asterisk:8088/ari/", "u", "p")
    assert isinstance(own.transport, AiohttpTransport)
    assert own.transport.base_url == own.base_url == "http://asterisk:8088"
    await own.close()
    assert own.transport.closed


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def test_a_download_over_a_transport_without_streaming(tmp_path: Path) -> None:
    """The contract's default handle_download (an in-process transport): the file is
    written whole; an error status leaves no file behind."""
    data = bytes(range(256)) * 1000
    transport = ScriptedTransport(
        {
            ("GET", "/recordings/stored/r1/file"): AriResponse(200, data),
            ("GET", "/recordings/stored/gone/file"): fixture("error_404", 404, "Not Found"),
        }
    )
    ari = AriClient("http://a", "u", "p", transport=transport)
    assert await ari.recordings.download("r1", tmp_path / "r1.wav", chunk_size=4096) == len(data)
    assert (tmp_path / "r1.wav").read_bytes() == data
    with pytest.raises(AriNotFound):
        await ari.recordings.download("gone", tmp_path / "gone.wav")
    assert _names(tmp_path) == ["r1.wav"]  # no .part left behind


# --- AiohttpTransport against a real HTTP server ------------------------------------


class MiniAsterisk:
    """A real aiohttp server on 127.0.0.1 answering a few ARI paths like Asterisk."""

    def __init__(self, auth: str) -> None:
        self.auth = auth
        self.seen: list[tuple[str, str, str | None]] = []
        self.events_query: dict[str, str] = {}
        self.events_sent = 0
        app = web.Application()
        app.router.add_get("/ari/asterisk/ping", self._ping)
        app.router.add_get("/ari/applications/{name}", self._application)
        app.router.add_get("/ari/events", self._events)
        self.runner = web.AppRunner(app)
        self.url = ""
        self.release = asyncio.Event()

    def _check(self, request: web.Request) -> None:
        self.seen.append((request.method, request.path_qs, request.headers.get("Authorization")))
        if request.headers.get("Authorization") != self.auth:
            raise web.HTTPUnauthorized()

    async def _ping(self, request: web.Request) -> web.Response:
        self._check(request)
        return web.Response(body=fixture("asterisk_ping").body, content_type="application/json")

    async def _application(self, request: web.Request) -> web.Response:
        self._check(request)
        body = json.loads(fixture("application").body)
        return web.json_response({**body, "name": request.match_info["name"]})

    async def _events(self, request: web.Request) -> web.WebSocketResponse:
        self._check(request)
        self.events_query = dict(request.query)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(event_text("StasisStart", application="a"))
        await ws.send_str("{not json")
        self.events_sent += 2

        async def drain() -> None:  # answers the client's close, as Asterisk does
            async for _ in ws:
                pass

        tasks = {asyncio.create_task(self.release.wait()), asyncio.create_task(drain())}
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        await ws.close()
        return ws

    async def start(self) -> None:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"


AUTH = "Basic " + base64.b64encode(b"u:p").decode()


@pytest.fixture
async def mini() -> AsyncIterator[MiniAsterisk]:
    server = MiniAsterisk(AUTH)
    await server.start()
    yield server
    server.release.set()
    await server.runner.cleanup()


async def test_aiohttp_transport_requests_and_events_over_real_sockets(
    mini: MiniAsterisk,
) -> None:
    transport = AiohttpTransport(mini.url, AUTH, timeout=5.0)
    try:
        response = await transport.handle_request(AriRequest("GET", "/asterisk/ping"))
        assert response.status == 200 and b'"pong"' in response.body
        missing = await transport.handle_request(AriRequest("GET", "/no/such/path"))
        assert (missing.status, missing.reason) == (404, "Not Found")  # not raised

        events = await transport.connect_events(["a", "b"], subscribe_all=True, heartbeat=5)
        assert mini.events_query == {"app": "a,b", "subscribeAll": "true"}
        received = []
        async for data in events:
            received.append(data)
            if len(received) == 2:
                mini.release.set()  # the server closes: the iteration ends
        assert len(received) == 2 and '"StasisStart"' in str(received[0])
        assert events.closed
        await events.close()  # idempotent
    finally:
        await transport.aclose()
    assert transport.closed
    assert all(auth == AUTH for _, _, auth in mini.seen)  # the header on every request


async def test_aiohttp_transport_refused_login_and_unreachable_server(
    mini: MiniAsterisk,
) -> None:
    transport = AiohttpTransport(mini.url, "Basic d3Jvbmc6d3Jvbmc=", timeout=5.0)
    try:
        with pytest.raises(AriUnauthorized) as refused:
            await transport.connect_events(["a"])
        # Nothing of aiohttp's error (its request_info holds the Authorization header).
        assert refused.value.status == 401
        assert refused.value.__cause__ is None and refused.value.__context__ is None
        answer = await transport.handle_request(AriRequest("GET", "/asterisk/ping"))
        assert answer.status == 401
    finally:
        await transport.aclose()

    await mini.runner.cleanup()  # nothing listens there any more
    gone = AiohttpTransport(mini.url, AUTH, timeout=5.0)
    try:
        with pytest.raises(AriConnectionError) as caught:
            await gone.handle_request(AriRequest("GET", "/asterisk/ping"))
        assert caught.value.status == 0 and caught.value.path == "/asterisk/ping"
        with pytest.raises(AriConnectionError):
            await gone.connect_events(["a"])
    finally:
        await gone.aclose()


async def test_the_event_stream_over_the_real_transport(mini: MiniAsterisk) -> None:
    ari = AriClient(mini.url, "u", "p", timeout=5.0)
    got: list[str] = []
    stream = AriEventStream(ari, "a", on_event=lambda e: got.append(e.type), heartbeat=5)
    task = asyncio.create_task(stream.run())
    try:
        connection = await stream.wait_connected(10)
        assert connection.generation == 1
        await until(lambda: stream.events_received + stream.events_dropped == 2)
        assert got == ["StasisStart"] and stream.events_dropped == 1
        await stream.stop()
        await asyncio.wait_for(task, 10)
    finally:
        task.cancel()
        await ari.close()


@pytest.mark.parametrize("shape", ["one 1 TiB frame", "fragments without end"])
async def test_an_event_over_the_size_limit_closes_the_connection_and_says_why(
    shape: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A never-ending events message (one frame announcing 1 TiB, or 60 kB fragments
    that never end) is cut at EVENT_MAX_BYTES, not held in memory until it ends; the
    log says so (it said "connection error: None")."""
    fragment = struct.pack("!BBH", 0x00, 126, 60_000) + b"x" * 60_000
    sent = 0

    async def websocket(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(
            hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
        )
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        if shape == "one 1 TiB frame":
            writer.write(struct.pack("!BBQ", 0x81, 127, 1 << 40))  # text, final, 1 TiB
            chunk = b"x" * (1 << 16)
        else:
            writer.write(b"\x01" + fragment[1:])  # text, not final
            chunk = fragment  # continuation, not final
        try:
            while sent < 256 << 20:
                writer.write(chunk)
                sent += len(chunk)
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    server = await asyncio.start_server(websocket, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = AiohttpTransport(f"http://127.0.0.1:{port}", AUTH, timeout=5.0)
    try:
        events = await transport.connect_events(["a"])
        got = [message async for message in events]
    finally:
        await transport.aclose()
        server.close()
    assert got == [] and events.closed
    # Cut at the limit (the 1 TiB frame on its announced length), not at the server's
    # 256 MiB: what got out past it is what the socket buffers held before the close.
    assert sent < EVENT_MAX_BYTES + (32 << 20)
    assert f"exceeds limit {EVENT_MAX_BYTES}" in caplog.text
