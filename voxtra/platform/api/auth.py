"""Bearer tokens, scopes and the rate limit.

A token is looked up by its SHA-256 and compared with :func:`hmac.compare_digest`
against every configured digest (no early exit, so the time does not tell which
prefix matched). Scopes: ``calls:read``, ``calls:write``, ``admin`` (``admin`` holds
every scope). Missing or unknown token: 401; known token without the scope: 403; over
its rate: 429 with ``Retry-After``. The token never appears in a log or an error.

:class:`TokenGate` answers the 401 of a request with a body to a ``/v1`` route before
the app reads a byte of it (FastAPI parses a route's body before its dependencies run).
"""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from fastapi import Request
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from voxtra.asgi import declared_length
from voxtra.platform.api.problems import Problem, problem_response
from voxtra.platform.platform import Platform
from voxtra.platform.store.repository import token_digest

__all__ = [
    "Caller",
    "RateLimiter",
    "TokenGate",
    "authenticate",
    "caller_of",
    "platform_of",
    "require",
]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made a request: the token's name and scopes."""

    token_name: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


_SWEEP_ABOVE = 1024
"""Buckets beyond which full ones are forgotten, every this many requests."""


class RateLimiter:
    """A token bucket per token name: ``rate`` a second on average, ``burst`` at once."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._takes = 0

    def take(self, name: str) -> float:
        """Spend one request of ``name``'s; 0 if allowed, else seconds until it would be."""
        now = self.clock()
        self._takes += 1
        if len(self._buckets) > _SWEEP_ABOVE and not self._takes % _SWEEP_ABOVE:
            self._forget_full(now)
        tokens, last = self._buckets.get(name, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[name] = (tokens - 1.0, now)
            return 0.0
        self._buckets[name] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        # A bucket refilled to its burst is the same as none. Kept, the sign-in limiter
        # (keyed by client address) held an entry per address ever seen: ~206 bytes
        # each, 200 MB for a million addresses of one IPv6 /64.
        for key, (tokens, last) in list(self._buckets.items()):
            if tokens + (now - last) * self.rate >= self.burst:
                del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)


def platform_of(request: Request) -> Platform:
    """The :class:`Platform` behind this API (a dependency for routes)."""
    platform = request.app.state.platform
    assert isinstance(platform, Platform)
    return platform


def caller_of(platform: Platform, authorization: str) -> Caller:
    """The caller an ``Authorization`` header names; a 401 Problem if it names none of
    ``platform``'s tokens. Spends nothing of the token's rate (:func:`authenticate`
    does)."""
    scheme, _, token = authorization.partition(" ")
    challenge = {"WWW-Authenticate": 'Bearer realm="voxtra"'}
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(401, "missing bearer token (Authorization: Bearer ...)", headers=challenge)
    digest = token_digest(token.strip())
    found: tuple[str, frozenset[str]] | None = None
    for name, known, scopes in platform.tokens:
        if hmac.compare_digest(digest, known) and found is None:
            found = (name, scopes)
    if found is None:
        raise Problem(401, "unknown bearer token", headers=challenge)
    return Caller(found[0], found[1])


def authenticate(request: Request) -> Caller:
    """The caller of ``request`` from its bearer token; a 401 Problem if none matches."""
    caller = caller_of(platform_of(request), request.headers.get("authorization", ""))
    spend(request, caller.token_name)
    return caller


def spend(request: Request, name: str) -> None:
    """One request of token ``name``'s rate (the API's, and the operator page's for the
    token its session signed in with); a 429 Problem when it is spent."""
    limiter: RateLimiter = request.app.state.rate_limiter
    wait = limiter.take(name)
    if wait > 0:
        raise Problem(
            429,
            "rate limit reached for this token",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )


def require(scope: str) -> Callable[[Request], Awaitable[Caller]]:
    """A dependency: the request's caller, who must hold ``scope`` (else 403)."""

    async def dependency(request: Request) -> Caller:
        caller = authenticate(request)
        if not caller.allows(scope):
            raise Problem(403, f"this token lacks the scope {scope!r}")
        return caller

    return dependency


_GATED_PREFIX = "/v1/"
"""The API's routes under it take a bearer token, every one (:func:`require`)."""


class TokenGate:
    """Answer a request that carries a body (a ``Content-Length`` over 0, or chunked) to
    one of ``routes`` under ``/v1`` with :func:`authenticate`'s 401 when its bearer
    token is missing or unknown, before the app reads a byte of the body. Pure ASGI.

    FastAPI reads and parses a route's JSON body before it runs the route's
    dependencies, the token check among them: 100 strangers' ``[{},{},...]`` of 256 KiB
    POSTed at once to ``/v1/calls`` took the server's peak RSS from 123 to 762 MiB, to
    answer each a 401; behind the gate, to 139 MiB (what uvicorn buffers of each body
    before the answer). The token is looked up here and again by the route's
    dependency, which alone spends its rate (counted once) and checks its scope. Only
    the API's own routes are gated (``routes``, its routers'): not the operator page's
    (under ``/ui``, a cookie session; its sign-in form carries the token in its body),
    nor the Twilio endpoints ``voxtra serve`` adds (signed by Twilio), wherever
    ``twilio.path_prefix`` puts them.
    """

    def __init__(self, app: ASGIApp, platform: Platform, routes: Iterable[BaseRoute]) -> None:
        self.app = app
        self.platform = platform
        self.routes = [
            route
            for route in routes
            if isinstance(route, APIRoute) and route.path.startswith(_GATED_PREFIX)
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _carries_body(headers := Headers(scope=scope)):
            await self.app(scope, receive, send)
            return
        route = self._gated(scope)
        if route is not None:
            try:
                caller_of(self.platform, headers.get("authorization", ""))
            except Problem as refusal:
                # The route, as the router sets it: /metrics counts the 401 under its
                # path, as it did when the dependency answered it.
                scope.update(route)
                answer = problem_response(
                    refusal.status,
                    refusal.detail,
                    instance=Request(scope).url.path,
                    headers=refusal.headers,
                )
                await answer(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _gated(self, scope: Scope) -> Scope | None:
        """The child scope of the gated route that takes ``scope``'s path and method."""
        for route in self.routes:
            match, child = route.matches(scope)
            if match is Match.FULL:
                return child
        return None


def _carries_body(headers: Headers) -> bool:
    # Chunked first: with both headers uvicorn's h11 frames the body as chunked (the
    # Content-Length is ignored), so "Content-Length: 0" beside it let a stranger's
    # chunked body past the gate, parsed before its 401.
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return True
    return (declared_length(headers) or 0) > 0
