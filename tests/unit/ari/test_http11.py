"""The lean HTTP/1.1 pool behind AiohttpTransport's REST calls, on real sockets.

A raw asyncio server answers each request as a test scripts it (so the framing cases
Asterisk or a proxy may produce are exact), and counts connections.
"""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from urllib.parse import quote

import pytest

from voxtra.ari.aiohttp_transport import AiohttpTransport
from voxtra.ari.client import AriClient
from voxtra.ari.errors import AriConnectionError
from voxtra.ari.http11 import Http11Pool
from voxtra.ari.transport import AriRequest

from .scripted import ScriptedTransport, fixture

Answer = Callable[[bytes], bytes | None]
"""Request head and body -> the bytes to write back (None: close without answering)."""


class RawServer:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length) if length else b""
                self.requests.append(head + body)
                out = self.answer(head + body)
                if out is None:
                    break
                writer.write(out)
                await writer.drain()
                if b"Connection: close" in out:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.close()


def ok(body: bytes = b'{"ok":true}', extra: str = "") -> bytes:
    return (
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


Serve = Callable[[Answer], Awaitable[RawServer]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    made: list[RawServer] = []

    async def start(answer: Answer) -> RawServer:
        s = RawServer(answer)
        await s.start()
        made.append(s)
        return s

    yield start
    for s in made:
        await s.close()


async def test_requests_reuse_one_connection_and_carry_method_query_body_auth(serve: Serve) -> None:
    server = await serve(lambda req: ok())
    auth = "Basic " + base64.b64encode(b"u:p").decode()
    transport = AiohttpTransport(f"http://127.0.0.1:{server.port}", auth, timeout=5, lean_rest=True)
    try:
        for _ in range(5):
            got = await transport.handle_request(
                AriRequest(
                    "POST",
                    "/channels",
                    {"endpoint": "Local/answer@voxtra-test", "app": "a b&c"},
                    {"variables": {"X": "1"}},
                )
            )
            assert (got.status, got.body, got.reason) == (200, b'{"ok":true}', "OK")
    finally:
        await transport.aclose()
    assert server.connections == 1  # kept alive
    first = server.requests[0]
    assert first.startswith(
        b"POST /ari/channels?endpoint=Local/answer@voxtra-test&app=a%20b%26c HTTP/1.1\r\n"
    )
    assert f"Authorization: {auth}\r\n".encode() in first
    assert first.endswith(b'\r\n\r\n{"variables": {"X": "1"}}')
    assert transport.closed


async def test_chunked_no_content_and_interim_answers(serve: Serve) -> None:
    answers = iter(
        [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b'4\r\n{"a"\r\n3;ext=1\r\n:1}\r\n0\r\n\r\n',
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"[]"),
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        ]
    )
    server = await serve(lambda req: next(answers))
    pool = Http11Pool("127.0.0.1", server.port, timeout=5)
    try:
        assert await pool.request("GET", "/x") == (200, "OK", b'{"a":1}')
        assert await pool.request("DELETE", "/x") == (204, "No Content", b"")
        assert await pool.request("GET", "/x") == (200, "OK", b"[]")
        assert await pool.request("GET", "/x") == (404, "Not Found", b"")
    finally:
        await pool.aclose()
    assert server.connections == 1
    assert b"Content-Length: 0\r\n" in server.requests[1]  # a DELETE says it has no body


async def test_connection_close_and_a_body_ended_by_the_close(serve: Serve) -> None:
    answers = iter(
        [
            ok(extra="Connection: close\r\n"),
            b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end",
        ]
    )
    server = await serve(lambda req: next(answers))
    pool = Http11Pool("127.0.0.1", server.port, timeout=5)
    try:
        assert (await pool.request("GET", "/x"))[2] == b'{"ok":true}'
        assert await pool.request("GET", "/x") == (200, "OK", b"until the end")
    finally:
        await pool.aclose()
    assert server.connections == 2


async def test_an_idle_connection_the_server_closed_is_retried_once(serve: Serve) -> None:
    server = await serve(lambda req: ok())
    pool = Http11Pool("127.0.0.1", server.port, timeout=5)
    try:
        await pool.request("GET", "/x")
        for w in server.writers:  # the server drops the idle connection
            w.close()
        await asyncio.sleep(0.05)
        assert (await pool.request("GET", "/x"))[0] == 200
    finally:
        await pool.aclose()
    assert server.connections == 2 and len(server.requests) == 2


async def test_no_answer_is_a_connection_error_never_a_hang(serve: Serve) -> None:
    server = await serve(lambda req: b"")  # reads the request, never answers
    transport = AiohttpTransport(
        f"http://127.0.0.1:{server.port}", "Basic x", timeout=0.3, lean_rest=True
    )
    try:
        with pytest.raises(AriConnectionError) as caught:
            await transport.handle_request(AriRequest("POST", "/channels/c1/answer"))
        assert caught.value.status == 0 and "no answer" in str(caught.value)
        assert len(server.requests) == 1  # not sent twice: the server may have acted
    finally:
        await transport.aclose()
    closed = await serve(lambda req: None)  # closes without a word
    transport = AiohttpTransport(
        f"http://127.0.0.1:{closed.port}", "Basic x", timeout=5, lean_rest=True
    )
    try:
        with pytest.raises(AriConnectionError):
            await transport.handle_request(AriRequest("GET", "/asterisk/ping"))
    finally:
        await transport.aclose()
    port = closed.port
    await closed.close()
    await asyncio.sleep(0.05)
    gone = AiohttpTransport(f"http://127.0.0.1:{port}", "Basic x", timeout=5, lean_rest=True)
    try:
        with pytest.raises(AriConnectionError) as refused:
            await gone.handle_request(AriRequest("GET", "/asterisk/ping"))
        assert "Connect" in str(refused.value) or "refused" in str(refused.value).lower()
    finally:
        await gone.aclose()


async def test_a_session_given_or_https_keeps_aiohttp() -> None:
    assert AiohttpTransport("https://pbx:8089", "Basic x").lean_rest is False
    assert AiohttpTransport("http://pbx:8088", "Basic x", lean_rest=False).lean_rest is False
    assert AiohttpTransport("http://pbx:8088", "Basic x").lean_rest is True  # the default
    assert AiohttpTransport("http://pbx:8088", "Basic x", lean_rest=True).lean_rest is True


async def test_event_filter_request_shape() -> None:
    """``applications.filter_events`` sends ARI's eventFilter body (kinds by type)."""
    transport = ScriptedTransport(
        {("PUT", "/applications/my%20app/eventFilter"): fixture("application")}
    )
    ari = AriClient("http://a", "u", "p", transport=transport)
    await ari.applications.filter_events("my app", disallowed=["ChannelVarset", "Dial"])
    (sent,) = transport.requests
    assert sent.json == {"allowed": [], "disallowed": [{"type": "ChannelVarset"}, {"type": "Dial"}]}


def test_a_transport_used_from_a_second_event_loop_opens_new_connections() -> None:
    """``asyncio.run`` twice with one client: the first loop's sockets are not reused."""

    async def start() -> RawServer:
        s = RawServer(lambda req: ok())
        await s.start()
        return s

    async def ask(transport: AiohttpTransport) -> int:
        return (await transport.handle_request(AriRequest("GET", "/asterisk/ping"))).status

    ready = threading.Event()
    box: dict[str, object] = {}

    def serve_forever() -> None:
        loop = asyncio.new_event_loop()
        box["loop"] = loop
        box["server"] = loop.run_until_complete(start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve_forever, daemon=True)
    thread.start()
    ready.wait(5)
    server = box["server"]
    assert isinstance(server, RawServer)
    transport = AiohttpTransport(
        f"http://127.0.0.1:{server.port}", "Basic x", timeout=5, lean_rest=True
    )
    assert asyncio.run(ask(transport)) == 200
    assert asyncio.run(ask(transport)) == 200  # a new loop: not the first loop's socket
    assert server.connections == 2
    loop = box["loop"]
    assert isinstance(loop, asyncio.AbstractEventLoop)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)


def test_query_values_are_quoted_as_before_the_fast_path() -> None:
    # Values with nothing to quote are sent as they are (no quote() call, 17 of them a
    # call setup); every other value exactly as quote() with the same safe set.
    safe = "/:@-._~!$'()*,;"
    values = ["Local/answer@voxtra-test", "voxtra-out-1a2b", "a b", "x&y=z", "é", "100%", "#1"]
    values += [chr(c) for c in range(0x20, 0x180)]
    for value in values:
        target = Http11Pool.target("/ari/channels", {"k": value})
        assert target == f"/ari/channels?k={quote(value, safe=safe)}", value


def _request_in_a_thread(answer: Answer, within: float) -> BaseException | int:
    """One request through the lean transport, in a thread with its own event loop and
    server, so a parser that never returns fails the test instead of hanging it (the
    thread is a daemon: it dies with the test process)."""
    box: dict[str, BaseException | int] = {}

    async def run() -> None:
        server = RawServer(answer)
        await server.start()
        transport = AiohttpTransport(
            f"http://127.0.0.1:{server.port}", "Basic x", timeout=5, lean_rest=True
        )
        try:
            box["got"] = (await transport.handle_request(AriRequest("GET", "/x"))).status
        except Exception as exc:
            box["got"] = exc
        finally:
            await transport.aclose()
            await server.close()

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    thread.start()
    thread.join(within)
    assert not thread.is_alive(), "the request neither answered nor failed: a hang"
    return box["got"]


def test_a_negative_chunk_size_fails_the_request_never_hangs() -> None:
    # Read with int(.., 16), "-6" walked the parser back onto the same size line for
    # ever: data_received never returned and the event loop was blocked for good.
    bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-6\r\nabcdef\r\n0\r\n\r\n"
    got = _request_in_a_thread(lambda req: bad, within=10)
    assert isinstance(got, AriConnectionError) and "bad chunk size" in str(got)


def test_a_negative_content_length_fails_the_request() -> None:
    # Was a 200 with an empty body, the rest of the bytes left in the buffer.
    got = _request_in_a_thread(
        lambda req: b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\nabc", within=10
    )
    assert isinstance(got, AriConnectionError) and "Content-Length" in str(got)


def test_thousands_of_interim_answers_in_one_read_are_skipped_over_a_socket() -> None:
    # Skipped by recursion, they raised RecursionError out of data_received: asyncio
    # closed the connection with it and it left the transport as it was (no AriError).
    many = b"HTTP/1.1 100 Continue\r\n\r\n" * 3000 + ok()
    assert _request_in_a_thread(lambda req: many, within=10) == 200


async def test_a_cancelled_request_never_hands_its_late_answer_to_the_next() -> None:
    """Request A times out (cancelled by the caller); its answer comes later, on A's
    connection. Request B must get B's answer: A's connection is not reused."""
    late: dict[int, bytes] = {}
    connections = 0

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        me = connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if b" /slow " in head:  # answered only when the next request comes
                    late[me] = ok(b'"A"')
                    continue
                writer.write(late.pop(me, b"") + ok(b'"B"'))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = Http11Pool("127.0.0.1", port, timeout=5)
    try:
        await pool.request("GET", "/warm")  # one idle connection, to be reused
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(pool.request("GET", "/slow"), 0.2)
        assert await pool.request("GET", "/fast") == (200, "OK", b'"B"')
        assert connections == 2  # A's connection was dropped, not reused
    finally:
        await pool.aclose()
        server.close()


async def test_control_characters_in_a_hand_built_path_are_encoded(serve: Serve) -> None:
    # AriClient.request takes a path as written; "\r\n" in it (no space) went out raw
    # and the rest of the path became a request header.
    server = await serve(lambda req: ok())
    async with AriClient(f"http://127.0.0.1:{server.port}", "u", "p", timeout=5) as ari:
        await ari.request("GET", "/channels/x\r\nX-Injected:1\tend")
    (sent,) = server.requests
    assert sent.startswith(b"GET /ari/channels/x%0D%0AX-Injected:1%09end HTTP/1.1\r\n")
    assert b"\r\nX-Injected" not in sent
