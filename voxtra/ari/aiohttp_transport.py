"""The real ARI transport: REST over one aiohttp session, events over its WebSocket.

Implements :class:`~voxtra.ari.transport.AriTransport` (see its module doc for the
contract). No aiohttp exception leaves this module: a request that got no answer
raises :class:`~voxtra.ari.errors.AriConnectionError`, a refused events login
:class:`~voxtra.ari.errors.AriUnauthorized`.

aiohttp's response errors carry the request in ``request_info``, headers included, so
the ``Authorization`` header (the password in base64) would ride along in any chained
traceback or log. Those errors are therefore never chained (``from None``, raised
outside the ``except`` block so not even ``__context__`` holds them).
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from urllib.parse import quote, urlsplit

import aiohttp
from pydantic import SecretStr

from voxtra.ari.errors import AriConnectionError, AriUnauthorized
from voxtra.ari.http11 import Http11Pool
from voxtra.ari.transport import (
    AriRequest,
    AriResponse,
    AriTransport,
    EventConnection,
    without_userinfo,
)

__all__ = ["EVENT_MAX_BYTES", "REST_POOL_LIMIT", "AiohttpEventConnection", "AiohttpTransport"]

REST_POOL_LIMIT = 32
"""Keep-alive connections REST requests may hold (either pool)."""

logger = logging.getLogger(__name__)

EVENTS_PATH = "/events"

EVENT_MAX_BYTES = 4 << 20
"""The longest events message read (aiohttp's default, pinned here): a longer one, or
one whose fragments never end, closes the connection (then reconnected, as after any
loss) when this much has come, rather than growing without bound. Asterisk's largest
events are a few kB (a Channel with its variables)."""


def _connection_error(exc: BaseException, method: str, path: str) -> AriConnectionError:
    return AriConnectionError(0, method, path, f"{type(exc).__name__}: {exc}")


class AiohttpEventConnection(EventConnection):
    """An open events WebSocket; iterating it yields each text (or binary) message."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws

    async def __aiter__(self) -> AsyncIterator[str | bytes]:
        # Pings and pongs are answered by aiohttp itself (autoping, heartbeat); a
        # CLOSE ends aiohttp's own iteration. Errors end ours: the contract is "ends
        # when the connection closes", and the stream reconnects after that.
        try:
            async for message in self._ws:
                if message.type in (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY):
                    yield message.data
                elif message.type is aiohttp.WSMsgType.ERROR:
                    # The error rides in the message: exception() said "None" for an
                    # event over EVENT_MAX_BYTES, which left no clue why events stopped.
                    logger.warning(
                        "ARI events connection error: %s", message.data or self._ws.exception()
                    )
                    break
        except (aiohttp.ClientError, OSError) as exc:
            logger.warning("ARI events connection lost: %s", exc)

    @property
    def closed(self) -> bool:
        return self._ws.closed

    async def close(self) -> None:
        if not self._ws.closed:
            await self._ws.close()


class AiohttpTransport(AriTransport):
    """Talks to Asterisk's HTTP server at ``base_url`` (``http://host:8088``; a
    ``user:password@`` in it is dropped: ``auth_header`` logs in).

    ``auth_header`` is the whole ``Authorization`` header value (``Basic ...``); it is
    kept as a ``SecretStr``. ``timeout``: seconds a REST request may take in all.
    ``session``: an aiohttp session to use (and not close); by default the transport
    opens its own on first use, and again after :meth:`aclose`.

    ``lean_rest`` (default on): REST requests to a plain ``http://`` Asterisk go through
    :class:`~voxtra.ari.http11.Http11Pool` (keep-alive HTTP/1.1, about a third of
    aiohttp's CPU per request, measured: see that module) unless a ``session`` is given
    (its settings, e.g. a proxy, then apply to every request). Events, downloads and
    ``https://`` go through aiohttp. (It was off for a while: with it, tests connecting
    the same Stasis app name right after the previous test closed it lost the
    registration now and then. That was Asterisk's race, met with aiohttp too once
    looked for; the event stream now confirms a registration end to end and connects
    again when it was lost: :mod:`voxtra.ari.stream`.)
    """

    def __init__(
        self,
        base_url: str,
        auth_header: SecretStr | str,
        *,
        timeout: float = 10.0,
        session: aiohttp.ClientSession | None = None,
        lean_rest: bool = True,
    ) -> None:
        self.base_url = without_userinfo(base_url).rstrip("/")
        self.timeout = timeout
        # Kept wrapped: the header is the password in base64 (vars(), debuggers).
        self._auth = auth_header if isinstance(auth_header, SecretStr) else SecretStr(auth_header)
        self._session = session
        self._own_session = session is None
        parts = urlsplit(self.base_url)
        self._lean = (
            lean_rest
            and session is None
            and parts.scheme == "http"
            and parts.hostname is not None
            and parts.path in ("", "/")
        )
        self._lean_where = (parts.hostname or "", parts.port or 80)
        self._pool: Http11Pool | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The aiohttp session (opened on first use)."""
        if self._session is None or self._session.closed:
            # The Authorization header is set per request: aiohttp's BasicAuth is
            # deprecated in 3.14 and the same header also serves the events WebSocket.
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                connector=aiohttp.TCPConnector(limit=self.aiohttp_limit, ttl_dns_cache=300),
            )
            self._own_session = True
        return self._session

    @property
    def aiohttp_limit(self) -> int:
        """Connections aiohttp may hold: 32 when it carries REST, 8 beside the lean pool
        (then only the events socket and downloads use it). A killed-Asterisk fault run
        held 37 connections to ARI with both pools at 32: the lean pool's plus the
        recordings' downloads kept alive by aiohttp."""
        return 8 if self._lean else REST_POOL_LIMIT

    @property
    def lean_rest(self) -> bool:
        """Whether REST requests go through the lean HTTP/1.1 pool (not aiohttp)."""
        return self._lean

    @property
    def closed(self) -> bool:
        """True while the transport holds no open session or connection pool (before
        first use, after close)."""
        return (self._session is None or self._session.closed) and self._pool is None

    def url(self, path: str) -> str:
        """The URL of an ARI path (``/channels`` -> ``http://host:8088/ari/channels``)."""
        return f"{self.base_url}/ari{path}"

    def events_url(self, apps: Sequence[str], *, subscribe_all: bool = False) -> str:
        base = self.base_url.replace("http://", "ws://").replace("https://", "wss://")
        sub = "&subscribeAll=true" if subscribe_all else ""
        # Each name percent-encoded: sent as it was, "a&b" registered the app "a" ("b"
        # became another parameter), "a#b" the app "a" (the rest a fragment) and "a+b"
        # the app "a b" (Asterisk reads "+" as a space), and the stream reconnected for
        # ever waiting for a registration that never came (seen on the sandbox).
        names = ",".join(quote(app, safe="") for app in apps)
        return f"{base}/ari{EVENTS_PATH}?app={names}{sub}"

    def _headers(self) -> dict[str, str]:
        return {"Authorization": self._auth.get_secret_value()}

    async def handle_request(self, request: AriRequest) -> AriResponse:
        if self._lean:
            return await self._lean_request(request)
        method, path = request.method, request.path
        try:
            async with self.session.request(
                method,
                self.url(path),
                params=dict(request.params),
                json=request.json,
                headers=self._headers(),
            ) as response:
                body = await response.read()
                return AriResponse(response.status, body, response.reason or "")
        except aiohttp.ClientResponseError as exc:
            # Not chained (raised below): its request_info holds the Authorization header.
            refused = _connection_error(exc, method, path)
        except aiohttp.ClientError as exc:
            raise _connection_error(exc, method, path) from exc
        except TimeoutError as exc:
            raise AriConnectionError(0, method, path, f"no answer in {self.timeout} s") from exc
        raise refused from None

    async def _lean_request(self, request: AriRequest) -> AriResponse:
        method, path = request.method, request.path
        pool = self._pool
        if pool is not None and pool.loop not in (None, asyncio.get_running_loop()):
            # Used from another event loop (asyncio.run again): that loop's sockets
            # cannot serve this one.
            pool.closed = True
        if pool is None or pool.closed:
            host, port = self._lean_where
            pool = self._pool = Http11Pool(
                host,
                port,
                headers={"Authorization": self._auth.get_secret_value()},
                timeout=self.timeout,
                limit=REST_POOL_LIMIT,
            )
        body = None if request.json is None else jsonlib.dumps(request.json).encode()
        target = pool.target(f"/ari{path}", request.params)
        try:
            status, reason, payload = await pool.request(method, target, body)
        except TimeoutError as exc:
            raise AriConnectionError(0, method, path, f"no answer in {self.timeout} s") from exc
        except OSError as exc:
            raise _connection_error(exc, method, path) from exc
        return AriResponse(status, payload, reason)

    async def handle_download(
        self,
        request: AriRequest,
        write: Callable[[bytes], object],
        *,
        chunk_size: int = 1 << 16,
        read_timeout: float | None = None,
    ) -> AriResponse:
        # There is no limit on the whole download: an hour-long recording from a remote
        # Asterisk over a slow link takes as long as it takes (the session's 10 s *total*
        # timeout failed such downloads every time). Each read must bring data within
        # read_timeout instead, so a stalled connection is still noticed.
        method, path = request.method, request.path
        per_read = self.timeout if read_timeout is None else read_timeout
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=per_read, sock_read=per_read)
        size = 0
        try:
            async with self.session.request(
                method,
                self.url(path),
                params=dict(request.params),
                json=request.json,
                headers=self._headers(),
                timeout=timeout,
            ) as response:
                if response.status >= 400:
                    body = await response.read()
                    return AriResponse(response.status, body, response.reason or "")
                async for chunk in response.content.iter_chunked(chunk_size):
                    write(chunk)
                    size += len(chunk)
                expected = response.content_length
                status, reason = response.status, response.reason or ""
        except aiohttp.ClientResponseError as exc:
            # Not chained (raised below): its request_info holds the Authorization header.
            refused = _connection_error(exc, method, path)
        except aiohttp.ClientError as exc:
            raise _connection_error(exc, method, path) from exc
        except TimeoutError as exc:
            raise AriConnectionError(
                0, method, path, f"no data for {per_read} s mid-download"
            ) from exc
        else:
            if expected is not None and size != expected:
                raise AriConnectionError(0, method, path, f"got {size} of {expected} bytes")
            return AriResponse(status, b"", reason)
        raise refused from None

    async def connect_events(
        self, apps: Sequence[str], *, subscribe_all: bool = False, heartbeat: float = 10.0
    ) -> EventConnection:
        url = self.events_url(apps, subscribe_all=subscribe_all)
        refused: AriUnauthorized | AriConnectionError | None = None
        try:
            ws = await self.session.ws_connect(
                url,
                headers=self._headers(),
                heartbeat=heartbeat,
                autoping=True,
                timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
                max_msg_size=EVENT_MAX_BYTES,
            )
        except aiohttp.WSServerHandshakeError as exc:
            # Kept apart from the aiohttp error (raised below, not chained): its
            # request_info holds the Authorization header (the password, base64).
            if exc.status in (401, 403):
                refused = AriUnauthorized(
                    exc.status, "GET", "/ari/events", "ARI user or password refused"
                )
            else:
                refused = AriConnectionError(
                    exc.status,
                    "GET",
                    "/ari/events",
                    f"WebSocket upgrade refused ({exc.status} {exc.message})",
                )
        except aiohttp.ClientResponseError as exc:
            refused = _connection_error(exc, "GET", "/ari/events")
        except (aiohttp.ClientError, OSError) as exc:
            raise AriConnectionError(
                0, "GET", "/ari/events", f"cannot reach {url}: {type(exc).__name__}: {exc}"
            ) from exc
        except TimeoutError as exc:
            raise AriConnectionError(0, "GET", "/ari/events", f"no answer from {url}") from exc
        if refused is not None:
            raise refused from None
        return AiohttpEventConnection(ws)

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.aclose()
        if self._session is not None and self._own_session and not self._session.closed:
            await self._session.close()
        self._session = None
