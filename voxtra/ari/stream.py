"""The ARI events WebSocket, kept alive.

Reconnects with capped exponential backoff and jitter (never a tight loop, even when the
server closes cleanly), pings so a dead peer is noticed within ``heartbeat * 1.5``
seconds, and counts connections in ``generation``. Asterisk does not replay events
missed while disconnected, so ``on_connect`` runs after every (re)connection: that is
where the app reconciles its state with ``GET /channels`` and ``GET /bridges``.

"Connected" means Asterisk has *registered* the applications and delivers their events
on this connection, not merely that it answered the WebSocket handshake: a channel sent
to an app that is not registered is hung up ("Stasis app ... doesn't exist"). So
``connected`` is set once each app's registration is confirmed end to end: a user event
sent to the app (``POST /events/user/voxtra-registration-<nonce>``) comes back on this
socket. ``GET /applications/{name}`` answering is not enough: reproduced on Asterisk
22.10 (the same app name connected, used for one call and closed 300 times in a row, as
consecutive tests do: 2-4 calls lost, with either REST client), a new connection's
registration can be lost while an earlier connection for the same name is still being
torn down. Asterisk's teardown of the old session unregisters the app *by name*, and its
registry clean-up can drop the app object the new session just took over; the app then
stays listed (the old object, kept by its channels) or vanishes, but no StasisStart ever
reaches the new socket. A registration that is not confirmed within
``registration_timeout`` is taken as lost: the connection is closed and made again
(after the usual backoff), which registers the app afresh. A server without user events
(404 while the app is listed, or a refusal such as a read-only ARI user's) and an app
whose event filter could keep the probe off the socket are taken as registered once
``GET /applications/{name}`` answers, as before. The probe event is not passed to
``on_event``.

Events are handed to ``on_event``, a plain (non-async) callable: dispatch must never
wait on user code, so the receiver only routes events into per-call queues.

``wants`` (optional) lets the receiver skip what nobody would receive: for a message
whose kind is routed by one channel alone and whose kind and channel id can be read
from the text without parsing it (:func:`~voxtra.ari.events.peek_route`),
``wants(kind, channel_id)`` False drops it unparsed (counted in ``events_skipped``).
Such a message is then not validated either: a malformed one nobody wanted is not
logged.

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
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from voxtra.ari.client import AriClient
from voxtra.ari.errors import AriError, AriNotFound, AriUnauthorized
from voxtra.ari.events import (
    AriEvent,
    ChannelUserevent,
    EventParseError,
    parse_event,
    peek_route,
)
from voxtra.ari.transport import EventConnection

__all__ = ["AriEventStream", "Connection"]

logger = logging.getLogger(__name__)

PROBE_EVENT = "voxtra-registration-"
"""Prefix of the user event that confirms a registration (a nonce follows)."""


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
        probe_timeout: float = 1.0,
        ignore: Sequence[str] = (),
        wants: Callable[[str, str], bool] | None = None,
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
        self.probe_timeout = probe_timeout
        self.ignore = tuple(ignore)
        """Event kinds Asterisk is asked not to send (set on each connection, before
        ``connected``)."""
        self.wants = wants
        """``wants(kind, channel_id)``: whether a message routed by that channel alone
        is to be parsed and delivered (None: every message is); see the module doc."""
        self.events_skipped = 0
        """Messages ``wants`` declined (counted in ``events_received`` too)."""
        self.registrations_lost = 0
        """Connections closed because Asterisk lost the apps' registration."""
        self._probes: dict[str, asyncio.Future[None]] = {}
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
                    if self._stopping:
                        # stop() came during the handshake, when there was no connection
                        # for it to close: this one is closed here, never read.
                        with contextlib.suppress(Exception):
                            await events.close()
                        break
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
        registered = await self._await_registration(events)
        if events.closed:
            return
        if not registered:
            self.registrations_lost += 1
            logger.warning(
                "Asterisk did not confirm Stasis app(s) %s within %.1f s of connecting"
                " (an earlier connection for the same name still closing can cost a new"
                " one its registration); connecting again",
                ", ".join(self.apps),
                self.registration_timeout,
            )
            await events.close()
            return
        if self.ignore:
            await self._filter_events()
            if events.closed:
                return
        self.connected.set()
        if connection.is_reconnect:
            logger.info("ARI events reconnected (generation %d)", connection.generation)
        else:
            # The transport's address, not the settings': a Twilio-only app's empty
            # transport is no Asterisk at the configured URL.
            where = self.client.transport.base_url or self.client.base_url
            logger.info("ARI events connected to %s", where)
        if self.on_connect is not None:
            # Reconciling lists channels over REST while events keep flowing in.
            await self._run_on_connect(connection)

    async def _await_registration(self, events: EventConnection) -> bool:
        """Confirm each app's registration (usually one round trip; milliseconds under
        load). False: Asterisk has not registered one of them (absent, or listed but
        delivering nothing) by ``registration_timeout``; True also when REST kept
        failing (nothing tells then; going on as before)."""
        deadline = time.monotonic() + self.registration_timeout
        for app in self.apps:
            delay = 0.005
            outcome = "error"
            while not events.closed:
                outcome = await self._probe(app, deadline)
                if outcome == "registered":
                    break
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.1)
            if events.closed:
                return True
            if outcome in ("absent", "inactive"):
                return False
            if outcome == "error":
                logger.warning(
                    "cannot confirm the registration of Stasis app %s %.1f s after"
                    " connecting (REST failing); going on",
                    app,
                    self.registration_timeout,
                )
        return True

    async def _probe(self, app: str, deadline: float) -> str:
        """One check of ``app``: "registered", "absent" (not listed), "inactive" (listed,
        but a user event sent to it did not come back) or "error" (no answer)."""
        name = PROBE_EVENT + uuid.uuid4().hex[:16]
        echo: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._probes[name] = echo
        try:
            try:
                await self.client.events.user_event(name, app)
            except AriNotFound:
                # Not registered, or a server without user events: the listing tells.
                return await self._listed(app, "absent")
            except AriError as exc:
                if not exc.status:
                    logger.debug("checking registration of %r: %s", app, exc)
                    return "error"
                # Refused (a read-only ARI user may not send events): the listing.
                return await self._listed(app, "absent")
            except (OSError, TimeoutError) as exc:
                logger.debug("checking registration of %r: %s", app, exc)
                return "error"
            wait = max(0.05, min(self.probe_timeout, deadline - time.monotonic()))
            try:
                await asyncio.wait_for(echo, wait)
            except TimeoutError:
                return await self._listed(app, "inactive", filtered_ok=True)
            return "registered"
        finally:
            self._probes.pop(name, None)

    async def _listed(self, app: str, otherwise: str, *, filtered_ok: bool = False) -> str:
        """The app's listing decides: unlisted is "absent"; listed is "registered" when
        the probe could not tell (no user events here, or an event filter that may keep
        the probe off the socket), else ``otherwise``."""
        try:
            info = await self.client.applications.get(app)
        except AriNotFound:
            return "absent"
        except (AriError, OSError, TimeoutError) as exc:
            logger.debug("checking registration of %r: %s", app, exc)
            return "error"
        if otherwise == "absent":
            return "registered"
        if filtered_ok and _filters_user_events(info.events_allowed, info.events_disallowed):
            return "registered"
        return otherwise

    async def _run_on_connect(self, connection: Connection) -> None:
        assert self.on_connect is not None
        try:
            await self.on_connect(connection)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("reconcile after ARI connect failed")

    async def _filter_events(self) -> None:
        """Ask Asterisk not to send the ``ignore`` kinds (ARI ``eventFilter``; a new
        registration starts without one)."""
        for app in self.apps:
            try:
                await self.client.applications.filter_events(app, disallowed=self.ignore)
            except (AriError, OSError, TimeoutError) as exc:
                logger.warning("cannot set the event filter of Stasis app %s: %s", app, exc)

    def _deliver(self, data: str | bytes) -> None:
        wants = self.wants
        if wants is not None:
            route = peek_route(data)
            if route is not None and not wants(*route):
                self.events_received += 1
                self.events_skipped += 1
                return
        try:
            event = parse_event(data)
        except EventParseError as exc:
            self.events_dropped += 1
            logger.warning("skipping a malformed ARI event: %s", exc)
            return
        self.events_received += 1
        if isinstance(event, ChannelUserevent) and event.eventname.startswith(PROBE_EVENT):
            # A registration probe's echo (one that came after its probe gave up too):
            # the stream's own, never the app's.
            echo = self._probes.get(event.eventname)
            if echo is not None and not echo.done():
                echo.set_result(None)
            return
        try:
            self.on_event(event)
        except Exception:
            logger.exception("ARI event handler failed on %s", event.type)


def _filters_user_events(
    allowed: list[dict[str, Any]] | None, disallowed: list[dict[str, Any]] | None
) -> bool:
    """Whether an app's event filter may keep a ChannelUserevent (the probe) away."""
    kinds = {"ChannelUserevent", "*"}
    if allowed and not any(entry.get("type") in kinds for entry in allowed):
        return True
    return any(entry.get("type") in kinds for entry in disallowed or ())
