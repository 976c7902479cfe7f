"""The ARI events WebSocket, kept alive.

Reconnects with capped exponential backoff and jitter (never a tight loop, even when the
server closes cleanly), pings so a dead peer is noticed within ``heartbeat * 1.5``
seconds, and counts connections in ``generation``. Asterisk does not replay events
missed while disconnected, so ``on_connect`` runs after every (re)connection: that is
where the app reconciles its state with ``GET /channels`` and ``GET /bridges``.

"Connected" means Asterisk has *registered* the applications, not merely answered the
WebSocket handshake: Asterisk registers them on its own thread after the upgrade, and
a channel sent to the app in between is hung up ("Stasis app ... doesn't exist"). So
``connected`` is set once ``GET /applications/{name}`` answers for every app.

Events are handed to ``on_event``, a plain (non-async) callable: dispatch must never
wait on user code, so the receiver only routes events into per-call queues.

The connection itself comes from the client's transport
(:meth:`~voxtra.ari.transport.AriTransport.connect_events`): a WebSocket to a real
Asterisk, or an in-process one in tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from voxtra.ari.client import AriClient
from voxtra.ari.errors import AriError, AriNotFound, AriUnauthorized
from voxtra.ari.events import AriEvent, EventParseError, parse_event
from voxtra.ari.transport import EventConnection

__all__ = ["AriEventStream", "Connection"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Connection:
    """One established events connection. ``generation`` starts at 1."""

    generation: int
    connected_at: float

    @property
    def is_reconnect(self) -> bool:
        return self.generation > 1


class AriEventStream:
    """Receives ARI events for one or more Stasis applications until ``stop()``."""

    def __init__(
        self,
        client: AriClient,
        apps: str | Sequence[str],
        *,
        on_event: Callable[[AriEvent], None],
        on_connect: Callable[[Connection], Awaitable[None]] | None = None,
        on_disconnect: Callable[[Connection], None] | None = None,
        heartbeat: float = 5.0,
        initial_backoff: float = 0.25,
        max_backoff: float = 30.0,
        stable_after: float = 5.0,
        subscribe_all: bool = False,
        registration_timeout: float = 5.0,
    ) -> None:
        self.client = client
        self.apps = [apps] if isinstance(apps, str) else list(apps)
        self.on_event = on_event
        self.on_connect = on_connect
        self.on_disconnect = on_disconnect
        self.heartbeat = heartbeat
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.stable_after = stable_after
        self.subscribe_all = subscribe_all
        self.registration_timeout = registration_timeout
        self.generation = 0
        self.events_received = 0
        self.events_dropped = 0
        self.connected = asyncio.Event()
        self.connection: Connection | None = None
        self._stopping = False
        self._events: EventConnection | None = None
        self._reconcile_tasks: set[asyncio.Task[None]] = set()

    def backoff(self, attempt: int) -> float:
        """Delay before reconnect ``attempt`` (0-based): capped, with full jitter above half."""
        ceiling = min(self.max_backoff, self.initial_backoff * (2.0 ** min(attempt, 60)))
        return float(ceiling / 2 + random.random() * ceiling / 2)

    async def wait_connected(self, timeout: float | None = None) -> Connection:
        await asyncio.wait_for(self.connected.wait(), timeout)
        assert self.connection is not None
        return self.connection

    async def stop(self) -> None:
        self._stopping = True
        if self._events is not None:
            await self._events.close()

    async def reconnect(self) -> None:
        """Drop the current connection; :meth:`run` connects again after its backoff.

        Registers the apps anew: how a client whose app was taken over
        (``ApplicationReplaced``) takes it back.
        """
        events = self._events
        if events is not None and not self._stopping:
            await events.close()

    async def run(self) -> None:
        """Connect, receive, reconnect; returns after ``stop()``. Cancellable."""
        attempt = 0
        try:
            while not self._stopping:
                try:
                    events = await self.client.transport.connect_events(
                        self.apps, subscribe_all=self.subscribe_all, heartbeat=self.heartbeat
                    )
                except AriUnauthorized:
                    # Refused credentials do not get better by retrying. The transport
                    # raised it without the aiohttp error (whose request_info holds the
                    # Authorization header): re-raised as it is, nothing chained.
                    raise
                except AriError as exc:
                    if exc.status:
                        logger.warning("ARI events handshake failed (%s); retrying", exc.status)
                    elif attempt == 0 or self.generation == 0:
                        logger.warning(
                            "cannot reach ARI events at %s: %s", self.client.base_url, exc
                        )
                    else:
                        logger.debug("ARI still unreachable: %s", exc)
                except (OSError, TimeoutError) as exc:  # a transport that broke its contract
                    logger.warning("cannot reach ARI events at %s: %s", self.client.base_url, exc)
                else:
                    started = time.monotonic()
                    await self._session(events)
                    if time.monotonic() - started >= self.stable_after:
                        attempt = 0
                if self._stopping:
                    break
                delay = self.backoff(attempt)
                attempt += 1
                logger.debug("reconnecting to ARI events in %.2f s", delay)
                await asyncio.sleep(delay)
        finally:
            self.connected.clear()
            for task in self._reconcile_tasks:
                task.cancel()
            if self._reconcile_tasks:
                await asyncio.gather(*self._reconcile_tasks, return_exceptions=True)

    async def _session(self, events: EventConnection) -> None:
        self._events = events
        self.generation += 1
        connection = Connection(self.generation, time.monotonic())
        self.connection = connection
        # Events are read from the start; "connected" waits for the registration.
        ready = asyncio.create_task(self._announce(events, connection))
        self._reconcile_tasks.add(ready)
        ready.add_done_callback(self._reconcile_tasks.discard)
        try:
            # The transport ends the iteration when the connection closes or fails
            # (and logs why); an error escaping a transport is a lost connection too.
            async for data in events:
                self._deliver(data)
        except (AriError, OSError) as exc:
            logger.warning("ARI events connection lost: %s", exc)
        finally:
            ready.cancel()
            self._events = None
            self.connected.clear()
            with contextlib.suppress(Exception):
                await events.close()
            if not self._stopping:
                logger.warning(
                    "ARI events connection closed (generation %d); reconnecting",
                    connection.generation,
                )
            if self.on_disconnect is not None:
                try:
                    self.on_disconnect(connection)
                except Exception:
                    logger.exception("on_disconnect hook failed")

    async def _announce(self, events: EventConnection, connection: Connection) -> None:
        await self._await_registration(events)
        if events.closed:
            return
        self.connected.set()
        if connection.is_reconnect:
            logger.info("ARI events reconnected (generation %d)", connection.generation)
        else:
            logger.info("ARI events connected to %s", self.client.base_url)
        if self.on_connect is not None:
            # Reconciling lists channels over REST while events keep flowing in.
            await self._run_on_connect(connection)

    async def _await_registration(self, events: EventConnection) -> None:
        """Poll until Asterisk lists every app (usually at once; milliseconds under load)."""
        pending = list(self.apps)
        deadline = time.monotonic() + self.registration_timeout
        delay = 0.005
        while pending and not events.closed:
            for app in list(pending):
                try:
                    await self.client.applications.get(app)
                except AriNotFound:
                    continue
                except (AriError, OSError, TimeoutError) as exc:
                    logger.debug("checking registration of %r: %s", app, exc)
                    continue
                pending.remove(app)
            if not pending:
                return
            if time.monotonic() >= deadline:
                logger.warning(
                    "Asterisk has not registered Stasis app(s) %s %.1f s after connecting;"
                    " going on",
                    ", ".join(pending),
                    self.registration_timeout,
                )
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    async def _run_on_connect(self, connection: Connection) -> None:
        assert self.on_connect is not None
        try:
            await self.on_connect(connection)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("reconcile after ARI connect failed")

    def _deliver(self, data: str | bytes) -> None:
        try:
            event = parse_event(data)
        except EventParseError as exc:
            self.events_dropped += 1
            logger.warning("skipping a malformed ARI event: %s", exc)
            return
        self.events_received += 1
        try:
            self.on_event(event)
        except Exception:
            logger.exception("ARI event handler failed on %s", event.type)
