"""The engine inside ``voxtra serve``: one :class:`Worker` per platform, started and
stopped with it (registered by the campaign and schedule routers' modules)."""

from __future__ import annotations

import uuid
import weakref

from voxtra.platform.engine.clock import Clock
from voxtra.platform.engine.worker import Worker
from voxtra.platform.platform import Platform
from voxtra.platform.targets import dial_target

__all__ = ["install", "setup", "worker_of"]

_WORKERS: weakref.WeakKeyDictionary[Platform, Worker] = weakref.WeakKeyDictionary()


def setup(platform: Platform, clock: Clock | None = None) -> Worker:
    """Give ``platform`` its worker (once), started after the store is migrated."""
    found = _WORKERS.get(platform)
    if found is not None:
        return found
    settings = platform.settings
    worker = Worker(
        platform.app,
        platform.db,
        routes=platform.calls.handler_for,
        dial=lambda to: dial_target(to, settings),
        clock=clock,
        worker_id=f"{platform.app.instance_id[:40]}-{uuid.uuid4().hex[:12]}",
    )
    _WORKERS[platform] = worker

    async def start() -> None:
        await worker.start()

    async def stop() -> None:
        await worker.stop()

    platform.on_start(start)
    platform.on_stop(stop)
    return worker


def worker_of(platform: Platform) -> Worker:
    """The platform's worker (made on first use)."""
    return setup(platform)


def install(platform: Platform) -> None:
    """The set-up function the routers register (:func:`setup` with the system clock)."""
    setup(platform)
