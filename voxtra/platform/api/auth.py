"""Bearer tokens, scopes and the rate limit.

A token is looked up by its SHA-256 and compared with :func:`hmac.compare_digest`
against every configured digest (no early exit, so the time does not tell which
prefix matched). Scopes: ``calls:read``, ``calls:write``, ``admin`` (``admin`` holds
every scope). Missing or unknown token: 401; known token without the scope: 403; over
its rate: 429 with ``Retry-After``. The token never appears in a log or an error.
"""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import Request

from voxtra.platform.api.problems import Problem
from voxtra.platform.platform import Platform
from voxtra.platform.store.repository import token_digest

__all__ = ["Caller", "RateLimiter", "authenticate", "platform_of", "require"]


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


def authenticate(request: Request) -> Caller:
    """The caller of ``request`` from its bearer token; a 401 Problem if none matches."""
    platform = platform_of(request)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
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
    spend(request, found[0])
    return Caller(found[0], found[1])


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
