"""``voxtra serve module:app``: the user's app and the API in one process and event loop.

Order at start: the store is migrated and the recorder started, then the app connects
to Asterisk, then the HTTP server listens (``/readyz`` says when all three are up). At
SIGINT/SIGTERM: the server stops taking requests, the app drains its calls (their end
is still recorded), then the platform cancels the dialling still going on and the
recorder writes what is left, then the Twilio client closes, then the database.

With ``twilio.account_sid``, ``twilio.auth_token`` and ``twilio.public_url`` set, the
same server also answers Twilio (``voxtra.twilio``): the webhook, status callback and
Media Streams socket under ``twilio.path_prefix``, each checked for Twilio's signature;
and the API places calls through Twilio (``backend: "twilio"``, the default when
``twilio.without_asterisk`` is set).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator

import uvicorn

from voxtra import eventloop
from voxtra.app import VoxtraApp
from voxtra.errors import ConfigError
from voxtra.platform.api import create_api
from voxtra.platform.platform import Platform, default_database_url
from voxtra.platform.store.db import Database

try:  # the `twilio` extra: only needed when Twilio is configured
    from voxtra.twilio import NoAsterisk, TwilioBackend
except ImportError:  # pragma: no cover - the dev install has it
    NoAsterisk = TwilioBackend = None  # type: ignore[assignment,misc]

__all__ = ["PlatformServer", "serve"]

logger = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn's server, but the signals are the embedding program's (:func:`serve`
    installs them for the whole run: the app's start and drain too). uvicorn's own
    handling covers only its serving, then re-raises the signal: in a program that set
    no handler of its own, a SIGTERM then killed the process before the app drained
    its calls."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def request_exit(self) -> None:
        if self.should_exit:
            self.force_exit = True  # a second signal: do not wait for open connections
        self.should_exit = True


class PlatformServer:
    """The app, its platform and the HTTP server, started and stopped together."""

    def __init__(
        self,
        app: VoxtraApp,
        *,
        database_url: str | None = None,
        host: str | None = None,
        port: int | None = None,
        log_level: str = "info",
    ) -> None:
        settings = app.settings.platform
        self.app = app
        self.db = Database(database_url or default_database_url(settings))
        self.api = create_api(app, self.db, app.settings)
        self.platform: Platform = self.api.state.platform
        self.twilio: TwilioBackend | None = _twilio_backend(app)
        """Twilio's webhook and Media Streams socket, served here when Twilio is set up
        (``twilio.account_sid``, ``twilio.auth_token``, ``twilio.public_url``)."""
        if self.twilio is not None:
            # Signed by Twilio (checked in each route), not by the API's bearer tokens.
            self.api.router.routes.extend(self.twilio.routes())
            # The API's calls, schedules and campaigns may go out through Twilio too.
            self.platform.use_twilio(self.twilio)
        config = uvicorn.Config(
            self.api,
            host=host or settings.host,
            port=settings.port if port is None else port,
            log_level=log_level.lower(),
            lifespan="off",
            # Request lines only: a header (the bearer token) is never in them.
            access_log=True,
        )
        self.server = _Server(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        """The port listened on (the real one when 0 was asked for)."""
        for server in self.server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return int(self.server.config.port)

    @property
    def url(self) -> str:
        return f"http://{self.server.config.host}:{self.port}"

    async def start(self) -> None:
        await self.platform.start()
        try:
            await self.app.start()
        except BaseException:
            await self._close()
            raise
        self._task = asyncio.create_task(self.server.serve(), name="voxtra-platform-http")
        while not self.server.started:
            if self._task.done():
                await self.stop()
                raise OSError(f"the API server did not start on {self.server.config.host}")
            await asyncio.sleep(0.02)
        logger.info(
            "Voxtra platform: API on %s (docs at %s/docs), store %s",
            self.url,
            self.url,
            self.db.safe_url,
        )

    def request_exit(self) -> None:
        """Stop serving (a signal handler's call): :meth:`wait` returns."""
        self.server.request_exit()

    async def wait(self) -> None:
        """Until the server stops (a signal, or :meth:`stop`)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        if self._task is not None:
            self.server.should_exit = True
            with contextlib.suppress(Exception):
                await self._task
            self._task = None
        try:
            await self.app.stop()
        finally:
            await self._close()

    async def _close(self) -> None:
        """After the app: the platform, then the Twilio client, then the database."""
        try:
            # The platform's stop cancels the calls still dialling, and one ringing on
            # Twilio is cancelled there through the Twilio client: closed before, the
            # client was opened again for that cancel and never closed (its connection
            # to Twilio open after the stop, "Unclosed client session" logged once the
            # object was collected).
            await self.platform.stop()
        finally:
            try:
                if self.twilio is not None:
                    await self.twilio.aclose()
            finally:
                await self.db.close()


def _twilio_backend(app: VoxtraApp) -> TwilioBackend | None:
    if not app.settings.twilio.configured:
        return None
    if TwilioBackend is None:
        raise ConfigError(
            "twilio.account_sid, auth_token and public_url are set but the Twilio backend "
            "is not installed: pip install 'voxtra[twilio]'"
        )
    if app.settings.twilio.without_asterisk:
        app.use_transport(NoAsterisk())
    return TwilioBackend(app)


def serve(app: VoxtraApp, *, log_level: str | None = None) -> None:
    """Run ``app`` and its API until SIGINT/SIGTERM (blocking): ``voxtra serve``."""
    app.configure_logging(log_level)

    async def main() -> None:
        server = PlatformServer(app, log_level=log_level or "info")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, server.request_exit)
        await server.start()
        try:
            await server.wait()
        finally:
            await server.stop()

    eventloop.run(main(), app.settings.event_loop)
