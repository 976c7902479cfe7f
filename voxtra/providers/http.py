"""The HTTP clients the HTTP providers share inside an app: the SDKs on aiohttp.

``OpenAILLM`` and ``ElevenLabsTTS`` talk through their vendors' SDKs, which send every
request through an httpx-style ``AsyncClient``. By default that client's stack is pure
Python (httpcore and h11), and a streamed answer pays for it on every chunk. Both SDKs
take another client: the OpenAI SDK has ``DefaultAioHttpClient`` (its ``aiohttp``
extra: the same client on an aiohttp session), and the ElevenLabs SDK takes any
``httpx.AsyncClient``, such as ``httpx-aiohttp``'s ``HttpxAiohttpClient``.

Measured against ``FakeOpenAI`` and ``FakeElevenLabs`` in another process, process CPU
per request, 20 at a time, 400 requests, two alternated rounds (2-core box, another
test run on it):

- an OpenAI chat completion of 15 streamed chunks: 1,256-1,311 us through the SDK's
  default stack, 609-854 us on aiohttp;
- an ElevenLabs answer of 3 s in 100 ms chunks: 1,675-1,715 us against 434-438 us.

An aiohttp session belongs to the event loop it was made on and has to be closed there;
one dropped unclosed makes aiohttp log "Unclosed client session" at exit. So the shared
clients live in a scope (:class:`HttpScope`): ``VoxtraApp`` holds one from ``start()``
to ``stop()``, :func:`shared_http` opens one for code without an app. Tasks started
inside the scope (every call's, in an app) find it through a context variable; a client
is made the first time a provider asks for it. Outside a scope, or where the SDK's
aiohttp client is not installed, each provider uses its SDK's own client, as before.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import Context, ContextVar, Token, copy_context
from typing import Any

__all__ = [
    "HttpScope",
    "ScopedSdk",
    "context_with",
    "current_scope",
    "seconds_text",
    "shared_client",
    "shared_http",
]

logger = logging.getLogger(__name__)

_current: ContextVar[HttpScope | None] = ContextVar("voxtra_http_scope", default=None)


class HttpScope:
    """The shared HTTP clients of one scope, by kind ("openai", "httpx"), made on first
    use and closed together by :meth:`aclose`."""

    def __init__(self) -> None:
        self._clients: dict[str, Any] = {}
        self._token: Token[HttpScope | None] | None = None
        self.closed = False

    def enter(self) -> None:
        """Make this scope current in this task's context and in every task started
        from it from now on."""
        self._token = _current.set(self)

    def client(self, kind: str, make: Callable[[], Any]) -> Any:
        """The scope's client of ``kind``, made by ``make()`` the first time (None:
        closed, or ``make`` could not make one: the provider keeps its own)."""
        if self.closed:
            return None
        if kind not in self._clients:
            try:
                self._clients[kind] = make()
            except Exception as exc:  # e.g. the SDK's aiohttp extra missing
                logger.debug("no shared %s HTTP client: %s", kind, exc)
                self._clients[kind] = None
        return self._clients[kind]

    @property
    def clients(self) -> dict[str, Any]:
        """The clients made so far, by kind."""
        return {kind: c for kind, c in self._clients.items() if c is not None}

    async def aclose(self) -> None:
        """Close every client made (their aiohttp sessions); providers go back to their
        SDKs' own clients."""
        self.closed = True
        if self._token is not None:
            with contextlib.suppress(ValueError):  # closed from another context
                _current.reset(self._token)
            self._token = None
        clients, self._clients = self._clients, {}
        for client in clients.values():
            if client is not None:
                try:
                    await client.aclose()
                except Exception:
                    logger.exception("closing a shared HTTP client failed")


def current_scope() -> HttpScope | None:
    """The scope this code runs in, if any."""
    return _current.get()


def context_with(scope: HttpScope) -> Context:
    """A copy of the current context in which ``scope`` is current: for a task started
    by code outside it (a Twilio stream's handler runs in the web server's task)."""
    context = copy_context()
    context.run(_current.set, scope)
    return context


def shared_client(kind: str, make: Callable[[], Any]) -> Any:
    """The current scope's client of ``kind`` (see :meth:`HttpScope.client`), or None
    outside a scope."""
    scope = _current.get()
    return None if scope is None else scope.client(kind, make)


class ScopedSdk:
    """A provider's SDK client, on the current scope's shared HTTP client of ``kind``
    when there is one: ``build(http)`` makes that copy, once per shared client (an
    app's lifetime); ``own`` (the SDK's client on its own HTTP stack) otherwise."""

    def __init__(
        self, own: Any, kind: str, make_http: Callable[[], Any], build: Callable[[Any], Any]
    ) -> None:
        self.own = own
        self.kind = kind
        self._make_http = make_http
        self._build = build
        self._built: tuple[Any, Any] | None = None  # (the shared client, the SDK on it)

    def get(self) -> Any:
        http = shared_client(self.kind, self._make_http)
        if http is None:
            return self.own
        built = self._built
        if built is None or built[0] is not http:
            built = self._built = (http, self._build(http))
        return built[1]


@asynccontextmanager
async def shared_http() -> AsyncIterator[HttpScope]:
    """A scope in which the HTTP providers share aiohttp-backed clients."""
    scope = HttpScope()
    scope.enter()
    try:
        yield scope
    finally:
        await scope.aclose()


def seconds_text(timeout: object) -> str:
    """A provider's ``timeout`` for a message: ``"30 s"``. The SDKs also take None or
    an ``httpx.Timeout``, which ``:g`` refused (a TypeError raised in place of the
    provider's own error)."""
    if isinstance(timeout, int | float) and not isinstance(timeout, bool):
        return f"{timeout:g} s"
    return f"the timeout ({timeout!r})"
