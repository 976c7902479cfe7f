"""The scheduling worker: one per process, next to the app it places calls with.

Each round it renews its lease, records ``lost`` for the work of workers whose lease
expired, claims the due schedule runs and what each running campaign's limits and
calling windows allow (see :mod:`voxtra.platform.engine.claims`), and dials each claim
through its telephony backend (:class:`~voxtra.platform.backends.CallBackend`: Asterisk's
``app.originate`` or Twilio's, as the campaign or schedule names) running the named
route's handler. The outcome comes from the originate (answered, or ``CallBusy`` /
``CallNoAnswer`` / ``CallFailed``, from Asterisk's hangup cause or Twilio's status
callback) and, for an answered call, its end; it is written back in its own
transaction, and the worker wakes at once to fill the freed place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Collection, Mapping
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from voxtra.errors import AppNotRunning, CallBusy, CallFailed, CallNoAnswer, VoxtraError
from voxtra.platform.backends import CallBackend, OriginateRequest
from voxtra.platform.engine import claims
from voxtra.platform.engine.claims import ClaimedAttempt, ClaimedRun, FinishedCampaign
from voxtra.platform.engine.clock import EngineClock, SystemClock
from voxtra.platform.scheduling import AttemptOutcome, ContactState
from voxtra.platform.store.db import Database, unreachable
from voxtra.routing import CallHandler

__all__ = ["CallLog", "Dialer", "Notify", "SchedulingWorker"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_WRITE_WAIT_MAX = 8.0
"""Seconds between tries of an outcome's write while the database is away."""

UNSERVABLE_RETRY = timedelta(minutes=10)
"""How long a schedule whose time zone this worker lacks is left alone before it is
tried again (tzdata may have been installed meanwhile)."""

Notify = Callable[[str, dict[str, Any], list[str]], None]
"""``notify(event, data, urls)``: hand an event to the webhooks (must not block)."""


class Dialer(Protocol):
    """What the worker needs of the app (:class:`voxtra.VoxtraApp` is one)."""

    async def originate(
        self,
        endpoint: str,
        *,
        caller_id: str | None = None,
        timeout: int = 30,
        variables: Mapping[str, str] | None = None,
        handler: CallHandler | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Any: ...


class CallLog(Protocol):
    """Where the worker's calls are recorded as calls (the platform's call store), so
    ``GET /v1/calls`` lists them, busy and unanswered ones included."""

    async def dialing(
        self,
        to: str,
        route: str | None,
        caller_id: str | None,
        metadata: dict[str, Any],
        backend: str | None = None,
    ) -> dict[str, Any]:
        """A call is about to be dialed (through ``backend``; None: the default):
        record it; returns metadata to give the call."""
        ...

    async def refused(
        self, extra: dict[str, Any], outcome: AttemptOutcome, cause: int | None, error: str | None
    ) -> None:
        """The call was not answered (an answered one is followed by the app's hooks)."""
        ...


class _AppBackend(CallBackend):
    """The app itself with a ``dial(to)`` mapping: the worker's backend when it is given
    no ``backends`` (an embedding program's or a test's worker on Asterisk)."""

    name = "asterisk"

    def __init__(self, app: Dialer, dial: Callable[[str], str]) -> None:
        super().__init__(app)
        self.dial = dial

    def target(self, to: str, field: str = "to") -> str:
        return self.dial(to)


class _NotPlaced(Exception):
    """The app took no new call (it is stopping): the claim goes back to the store."""


def _outcome(exc: BaseException) -> AttemptOutcome:
    if isinstance(exc, CallBusy):
        return AttemptOutcome.BUSY
    if isinstance(exc, CallNoAnswer):
        return AttemptOutcome.NO_ANSWER
    return AttemptOutcome.FAILED


class SchedulingWorker:
    """Claims and dials scheduled and campaign calls for one app.

    ``routes(name)`` gives the handler of a named route (``None``: the app's own routing
    is not used for outbound calls, so an unknown name fails the attempt).
    ``backends(name)`` gives the telephony backend a claim names (None: the default;
    an unknown or unconfigured one raises, and the attempt fails); without it, calls go
    through ``app.originate`` with ``dial(to)`` turning a stored ``to`` into an endpoint
    (the API checked it on the way in). ``served()``: the backends' names, when given
    only campaigns and schedules on them are claimed.
    ``clock``: every timestamp and wait (a test injects a fast one). ``lease``: seconds
    after its last renewal that a silent worker counts as dead and its calls as lost
    (recorded by a worker whose own lease has been renewed for that long, so not the
    live calls of a worker whose lease ran out in an outage that stopped both).
    ``ready()``: whether calls can be placed now (the app's ARI connection is up); while
    not, the worker claims nothing.
    """

    def __init__(
        self,
        app: Dialer,
        db: Database,
        *,
        routes: Callable[[str | None], CallHandler | None],
        dial: Callable[[str], str] = lambda to: to,
        backends: Callable[[str | None], CallBackend] | None = None,
        served: Callable[[], Collection[str]] | None = None,
        clock: EngineClock | None = None,
        worker_id: str | None = None,
        poll_interval: float = 1.0,
        lease: float = 30.0,
        notify: Notify | None = None,
        app_webhooks: tuple[str, ...] = (),
        calls: CallLog | None = None,
        ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self.app = app
        self.db = db
        self.routes = routes
        self.dial = dial
        direct = _AppBackend(app, dial)
        self.backends: Callable[[str | None], CallBackend] = backends or (lambda name: direct)
        self.served = served
        self.clock: EngineClock = clock or SystemClock()
        self.worker_id = worker_id or f"w-{socket.gethostname()[:32]}-{uuid.uuid4().hex[:8]}"
        self.poll_interval = poll_interval
        self.lease = lease
        self.notify = notify
        self.app_webhooks = app_webhooks
        self.calls = calls
        self.ready = ready
        self.placed = 0
        """Calls this worker has dialed (attempts and runs)."""
        self._wake = asyncio.Event()
        self._calls: set[asyncio.Task[None]] = set()
        self._unservable: set[str] = set()
        """Schedules whose time zone this worker's tzdata lacks (claims.claim_schedules),
        tried again every ``UNSERVABLE_RETRY`` of schedule time."""
        self._unservable_since: datetime | None = None
        self._loop: asyncio.Task[None] | None = None
        self._beats: asyncio.Task[None] | None = None
        self._last_beat: float | None = None
        self._store_up: float | None = None
        """Since when (loop time) every renewal of this worker's lease has succeeded;
        None: the last one failed."""

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        await self._beat(force=True)
        if self.db.dialect == "sqlite":
            async with self.db.session() as session:
                others = await claims.live_workers(session, self.clock.now(), self.worker_id)
            if others:
                # SQLite has no SKIP LOCKED and serialises the file: limits and claims
                # are only sound for one worker. Postgres is the engine for several.
                logger.warning(
                    "worker %s: %d other live worker(s) on this SQLite store; run several "
                    "workers on Postgres",
                    self.worker_id,
                    len(others),
                )
        self._beats = asyncio.create_task(self._heartbeat(), name=f"voxtra-lease-{self.worker_id}")
        self._loop = asyncio.create_task(self._run(), name=f"voxtra-worker-{self.worker_id}")

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop claiming, let the calls in flight finish up to ``timeout``, give up the
        lease (what is still open is then recorded lost by the next worker's round)."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None
        if self._calls:
            _, pending = await asyncio.wait(set(self._calls), timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._beats is not None:  # the lease held while the calls above finished
            self._beats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beats
            self._beats = None
        async with self.db.session() as session:
            await claims.release(session, self.worker_id)

    def wake(self) -> None:
        """Run a round now (new work was stored in this process)."""
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return len(self._calls)

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A database hiccup must not end the worker: log and try next round.
                logger.exception("worker %s: a round failed", self.worker_id)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._wake.wait(), self.clock.real_seconds(self.poll_interval)
                )

    async def _heartbeat(self) -> None:
        """The lease renewed every third of its length, whatever the poll interval: a
        round waits ``poll_interval`` (up to 60 s), a lease may be 3 s, and a lease not
        renewed makes the other workers record this one's live calls lost."""
        while True:
            await asyncio.sleep(self.clock.real_seconds(self.lease / 3))
            try:
                await self._beat()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("worker %s: renewing the lease failed", self.worker_id)

    async def _beat(self, *, force: bool = False) -> None:
        loop = asyncio.get_running_loop()
        interval = self.clock.real_seconds(self.lease / 3)
        if not force and self._last_beat is not None and loop.time() - self._last_beat < interval:
            return
        try:
            async with self.db.session() as session:
                await claims.heartbeat(
                    session,
                    self.worker_id,
                    self.clock.now(),
                    self.lease,
                    host=socket.gethostname()[:200],
                    pid=os.getpid(),
                )
        except Exception:
            self._store_up = None  # the others' renewals may be failing as well
            raise
        now, before = loop.time(), self._last_beat
        self._last_beat = now
        if (
            self._store_up is None
            or before is None
            or now - before > self.clock.real_seconds(self.lease)
        ):
            # A lease or more without a renewal is an outage too, one that failed
            # nothing: a network that black-holes hangs every query instead, and the
            # renewal that hung through it succeeds when it ends. Counted as up since
            # it started, this worker recorded the others' live calls lost before
            # they could renew (tests/integration/platform/test_engine_outage_postgres.py).
            self._store_up = now

    # -- one round --------------------------------------------------------------------

    async def run_once(self) -> int:
        """One round (heartbeat, reap, claim, dial); returns the calls it started."""
        await self._beat()
        if self._may_reap():
            async with self.db.session() as session:
                await claims.reap_lost(session, self.clock.now(), self.worker_id)
        started = 0
        if not self.ready():
            # Asterisk is out of reach: claiming now would turn every contact's attempt
            # into a failure; the work waits in the store (for this or another worker).
            return 0
        # Only what this worker's backends can dial: a worker without Twilio leaves a
        # Twilio campaign to one with it, instead of failing its contacts.
        served = self.served() if self.served is not None else None
        async with self.db.session() as session:
            now = self.clock.now()
            if self._unservable_since is None or now - self._unservable_since > UNSERVABLE_RETRY:
                # Tried again now and then: tzdata installed since (ZoneInfo caches no
                # failed look-up) and schedules deleted since leave the set, which would
                # otherwise grow for the process's life, one NOT IN parameter each.
                self._unservable.clear()
                self._unservable_since = now
            runs = await claims.claim_schedules(
                session,
                self.worker_id,
                self.clock.now(),
                backends=served,
                unservable=self._unservable,
            )
        for run in runs:
            self._spawn(self._place_run(run))
            started += 1
        async with self.db.session() as session:
            campaign_ids = await claims.running_campaigns(
                session, self.clock.now(), backends=served
            )
        for campaign_id in campaign_ids:
            try:
                async with self.db.session() as session:
                    attempts, finished = await claims.claim_campaign(
                        session, campaign_id, self.worker_id, self.clock.now
                    )
            except asyncio.CancelledError:
                raise
            except Exception:
                # One campaign's claim failing (a row the code cannot read) must not
                # hold up the campaigns after it, on this and every other worker.
                logger.exception(
                    "worker %s: claiming campaign %s failed", self.worker_id, campaign_id
                )
                continue
            for attempt in attempts:
                self._spawn(self._place_attempt(attempt))
                started += 1
            if finished is not None:
                self._campaign_finished(finished)
        return started

    def _may_reap(self) -> bool:
        """Whether this worker has reached the store for a whole lease without a failure.

        A lease that ran out while nobody could reach the store says nothing of its
        worker: when the store came back, the first worker to run a round recorded the
        others' live calls lost before their next renewal (a third of a lease away), and
        a policy that retries ``failed`` dialed those contacts a second time while the
        first call was still up. After a lease of access, every worker that is alive
        and reaches the store has renewed; the ones still expired are gone.
        """
        if self._store_up is None:
            return False
        up = asyncio.get_running_loop().time() - self._store_up
        return up >= self.clock.real_seconds(self.lease)

    def _spawn(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await work
            finally:
                self._wake.set()

        task = asyncio.ensure_future(run())
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)
        self.placed += 1

    # -- placing calls ----------------------------------------------------------------

    async def _dial(
        self,
        to: str,
        route: str | None,
        caller_id: str | None,
        ring_timeout: int,
        variables: dict[str, Any],
        metadata: dict[str, Any],
        on_answer: Callable[[str], Awaitable[None]],
        urls: list[str],
        backend: str | None = None,
    ) -> tuple[AttemptOutcome, int | None, str | None]:
        """Dial and wait for the outcome: (outcome, hangup cause, error)."""
        extra: dict[str, Any] = {}
        if self.calls is not None:
            try:
                extra = await self.calls.dialing(to, route, caller_id, metadata, backend)
            except Exception:  # the call log is a record, not a gate: dial anyway
                logger.exception("worker %s: could not record a call", self.worker_id)
        try:
            handler = self.routes(route)
            if handler is None and route is not None:
                raise VoxtraError(f"no route named {route!r}")
            placer = self.backends(backend)
            # The contact's variables reach the handler as call.metadata["customer_data"]
            # (as for API calls), never the channel: nothing a client sends is set in
            # the dialplan's variables.
            call = await placer.originate(
                OriginateRequest(
                    placer.target(to),
                    caller_id=caller_id,
                    timeout=ring_timeout,
                    handler=handler,
                    metadata={**metadata, **extra, "customer_data": dict(variables)},
                )
            )
        except asyncio.CancelledError:
            # The worker stopped with the call still dialling (app.originate hangs the
            # channel up): the record ends here, the attempt is left to the reaper.
            await self._refused(extra, AttemptOutcome.CANCELED, None, "the worker stopped")
            raise
        except AppNotRunning as exc:
            # Between this round's claim and the dial the app began to stop: nothing
            # was placed, so the contact or run is handed back, not failed.
            await self._refused(extra, AttemptOutcome.CANCELED, None, f"not placed: {exc}")
            raise _NotPlaced from None
        except (CallBusy, CallNoAnswer, CallFailed) as exc:
            result = (_outcome(exc), exc.cause, str(exc))
        except VoxtraError as exc:
            result = (AttemptOutcome.FAILED, None, str(exc))
        except Exception as exc:
            # Anything else still ends the attempt: left open, it would hold a place of
            # max_concurrent and its contact for as long as this worker lives.
            logger.exception("worker %s: dialing %s failed", self.worker_id, to)
            result = (AttemptOutcome.FAILED, None, type(exc).__name__)
        else:
            with contextlib.suppress(Exception):
                await on_answer(call.id)
            self._event("call.answered", {"channel_id": call.id, **metadata}, urls)
            await call.wait_ended()
            return AttemptOutcome.COMPLETED, call.hangup_cause, None
        await self._refused(extra, *result)
        return result

    async def _refused(
        self, extra: dict[str, Any], outcome: AttemptOutcome, cause: int | None, error: str | None
    ) -> None:
        """The call record of a dial that was not answered ends (busy, failed, ...)."""
        if self.calls is None or not extra:
            return
        try:
            await self.calls.refused(extra, outcome, cause, error)
        except Exception:
            logger.exception("worker %s: could not record a call's outcome", self.worker_id)

    async def _place_attempt(self, claim: ClaimedAttempt) -> None:
        metadata = {
            "campaign_id": claim.campaign_id,
            "contact_id": claim.contact_id,
            "attempt": claim.attempt,
            "attempt_id": claim.attempt_id,
        }

        async def answered(channel_id: str) -> None:
            async with self.db.session() as session:
                await claims.mark_answered(session, claim.attempt_id, self.clock.now(), channel_id)

        urls = [claim.webhook_url] if claim.webhook_url else []
        self._event("call.started", {"to": claim.to, **metadata}, urls)
        try:
            outcome, cause, error = await self._dial(
                claim.to,
                claim.route,
                claim.caller_id,
                claim.ring_timeout,
                claim.variables,
                metadata,
                answered,
                urls,
                claim.backend,
            )
        except _NotPlaced:

            async def give_back() -> bool:
                async with self.db.session() as session:
                    return await claims.give_back_attempt(
                        session, claim.attempt_id, self.clock.now()
                    )

            await self._write(give_back)
            self._not_placed(claim.to, metadata, urls, ContactState.PENDING)
            return

        async def finish() -> ContactState | None:
            async with self.db.session() as session:
                return await claims.finish_attempt(
                    session,
                    claim.attempt_id,
                    outcome,
                    self.clock.now(),
                    hangup_cause=cause,
                    error=error,
                )

        state = await self._write(finish)
        self._event(
            "call.ended",
            {"to": claim.to, "outcome": outcome.value, "contact_state": state, **metadata},
            urls,
        )

    async def _place_run(self, run: ClaimedRun) -> None:
        metadata = {**run.metadata, "schedule_id": run.schedule_id, "run_id": run.run_id}
        answered_at: list[Any] = []
        channel: list[str] = []

        async def answered(channel_id: str) -> None:
            answered_at.append(self.clock.now())
            channel.append(channel_id)

        urls = [run.webhook_url] if run.webhook_url else []
        self._event("call.started", {"to": run.to, **metadata}, urls)
        try:
            outcome, _, error = await self._dial(
                run.to,
                run.route,
                run.caller_id,
                run.ring_timeout,
                run.variables,
                metadata,
                answered,
                urls,
                run.backend,
            )
        except _NotPlaced:

            async def give_back() -> bool:
                async with self.db.session() as session:
                    return await claims.give_back_run(session, run.run_id)

            await self._write(give_back)
            self._not_placed(run.to, metadata, urls, None)
            return

        async def finish() -> None:
            async with self.db.session() as session:
                await claims.finish_run(
                    session,
                    run.run_id,
                    outcome,
                    self.clock.now(),
                    answered_at=answered_at[0] if answered_at else None,
                    channel_id=channel[0] if channel else None,
                    error=error,
                )

        await self._write(finish)
        self._event("call.ended", {"to": run.to, "outcome": outcome.value, **metadata}, urls)

    async def _write(self, write: Callable[[], Awaitable[T]]) -> T | None:
        """An outcome's store write, tried until it is written (or the worker stops)
        while the database is away: again after 0.5, 1, 2, 4 s, then every 8 s. A
        failure that is not the database being away (a bug, a constraint) is tried
        five times, then given up (None): the same again every 8 s would only log.

        It gave up after five tries (7.5 s) whatever the failure: a completed call's
        outcome was never written, its attempt held a place of ``max_concurrent`` for
        as long as this worker lived, and was then recorded lost and, by policy, dialed
        again. Waiting costs little: a 9 s outage took 0.4 s of CPU, rounds every 0.2 s
        included.
        """
        wait, other_failures = 0.5, 0
        while True:
            try:
                return await write()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.exception("worker %s: writing an outcome failed", self.worker_id)
                if not unreachable(exc):
                    other_failures += 1
                    if other_failures >= 5:
                        return None
            await asyncio.sleep(wait)
            wait = min(wait * 2, _WRITE_WAIT_MAX)

    # -- events -----------------------------------------------------------------------

    def _event(self, event: str, data: dict[str, Any], urls: list[str] | None = None) -> None:
        if self.notify is None:
            return
        targets = [*self.app_webhooks, *(urls or [])]
        if targets:
            self.notify(event, data, targets)

    def _not_placed(
        self, to: str, metadata: dict[str, Any], urls: list[str], state: ContactState | None
    ) -> None:
        """``call.ended`` of a claim handed back undialled: outcome ``canceled``, and for
        a contact its state again (``pending``)."""
        data: dict[str, Any] = {"to": to, "outcome": AttemptOutcome.CANCELED.value}
        if state is not None:
            data["contact_state"] = state
        data["error"] = "not placed: the app was stopping; handed back"
        self._event("call.ended", {**data, **metadata}, urls)
        logger.info("worker %s: %s not placed (the app stops): handed back", self.worker_id, to)

    def _campaign_finished(self, finished: FinishedCampaign) -> None:
        logger.info("campaign %s finished: %s", finished.campaign_id, finished.counts)
        urls = [finished.webhook_url] if finished.webhook_url else []
        self._event(
            "campaign.finished",
            {"campaign_id": finished.campaign_id, "counts": finished.counts},
            urls,
        )
