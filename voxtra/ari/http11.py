"""A lean HTTP/1.1 client for ARI's REST calls: keep-alive connections, nothing else.

Why: measured on this 2-core VM against the sandbox Asterisk (1,000 ``GET
/ari/asterisk/ping``, 20 in flight, CPU time of the process), aiohttp's client costs
57-59 us of CPU per request, this one 20-23 us. A call setup makes two or three
requests (originate or the instance tag, answer, hangup), so that is 70-110 us of a
call's CPU: a fifth of it against the real Asterisk (docs/performance.md). aiohttp
stays for what it is good at: the events WebSocket, downloads, TLS, a session the
user configured.

What it does: one request at a time per connection (no pipelining: Asterisk's HTTP
server answers in order, so one slow request would hold the others behind it), up to
``limit`` connections, kept open between requests and reused most recent first. A
connection idle for ``idle_s`` (Asterisk closes idle ones after
``session_keep_alive``, 15 s by default) is closed rather than reused, so a request
is not written into a socket the server is closing. Responses are read by
``Content-Length`` or chunked transfer coding; ``Connection: close`` is honoured. The
parsing is sans-IO (:func:`parse_response` on the bytes received so far), tested from
bytes split at every offset (``tests/unit/ari/test_http11_parser.py``).

Failures: no answer at all (refused, reset, closed before the whole response came,
``timeout`` seconds in all) raises ``OSError`` or ``TimeoutError`` for the transport
to map; a status is never an error here. A request on a reused connection that the
server closed before sending a single byte is retried once on a new connection: the
server closes only idle connections, so it never read that request.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from urllib.parse import quote

__all__ = ["Http11Pool", "HttpResponse", "ParsedResponse", "parse_response", "response_at_close"]

logger = logging.getLogger(__name__)

_SAFE_QUERY = "/:@-._~!$'()*,;"
_NEEDS_QUOTE = re.compile(r"[^A-Za-z0-9/:@\-._~!$'()*,;]").search
"""Whether a query key or value holds a character ``quote(.., safe=_SAFE_QUERY)`` would
change. Most do not (ids, app names, ``Local/answer@ctx``): they are sent as they are.
``quote`` costs 1-2 us a call and an originate has 8-9 parameters (profile of
bench/call_setup.py: 17 quotes a call setup, 6% of its CPU)."""
_MAX_HEADER = 64 * 1024
"""A response head longer than this is not Asterisk's: the connection is dropped."""

HttpResponse = tuple[int, str, bytes]
"""(status, reason phrase, body)."""


ParsedResponse = tuple[int, str, bytes, bool]
"""(status, reason phrase, body, whether the connection stays open after it)."""


def parse_response(buf: bytearray) -> ParsedResponse | None:
    """The first complete response in ``buf``, its bytes removed from it; None while
    it is incomplete (or its body runs until the server closes: :func:`response_at_close`).

    Sans-IO: the pool feeds it whatever the socket brought, split anywhere. Interim
    answers (``100 Continue``) are skipped, in a loop: recursing once per interim
    answer ran out of stack (RecursionError) on 3,000 of them in one read. Raises
    ``ValueError`` for bytes that are not an HTTP/1.x response: a framing read loosely
    could hang (a chunk size of ``-6`` walked back onto itself for ever, blocking the
    event loop) or take the rest of one answer for the next.
    """
    while True:
        head = _head(buf)
        if head is None:
            return None
        start, status, reason, headers, keep = head
        if status >= 200:
            break
        del buf[:start]  # an interim answer: the real one follows
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunked = _chunked(buf, start)
        if chunked is None:
            return None
        body, end = chunked
    elif (length := headers.get("content-length")) is not None:
        end = start + _content_length(length)
        if len(buf) < end:
            return None
        body = bytes(buf[start:end])
    elif status in (204, 304):
        body, end = b"", start
    else:
        return None  # the body runs until the server closes (response_at_close)
    del buf[:end]
    return status, reason, body, keep


def response_at_close(buf: bytearray) -> ParsedResponse | None:
    """The response in ``buf`` once the server closed the connection, if the close is
    what ends its body (no length, not chunked); None if the response is cut short."""
    while True:
        head = _head(buf)
        if head is None:
            return None
        start, status, reason, headers, _ = head
        if status >= 200:
            break
        del buf[:start]
    if "content-length" in headers or "transfer-encoding" in headers:
        return None
    body = bytes(buf[start:])
    buf.clear()
    return status, reason, body, False


_STATUS_LINE = re.compile(r"HTTP/1\.([01]) ([1-9][0-9][0-9])(?: (.*))?\Z")
_CHUNK_SIZE = re.compile(rb"[ \t]*([0-9A-Fa-f]{1,15})[ \t]*(?:;.*)?\Z")
"""A chunk-size line: hex digits only (``int(x, 16)`` also took ``-6``, ``+6``,
``0x6``, ``6_0``), at most 15 of them, then any chunk extension."""


def _head(buf: bytearray) -> tuple[int, int, str, dict[str, str], bool] | None:
    """(body start, status, reason, headers by lower-case name, keep-alive) of the
    response head at the start of ``buf``; None while it is incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > _MAX_HEADER:
            raise ValueError("response head too long")
        return None
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    status_line = _STATUS_LINE.match(lines[0])
    if status_line is None:
        raise ValueError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    connection = headers.get("connection")
    if connection is None:
        keep = status_line[1] == "1"  # HTTP/1.0 closes unless told otherwise
    else:
        tokens = {token.strip().lower() for token in connection.split(",")}
        keep = "close" not in tokens and (status_line[1] == "1" or "keep-alive" in tokens)
    return end + 4, int(status_line[2]), status_line[3] or "", headers, keep


def _content_length(value: str) -> int:
    if not (value.isascii() and value.isdigit()):
        raise ValueError(f"bad Content-Length {value[:40]!r}")
    return int(value)


def _chunked(buf: bytearray, pos: int) -> tuple[bytes, int] | None:
    """The body of a chunked response starting at ``pos``, and where the response
    ends; None while incomplete. Walks the chunks without copying them until the last
    one is in, so a body arriving in many reads is not copied again on each."""
    spans: list[tuple[int, int]] = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            if len(buf) - pos > _MAX_HEADER:
                raise ValueError("chunk-size line too long")
            return None
        size_line = _CHUNK_SIZE.match(bytes(buf[pos:eol]))
        if size_line is None:
            raise ValueError(f"bad chunk size {bytes(buf[pos:eol])[:40]!r}")
        size = int(size_line[1], 16)
        pos = eol + 2
        if size == 0:
            end = buf.find(b"\r\n\r\n", pos - 2)  # trailers, if any, then a blank line
            if end < 0:
                if len(buf) - pos > _MAX_HEADER:
                    raise ValueError("chunked trailers too long")
                return None
            return b"".join(bytes(buf[a:b]) for a, b in spans), end + 4
        if len(buf) < pos + size + 2:
            return None
        if buf[pos + size : pos + size + 2] != b"\r\n":
            raise ValueError("chunk data longer than its size")
        spans.append((pos, pos + size))
        pos += size + 2


class _Protocol(asyncio.Protocol):
    """One keep-alive connection; ``start()`` arms it for the next response."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[ParsedResponse] | None = None
        self.closed = False
        self.got_bytes = False
        self.used = 0
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            if self.got_bytes and exc is None and self._until_close():
                return
            waiter.set_exception(exc or ConnectionResetError("connection closed by Asterisk"))
        self.waiter = None

    def eof_received(self) -> bool:
        return False  # close our side too

    def start(self, data: bytes) -> asyncio.Future[ParsedResponse]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.got_bytes = False
        self.used += 1
        self.transport.write(data)
        return self.waiter

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self.buf += data
        if self.waiter is None or self.waiter.done():
            if self.waiter is None:  # bytes nobody asked for: the stream is out of step
                self.close()
            return
        try:
            done = parse_response(self.buf)
        except ValueError as exc:
            self.waiter.set_exception(ConnectionResetError(f"bad HTTP response: {exc}"))
            self.close()
            return
        if done is not None:
            waiter, self.waiter = self.waiter, None
            waiter.set_result(done)

    def _until_close(self) -> bool:
        """The connection closed: a body delimited by the close is complete now."""
        try:
            done = response_at_close(self.buf)
        except ValueError:
            return False
        if done is None or self.waiter is None:
            return False
        self.waiter.set_result(done)
        return True


class Http11Pool:
    """Keep-alive HTTP/1.1 connections to one server (``host``, ``port``), plain TCP."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
        limit: int = 32,
        idle_s: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.idle_s = idle_s
        self._host_header = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
        self._fixed = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self._idle: list[_Protocol] = []
        self._slots = asyncio.Semaphore(limit)
        self.loop: asyncio.AbstractEventLoop | None = None
        """The event loop its connections belong to (set by the first request)."""
        self.closed = False
        self.connections_made = 0

    def set_headers(self, headers: Mapping[str, str]) -> None:
        self._fixed = "".join(f"{k}: {v}\r\n" for k, v in headers.items())

    @staticmethod
    def target(path: str, params: Mapping[str, str] | None) -> str:
        """The request target: ``path`` (already percent-encoded) and the query."""
        if not (path.isascii() and path.isprintable()) or " " in path:
            # Control characters too: a hand-built path holding "\r\n" (no space) went
            # out raw, and what followed it became a header of the request.
            path = quote(path, safe="/%:@-._~!$'()*,;=+&")
        if not params:
            return path
        query = "&".join(f"{_quoted(k)}={_quoted(v)}" for k, v in params.items())
        return f"{path}?{query}"

    def encode(self, method: str, target: str, body: bytes | None, content_type: str) -> bytes:
        head = f"{method} {target} HTTP/1.1\r\nHost: {self._host_header}\r\n{self._fixed}"
        if body is not None:
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
            return head.encode("latin-1") + body
        if method != "GET":
            head += "Content-Length: 0\r\n"
        return (head + "\r\n").encode("latin-1")

    async def request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        content_type: str = "application/json",
    ) -> HttpResponse:
        """Send one request; (status, reason, body) of the answer, whatever the status."""
        if self.closed:
            raise ConnectionError("the HTTP pool is closed")
        data = self.encode(method, target, body, content_type)
        loop = asyncio.get_running_loop()
        if self.loop is None:
            self.loop = loop
        deadline = loop.time() + self.timeout
        async with self._slots:
            for attempt in (0, 1):
                conn = await self._connection(loop, deadline)
                reused = conn.used > 0
                fut = conn.start(data)
                timer = loop.call_at(deadline, _expire, fut, conn)
                try:
                    status, reason, payload, keep = await fut
                except TimeoutError:  # (an OSError too) the server may have it: no retry
                    conn.close()
                    raise
                except OSError:  # refused, reset, closed
                    conn.close()
                    if attempt == 0 and reused and not conn.got_bytes:
                        continue  # the server closed it while idle: it never read this
                    raise
                except BaseException:  # cancelled or timed out mid-request: unusable
                    conn.close()
                    raise
                finally:
                    timer.cancel()
                if keep and not conn.closed and not self.closed:
                    conn.idle_since = loop.time()
                    self._idle.append(conn)
                else:
                    conn.close()
                return status, reason, payload
        raise AssertionError("unreachable")  # pragma: no cover

    async def _connection(self, loop: asyncio.AbstractEventLoop, deadline: float) -> _Protocol:
        idle = self._idle
        now = loop.time()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < self.idle_s and not conn.buf:
                return conn
            conn.close()
        async with asyncio.timeout_at(deadline):
            _, proto = await loop.create_connection(_Protocol, self.host, self.port)
        self.connections_made += 1
        return proto

    async def aclose(self) -> None:
        self.closed = True
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        await asyncio.sleep(0)  # let the transports run their close callbacks


def _quoted(text: str) -> str:
    return quote(text, safe=_SAFE_QUERY) if _NEEDS_QUOTE(text) else text


def _expire(fut: asyncio.Future[ParsedResponse], conn: _Protocol) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError("no answer in time"))
        conn.close()
