"""The platform's HTTP API: :func:`create_api` builds it for one app and database.

``/v1/calls`` (:mod:`voxtra.platform.api.calls`), ``/healthz``, ``/readyz``,
``/metrics``; OpenAPI at ``/openapi.json``, interactive docs at ``/docs``. Routers of
other modules join through :mod:`voxtra.platform.api.routers`.
"""

from __future__ import annotations

import importlib
import importlib.util
import time

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from voxtra.app import VoxtraApp
from voxtra.asgi import BodyLimit
from voxtra.config import PlatformSettings, VoxtraSettings
from voxtra.platform.api import calls, routers
from voxtra.platform.api.auth import RateLimiter
from voxtra.platform.api.problems import body_too_large, install_problem_handlers
from voxtra.platform.platform import Platform
from voxtra.platform.store.db import Database

__all__ = ["create_api"]

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _load_optional_modules() -> None:
    for name in routers.OPTIONAL_MODULES:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)  # registers its routers (routers.register)


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

    # Before anything reads it: FastAPI reads and parses a JSON body before it runs the
    # route's dependencies, the token check among them. Unbounded, a 200 MiB JSON body
    # POSTed to /v1/calls without a token was read and parsed to a 401, the server's RSS
    # up 735 MiB for that one request. Inside count_requests: the 413s are counted.
    api.add_middleware(BodyLimit, limit=platform.settings.max_body_bytes, refusal=body_too_large)

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
