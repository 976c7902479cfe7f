"""The platform's HTTP API: :func:`create_api` builds it for one app and database.

``/v1/calls`` (:mod:`voxtra.platform.api.calls`), ``/healthz``, ``/readyz``,
``/metrics``; OpenAPI at ``/openapi.json``, interactive docs at ``/docs``. Routers of
other modules join through :mod:`voxtra.platform.api.routers`.
"""

from __future__ import annotations

import importlib
import importlib.util
import time
from collections.abc import Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.types import Scope

from voxtra.app import VoxtraApp
from voxtra.asgi import BodyLimit
from voxtra.config import PlatformSettings, VoxtraSettings
from voxtra.platform.api import calls, routers
from voxtra.platform.api.auth import RateLimiter, TokenGate
from voxtra.platform.api.problems import body_too_large, install_problem_handlers
from voxtra.platform.platform import Platform
from voxtra.platform.store.db import Database

__all__ = ["SMALL_BODY_MAX_BYTES", "create_api"]

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

SMALL_BODY_MAX_BYTES = 256 * 1024
"""The longest body the API reads on any route but a campaign's (413 beyond; a
campaign's may be up to ``platform.max_body_bytes``). The largest such body is a call's
(``POST /v1/calls``): three objects of at most 16 KiB of JSON each (``variables``,
``customer_data``, ``metadata``; ``schemas.MAX_DATA_BYTES``, as ``json.dumps`` writes
them) and a few short fields, some 50 KiB; a schedule's is smaller, a sign-in form a
token. 256 KiB leaves five times that for a client that indents its JSON or escapes
more. FastAPI parses a route's JSON body before its token check: a stranger's ``[{},
{}, ...]`` of 32 MiB (the campaigns' limit) to ``POST /v1/campaigns/check`` raised the
server's peak RSS from 151 to 962 MiB, before that route read its body after the check;
one of 256 KiB to ``POST /v1/calls`` raised it from 123 to 131 MiB (each request in
parallel holds its own: 20 at once, by 121 MiB) before ``auth.TokenGate`` refused a
stranger's body unread; a known token's is still parsed before its scope is checked."""

_CONTACTS_PATHS = frozenset({"/v1/campaigns", "/v1/campaigns/check"})
"""The paths whose POST takes a campaign's contacts (:mod:`.campaigns`): the only bodies
allowed up to ``platform.max_body_bytes``, read after the token check."""


def _load_optional_modules() -> None:
    for name in routers.OPTIONAL_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)  # registers its routers (routers.register)


def _body_limit(settings: PlatformSettings) -> Callable[[Scope], int]:
    """The longest body a request may have, by its route (:class:`BodyLimit`'s limit)."""
    largest = settings.max_body_bytes
    small = min(SMALL_BODY_MAX_BYTES, largest)

    def limit(scope: Scope) -> int:
        # The path the routes see: without the root path a proxy mounts the API under.
        path = scope["path"].removeprefix(scope.get("root_path", ""))
        return largest if scope["method"] == "POST" and path in _CONTACTS_PATHS else small

    return limit


def create_api(
    app: VoxtraApp,
    db: Database,
    settings: VoxtraSettings | PlatformSettings | None = None,
) -> FastAPI:
    """The API for ``app`` over ``db``; its :class:`Platform` is ``api.state.platform``.

    Building it registers the recorder's hooks on ``app`` (do it before ``app.start()``);
    ``await api.state.platform.start()`` migrates the store and loads the tokens
    (``voxtra serve`` does both).
    """
    platform = Platform(app, db, settings if settings is not None else app.settings)
    api = FastAPI(
        title="Voxtra call platform",
        version="1",
        description="Place calls, follow them live, read their status, transcript, "
        "recording and latency figures.",
    )
    api.state.platform = platform
    api.state.rate_limiter = RateLimiter(platform.settings.rate_limit, platform.settings.rate_burst)
    install_problem_handlers(api)
    api.include_router(calls.router)
    _load_optional_modules()
    for router in routers.ROUTERS:
        api.include_router(router)
    for setup in routers.SETUPS:
        setup(platform)

    # A /v1 route's token checked before its body is read (TokenGate): FastAPI reads
    # and parses a JSON body before it runs the route's dependencies, the token check
    # among them. Within the limit, 100 strangers' bodies of 256 KiB at once were parsed
    # to 401s, the server's peak RSS from 123 to 762 MiB (to 139 MiB behind the gate).
    own_routes = [route for router in (calls.router, *routers.ROUTERS) for route in router.routes]
    api.add_middleware(TokenGate, platform=platform, routes=own_routes)
    # Run before the gate (added after it): a body too long is a 413 whoever sends it,
    # at once when its Content-Length says so. Unbounded, a 200 MiB JSON body POSTed to
    # /v1/calls without a token was read and parsed to a 401, the server's RSS up 735 MiB
    # for that one request. Per route (_body_limit): only the campaign routes, which read
    # their bodies after the check, take max_body_bytes. Inside count_requests: the 413s
    # and the gate's 401s are counted.
    api.add_middleware(BodyLimit, limit=_body_limit(platform.settings), refusal=body_too_large)

    async def count_requests(request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        # Counted before any auth: a method label as sent let anyone add series for
        # ever (h11 takes any token as a method: 200 requests, 200 series, 836 KB of
        # /metrics). The methods the API serves, the rest "other".
        method = request.method if request.method in _METHODS else "other"
        platform.metrics.api_requests.labels(method, path, str(response.status_code)).inc()
        return response

    api.add_middleware(BaseHTTPMiddleware, dispatch=count_requests)

    @api.get("/healthz", tags=["operations"], summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz", tags=["operations"], summary="ARI connected and the store reachable")
    async def readyz() -> JSONResponse:
        started = time.monotonic()
        ari = app.ari_connected and not app.replaced
        database = await db.ping()
        ready = ari and database and platform.started
        body = {
            "status": "ready" if ready else "not ready",
            "ari": ari,
            "database": database,
            "platform": platform.started,
            "checked_in_ms": round((time.monotonic() - started) * 1000, 1),
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    @api.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(
            generate_latest(platform.metrics.registry), media_type=CONTENT_TYPE_LATEST
        )

    return api
