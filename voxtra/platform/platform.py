"""``Platform``: the store, the recorder, the call service and the metrics of one app.

Built by :func:`voxtra.platform.api.create_api` (which is how it is reached from the
API's routes: ``request.app.state.platform``). :meth:`Platform.start` migrates the
store, loads the tokens and starts the recorder's writer; run it before ``app.start()``
(``voxtra serve`` does). Part 2 adds its engines with :meth:`on_start` / :meth:`on_stop`
from a setup function registered in :mod:`voxtra.platform.api.routers`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from voxtra.app import VoxtraApp
from voxtra.config import PlatformSettings, VoxtraSettings
from voxtra.platform.backends import TwilioCallBackend, TwilioRestCalls
from voxtra.platform.calls import CallService
from voxtra.platform.metrics import PlatformMetrics
from voxtra.platform.notify import CallNotifier
from voxtra.platform.recorder import PlatformRecorder
from voxtra.platform.store.db import Database
from voxtra.platform.store.repository import CallStore, token_digest

__all__ = ["Platform", "default_database_url"]

logger = logging.getLogger(__name__)

Hook = Callable[[], Awaitable[None]]


def default_database_url(settings: PlatformSettings) -> str:
    """``platform.database_url``, else the SQLite file ``platform.db`` (working dir)."""
    return settings.database_url or "sqlite:///platform.db"


class Platform:
    """Everything behind the API for one :class:`~voxtra.app.VoxtraApp`."""

    def __init__(
        self, app: VoxtraApp, db: Database, settings: VoxtraSettings | PlatformSettings
    ) -> None:
        self.app = app
        self.db = db
        self.settings: PlatformSettings = (
            settings.platform if isinstance(settings, VoxtraSettings) else settings
        )
        self.metrics = PlatformMetrics()
        self.notifier = CallNotifier()
        self.store = CallStore(db, self.notifier.notify)
        self.recorder = PlatformRecorder(app, self.store, self.metrics)
        self.calls = CallService(app, self.store, self.settings, self.metrics)
        self.tokens: list[tuple[str, str, frozenset[str]]] = []
        """(name, sha256 hex, scopes) of every API token, from the settings."""
        self._on_start: list[Hook] = []
        self._on_stop: list[Hook] = []
        self.started = False

    def use_twilio(self, twilio: TwilioRestCalls) -> None:
        """Place calls through Twilio too (``twilio``: the app's
        ``voxtra.twilio.TwilioBackend``; ``voxtra serve`` does this when Twilio is
        configured). Its caller id by default: ``twilio.from_number``."""
        self.calls.add_backend(TwilioCallBackend(twilio, self.app.settings.twilio.from_number))

    def on_start(self, hook: Hook) -> Hook:
        """Run ``await hook()`` at :meth:`start`, after the store is migrated."""
        self._on_start.append(hook)
        return hook

    def on_stop(self, hook: Hook) -> Hook:
        """Run ``await hook()`` at :meth:`stop`, first (in reverse order of adding)."""
        self._on_stop.append(hook)
        return hook

    async def start(self) -> None:
        await self.db.migrate()
        self.tokens = [
            (
                token.name,
                token.sha256 or token_digest(token.token.get_secret_value()),  # type: ignore[union-attr]
                frozenset(token.scopes),
            )
            for token in self.settings.tokens
        ]
        await self.store.sync_tokens((name, digest, sorted(s)) for name, digest, s in self.tokens)
        if not self.tokens:
            logger.warning(
                "platform: no API tokens configured (platform.tokens): every request is refused"
            )
        self.recorder.start()
        for hook in self._on_start:
            await hook()
        self.started = True

    async def stop(self) -> None:
        for hook in reversed(self._on_stop):
            try:
                await hook()
            except Exception:
                logger.exception("platform: on_stop hook failed")
        await self.calls.stop()
        await self.recorder.stop()
        self.started = False
