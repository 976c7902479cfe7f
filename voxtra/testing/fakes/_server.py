"""A small loopback aiohttp server base shared by the wire-protocol fakes."""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Self

from aiohttp import web

logger = logging.getLogger(__name__)


class FakeServer:
    """Starts an ``aiohttp.web`` app on 127.0.0.1 (a free port unless ``port`` is given)."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._port = port
        self.app = web.Application()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None

    @property
    def port(self) -> int:
        if self._runner is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        for addr in self._runner.addresses:
            return int(addr[1])
        raise RuntimeError(f"{type(self).__name__} has no listening socket")

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> Self:
        self._runner = web.AppRunner(
            self.app, handle_signals=False, access_log=None, shutdown_timeout=0.5
        )
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, self.host, self._port)
        await self._site.start()
        logger.debug("%s listening on %s", type(self).__name__, self.url)
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
