"""One call's kernel: its ARI handle, event inbox and waiters, and all it owns.

A :class:`CallContext` is fed ARI events by the app's registry (synchronously, never
running user code inline) and keeps, in one place, everything the call creates:
internal channels (media, snoop, transfer legs), bridges, peers it is bridged with,
the features' clean-ups (media, recorder, voice), and its tasks, which run in one real
:class:`asyncio.TaskGroup` per call. :meth:`CallContext.teardown` is the one path that
releases them, in reverse order of creation, and runs the hangup callbacks exactly
once, whatever fails on the way.

It is built from plain data (a :class:`~voxtra.ari.models.Channel` and a
:class:`~voxtra.calls.host.CallHost`), so a unit test can make one without an app.
Every wait it offers (events, DTMF) ends at once with
:class:`~voxtra.errors.CallEnded` when the call hangs up, instead of running into its
timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from voxtra.ari.errors import (
    AriConflict,
    AriConnectionError,
    AriError,
    AriNotFound,
    AriUnprocessable,
)
from voxtra.ari.events import (
    AriEvent,
    ChannelDestroyed,
    ChannelDtmfReceived,
    ChannelHangupRequest,
    ChannelStateChange,
    StasisEnd,
)
from voxtra.ari.models import Channel
from voxtra.calls.control import CallControl
from voxtra.calls.host import CallHost
from voxtra.calls.registry import PendingOriginate
from voxtra.calls.state import CallDirection, CallEndReason, CallState
from voxtra.errors import CallEnded, CallNoAnswer, ConfigError, VoxtraError

__all__ = ["CallContext", "expected"]

logger = logging.getLogger(__name__)

E = TypeVar("E", bound=AriEvent)
T = TypeVar("T")
Cleanup = Callable[[], Awaitable[None]]

DTMF_QUEUE = 64
"""Digits kept for a handler that is not reading them; more are counted and dropped."""


def _own_call_ended(shared: CallEnded) -> CallEnded:
    """A CallEnded for one wait, the one its future keeps let go of its traceback.

    Why: a waiter's future keeps one CallEnded for everyone awaiting it, and raising it
    gives it a traceback through the awaiting frame, which holds the future: a cycle.
    It held the whole session of every IVR caller who hung up during a prompt, and of
    every call whose callee or supervisor was still connected when it ended
    (tests/unit/test_call_garbage.py). Each wait raises its own instead.
    """
    shared.__traceback__ = None
    return shared.anew()


async def expected(future: asyncio.Future[T]) -> T:
    """``await future`` for the future of :meth:`CallContext.expect` (cancelled with the
    awaiting task), raising a CallEnded of this wait's own (see ``_own_call_ended``)."""
    try:
        return await future
    except CallEnded as shared:
        raise _own_call_ended(shared) from None


class _Waiter:
    __slots__ = ("future", "predicate")

    def __init__(self, predicate: Callable[[AriEvent], bool]) -> None:
        self.predicate = predicate
        self.future: asyncio.Future[AriEvent] = asyncio.get_running_loop().create_future()


class CallContext:
    """One call: state, event waiters, owned resources, task group, teardown."""

    def __init__(
        self,
        host: CallHost,
        channel: Channel,
        *,
        direction: CallDirection = CallDirection.INBOUND,
        args: tuple[str, ...] = (),
        metadata: dict[str, Any] | None = None,
        called_number: str | None = None,
    ) -> None:
        self.host = host
        self.ari = host.ari
        self.channel = channel
        self.id: str = channel.id
        self.direction = direction
        self.args = args
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.caller_id: str = channel.caller.number if channel.caller else ""
        self.caller_name: str = channel.caller.name if channel.caller else ""
        if called_number is None:
            dialed = args[0] if args else (channel.dialplan.exten if channel.dialplan else "")
            called_number = dialed or ""
        self.called_number: str = called_number
        self.state = CallState.IN_PROGRESS if channel.state == "Up" else CallState.RINGING
        self.transferred = False
        self.handed_off = False
        self.hangup_cause: int | None = None
        self.end_reason: CallEndReason | None = None
        self.created_at = time.time()
        self.answered_at: float | None = (
            time.monotonic() if self.state is CallState.IN_PROGRESS else None
        )
        self.ended_at = 0.0
        self.ended_event = asyncio.Event()
        """Set once the channel left Asterisk or the app (after the hang-up)."""
        self.gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Done as soon as the call is hanging up or gone: wakes every wait at once."""
        self.hanging_up = False
        self._hangup_sent = False
        self.handler_done = asyncio.Event()
        self.channels: set[str] = set()
        """Internal channels (media, snoop, legs) this call owns: hung up at teardown."""
        self.bridges: set[str] = set()
        """Bridges this call created: destroyed at teardown."""
        self.peers: set[CallContext] = set()
        """Calls bridged with this one: hung up when it ends, once their handler is done."""
        self.dtmf_dropped = 0
        self._dtmf: asyncio.Queue[str] = asyncio.Queue(maxsize=DTMF_QUEUE)
        self.redact_dtmf: Callable[[ChannelDtmfReceived], AriEvent] | None = None
        """Set during secure input (voxtra.calls.secure): the digit still goes to the
        digit queue, and event waiters get this function's redacted copy instead."""
        self._waiters: list[_Waiter] = []
        self._cleanups: list[tuple[str, Cleanup]] = []
        self._on_end: list[Callable[[], None]] = []
        self._hangup_callbacks: list[tuple[str, Cleanup]] = []
        self._callbacks_fired = False
        self._group: asyncio.TaskGroup | None = None
        self._group_closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self.running = asyncio.Event()
        """Set once the call's task group is open (:meth:`spawn` works from then on)."""
        self._control: weakref.ref[CallControl] | None = None

    def __repr__(self) -> str:
        return f"<CallContext {self.id} {self.direction} {self.state}>"

    @property
    def control(self) -> CallControl | None:
        """The telephony backend's control of this call (set by the session); None:
        Asterisk, through ARI directly (a context made without a session), or a
        control whose session is gone.

        Held weakly: the session owns its control, and the control refers to this
        context. A strong reference back made every call a reference cycle, which only
        the cyclic collector could free: about 50 objects a call (the session, its
        parts, task group, queues and events) waited in its middle generation, and its
        one run in 10,000 calls stopped the loop for 0.7-1.3 s (docs/performance.md,
        session 8). Without the cycle a call's objects go as soon as the app and the
        user let go of the session."""
        ref = self._control
        return None if ref is None else ref()

    @control.setter
    def control(self, control: CallControl | None) -> None:
        self._control = None if control is None else weakref.ref(control)

    # -- facts -----------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        """True once the call is hanging up or gone."""
        return self.ended_event.is_set() or self.hanging_up

    @property
    def duration(self) -> float:
        """Seconds since the call was answered; 0 before."""
        if self.answered_at is None:
            return 0.0
        end = self.ended_at if self.ended_event.is_set() else time.monotonic()
        return max(0.0, end - self.answered_at)

    def check_alive(self) -> None:
        """Raise CallEnded if the call is hanging up or gone."""
        if self.ended:
            raise CallEnded(self.id)

    # -- events (from the registry, synchronously) -------------------------------------

    def handle_event(self, event: AriEvent) -> None:
        """Update state and wake waiters. Never runs user code, never blocks."""
        if isinstance(event, ChannelStateChange) and event.channel.id == self.id:
            self.channel = event.channel
            if event.channel.state == "Up" and self.state is CallState.RINGING:
                self.mark_answered()
        elif isinstance(event, ChannelDtmfReceived) and event.channel.id == self.id:
            self.digit_received(event.digit)
            if self.redact_dtmf is not None:
                event = self.redact_dtmf(event)
        elif isinstance(event, ChannelHangupRequest) and event.channel.id == self.id:
            self.end_because(CallEndReason.REMOTE)
            self.hanging_up = True
            self._fail_waiters()
        elif isinstance(event, StasisEnd | ChannelDestroyed) and event.channel.id == self.id:
            if isinstance(event, ChannelDestroyed):
                self.hangup_cause = event.cause
            left = isinstance(event, StasisEnd) and self.transferred  # into the dialplan
            self.end_because(CallEndReason.TRANSFERRED if left else CallEndReason.REMOTE)
            self.mark_ended()
            return
        for waiter in list(self._waiters):
            if waiter.future.done():
                continue
            try:
                matched = waiter.predicate(event)
            except Exception as exc:
                # A wait_for_event() predicate that raises (a user's) ends its own wait
                # with the error. Raised out of here, it kept the event from the waits
                # after it (a playback's end: play_and_wait() ran into its timeout) and
                # its own wait timed out instead (tests/unit/test_event_waiters.py).
                if isinstance(exc, StopIteration):  # a future refuses it (TypeError)
                    exc = RuntimeError(f"wait_for_event() predicate raised {exc!r}")
                waiter.future.set_exception(exc)
                self._waiters.remove(waiter)
                continue
            if matched:
                waiter.future.set_result(event)
                self._waiters.remove(waiter)

    def digit_received(self, digit: str) -> None:
        """A DTMF digit from the caller (an ARI event, or another backend's media
        stream): queued for ``next_digit``; beyond 64 unread, counted and dropped."""
        try:
            self._dtmf.put_nowait(digit)
        except asyncio.QueueFull:
            self.dtmf_dropped += 1

    def channel_gone(self, channel_id: str) -> None:
        """An internal channel of this call left: nothing to hang up any more."""
        self.channels.discard(channel_id)

    def mark_answered(self) -> None:
        self.state = CallState.IN_PROGRESS
        if self.answered_at is None:
            self.answered_at = time.monotonic()

    def end_because(self, reason: CallEndReason) -> None:
        """Record why the call ends; the first cause wins."""
        if self.end_reason is None:
            self.end_reason = reason

    def mark_ended(self) -> None:
        """The channel is gone: wake every wait, run the on-end hooks (once)."""
        if self.ended_event.is_set():
            return
        self.ended_at = time.monotonic()
        self.hanging_up = True
        if self.state is not CallState.FAILED:
            self.state = CallState.COMPLETED
        self.ended_event.set()
        self._fail_waiters()
        hooks, self._on_end = self._on_end, []
        for hook in hooks:
            try:
                hook()
            except Exception:
                logger.exception("call %s: an on-end hook failed", self.id)

    def on_end(self, hook: Callable[[], None]) -> None:
        """Run ``hook()`` (synchronous) the moment the call is gone; at once if it is."""
        if self.ended_event.is_set():
            hook()
        else:
            self._on_end.append(hook)

    def _fail_waiters(self) -> None:
        if not self.gone.done():
            self.gone.set_result(None)
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_exception(CallEnded(self.id))
                # Nobody may await it (an ignored Playback): mark it retrieved, or asyncio
                # logs "exception was never retrieved".
                waiter.future.exception()
        self._waiters.clear()

    def expect(
        self, kind: type[E], predicate: Callable[[E], bool] = lambda e: True
    ) -> asyncio.Future[AriEvent]:
        """Register interest in an event *before* the request that causes it."""
        if kind.__name__ in self.host.registry.ignored_kinds:
            raise ConfigError(
                f"{kind.__name__} events are not sent to this app (its ignored_events):"
                " remove the kind from app.ignored_events before start() to wait for it"
            )
        waiter = _Waiter(lambda e: isinstance(e, kind) and predicate(e))
        if self.ended:
            waiter.future.set_exception(CallEnded(self.id))
            waiter.future.exception()
        else:
            self._waiters.append(waiter)
        return waiter.future

    async def wait(self, future: asyncio.Future[AriEvent], timeout: float | None) -> AriEvent:
        """Wait for an expected event. The shared future survives a timeout or a
        cancellation of this wait (a Playback may be awaited again later)."""
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except CallEnded as shared:
            raise _own_call_ended(shared) from None

    def expect_leaving(self, channel_id: str) -> asyncio.Future[AriEvent]:
        """:meth:`expect` the channel ``channel_id`` hanging up or leaving the app (its
        ``ChannelDestroyed`` or ``StasisEnd``): a leg, a callee, a supervisor."""
        return self.expect(AriEvent, functools.partial(_leaves, channel_id=channel_id))

    def forget(self, future: asyncio.Future[AriEvent]) -> None:
        """Stop expecting the event of ``future``."""
        self._waiters = [w for w in self._waiters if w.future is not future]
        if not future.done():
            future.cancel()

    async def wait_ended(self, timeout: float | None = None) -> None:
        # asyncio.timeout rather than wait_for: wait_for ran the wait in a task of its
        # own, made and scheduled for each call's end (TimeoutError either way).
        if self.ended_event.is_set():
            return
        async with asyncio.timeout(timeout):
            await self.ended_event.wait()

    # -- ARI requests ----------------------------------------------------------------

    async def request(self, coro: Awaitable[T]) -> T:
        """Run an ARI request for this call; a vanished channel becomes CallEnded.

        Asterisk answers 404 for other things than a channel that is gone: a bridge
        or a recording that is, a variable the channel does not have, a channel
        without RTP statistics. Those are raised as they are (AriNotFound) while the
        call lives; they used to end the handler with CallEnded on a live call.
        A 409 "not in Stasis application" is the call's channel gone on in the
        dialplan: CallEnded too (it reached the handler as AriConflict while the
        StasisEnd was on its way, or had just ended the call).

        A request that cannot reach Asterisk waits for the events to reconnect and
        reconcile (bounded: the app's ``outage_wait``): if the call turned out gone,
        CallEnded; otherwise the connection error. It is not sent again (it may have
        been done).
        """
        since = self.host.events_generation()
        try:
            return await coro
        except (AriNotFound, AriConflict, AriUnprocessable) as exc:
            if self.ended or _channel_not_found(exc) or _channel_left_app(exc):
                raise CallEnded(self.id, f"call {self.id} has ended ({exc.message})") from exc
            raise
        except AriConnectionError as exc:
            if not self.ended:
                await self.host.wait_reconciled(since, self.ended_event)
            if self.ended:
                raise CallEnded(self.id, f"call {self.id} ended while ARI was down") from exc
            raise

    async def hangup(self, reason: str = "normal") -> None:
        """Hang up. Idempotent: hanging up an ended call does nothing, nor does hanging
        up again a call whose hangup Asterisk already took."""
        # A handler that hangs up is followed by the app's own hangup after the handler;
        # before the ChannelDestroyed arrives that sent a second DELETE (0.2 of a
        # request per call in bench/call_setup.py, answered 404 or 204 for nothing).
        if self.ended_event.is_set() or self._hangup_sent:
            return
        self.end_because(CallEndReason.HANGUP)
        self.hanging_up = True
        self._fail_waiters()
        if self._control is None:
            await self.hangup_channel(reason)
        else:
            control = self._control()
            # A control gone with its session: the app let go of the session only once
            # it had run the call to its end (hung up, or handed off), so there is
            # nothing left to send, and nothing to send it with on another backend.
            if control is not None:
                await control.hangup(reason)
        self._hangup_sent = True

    async def hangup_channel(self, reason: str = "normal") -> None:
        """Asterisk's hang-up of the call's channel (sent again after an outage); one
        already gone is not an error."""
        with contextlib.suppress(AriNotFound, AriUnprocessable):
            await self.host.retry_after_outage(
                functools.partial(self.ari.channels.hangup, self.id, reason=reason)
            )

    # -- DTMF ------------------------------------------------------------------------

    async def next_digit(self, timeout: float | None = None) -> str | None:
        """The next DTMF digit, or None after ``timeout``; CallEnded on hangup."""
        self.check_alive()
        if not self._dtmf.empty():
            return self._dtmf.get_nowait()
        getter: asyncio.Future[str] = asyncio.ensure_future(self._dtmf.get())
        ended: asyncio.Future[None] = asyncio.ensure_future(asyncio.shield(self.gone))
        waits: set[asyncio.Future[Any]] = {getter, ended}
        try:
            done, _ = await asyncio.wait(
                waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for fut in (getter, ended):
                if not fut.done():
                    fut.cancel()
        if getter in done and not getter.cancelled():
            return getter.result()
        if ended in done:
            raise CallEnded(self.id)
        return None

    def clear_digits(self) -> None:
        """Forget digits pressed before now."""
        while not self._dtmf.empty():
            self._dtmf.get_nowait()

    # -- what the call owns ------------------------------------------------------------

    def expect_channel(self, channel_id: str) -> asyncio.Future[Channel]:
        """Own the internal channel ``channel_id`` (hung up at teardown) and get a future
        for its StasisStart. Call it before the request that creates the channel."""
        self.channels.add(channel_id)
        return self.host.registry.expect_channel(channel_id, self)

    async def wait_channel(
        self, channel_id: str, future: asyncio.Future[Channel], timeout: float = 10.0
    ) -> Channel:
        """Until the internal channel's StasisStart (CallEnded if it ends first)."""
        try:
            return await asyncio.wait_for(future, timeout)
        except CallEnded as shared:
            raise _own_call_ended(shared) from None
        finally:
            self.host.registry.stop_waiting(channel_id)

    async def release_channel(self, channel_id: str) -> None:
        """Hang up an internal channel of this call (sent again after an outage) and
        forget it; one already gone is not an error. One whose hang-up fails (refused,
        Asterisk unreachable, the request cancelled) is kept: it may still be up."""
        # Forgotten only once gone: forgotten whatever the answer, a refused hang-up left
        # the channel up in Asterisk and the teardown never sent it again (nobody owned
        # it any more: tests/unit/test_call_teardown.py). Kept, the teardown tries it
        # again, and its ChannelDestroyed, whenever it comes, forgets it.
        with contextlib.suppress(AriNotFound):
            await self.host.retry_after_outage(
                functools.partial(self.ari.channels.hangup, channel_id)
            )
        self.host.registry.forget_channel(channel_id)
        self.channels.discard(channel_id)

    async def release_bridge(self, bridge_id: str) -> None:
        """Destroy a bridge of this call (sent again after an outage) and forget it;
        one already gone is not an error. One whose destroy fails (refused, Asterisk
        unreachable, the request cancelled) is kept: it may still be there."""
        # As release_channel: forgotten whatever the answer, a refused destroy left the
        # bridge in Asterisk and the teardown never sent it again
        # (tests/unit/test_call_teardown.py). Kept, the teardown tries it again.
        with contextlib.suppress(AriNotFound):
            await self.host.retry_after_outage(
                functools.partial(self.ari.bridges.destroy, bridge_id)
            )
        self.host.registry.forget_bridge(bridge_id)
        self.bridges.discard(bridge_id)

    async def create_bridge(self, kind: str) -> str:
        """A mixing bridge this call owns (destroyed at teardown)."""
        # proxy_media for the media bridge: without it Asterisk switches the caller and
        # the ExternalMedia channel to a native RTP bridge once both send, and the app's
        # inbound audio stopped within a second (measured: say while listening).
        bridge_type = "mixing,proxy_media" if kind == "media" else "mixing"
        bridge = await self.ari.bridges.create(bridge_type, bridge_id=self.host.internal_id(kind))
        self.bridges.add(bridge.id)
        self.host.registry.own_bridge(bridge.id, self)
        return bridge.id

    def seen_leaving(self, channel_id: str, left: asyncio.Future[AriEvent]) -> bool:
        """Whether the internal channel ``channel_id`` was seen hanging up or leaving the
        app: ``left`` (its :meth:`expect_leaving`) has the event, or the call no longer
        owns it."""
        if channel_id not in self.channels:
            return True
        return left.done() and not left.cancelled() and left.exception() is None

    async def has_left(self, channel_id: str, left: asyncio.Future[AriEvent]) -> bool:
        """As :meth:`seen_leaving`, after a request about the channel was refused: also
        if Asterisk no longer knows it (the refusal may come before the event)."""
        if self.seen_leaving(channel_id, left):
            return True
        try:
            # Not self.request: a 404 here is the channel's, not the call's end.
            await self.ari.channels.get(channel_id)
        except AriNotFound:
            return True
        except AriError:
            return False  # cannot tell: the refusal itself says what went wrong
        return self.seen_leaving(channel_id, left)

    def share_bridge(self, bridge_id: str, other: CallContext) -> None:
        """``other`` joins a bridge of this call: both see its events and are peers."""
        self.host.registry.own_bridge(bridge_id, other)
        self.peers.add(other)
        other.peers.add(self)

    async def dial_leg(self, endpoint: str, *, timeout: int, caller_id: str | None) -> str:
        """Dial ``endpoint`` into the app as an internal leg this call owns; its id once
        answered. Nothing is left behind if it is not: :class:`~voxtra.errors.CallBusy`,
        :class:`~voxtra.errors.CallNoAnswer` or :class:`~voxtra.errors.CallFailed` say why."""
        leg_id = self.host.internal_id("leg")
        started = self.expect_channel(leg_id)
        # Watched as an originate too: the app tells busy, no answer and failed apart by
        # the leg's Dial status and hangup cause, as for its own originate().
        outcome = PendingOriginate(endpoint)
        self.host.registry.originates[leg_id] = outcome
        try:
            await self.ari.channels.originate(
                endpoint,
                app=self.host.app_name,
                app_args="voxtra-internal",
                channel_id=leg_id,
                caller_id=caller_id,
                timeout=timeout,
                originator=self.id,
            )
            await self.wait_channel(leg_id, started, timeout=timeout + 5)
        except BaseException as exc:
            with contextlib.suppress(AriError):
                await self.release_channel(leg_id)
            if isinstance(exc, CallEnded) and outcome.future.done():
                raise outcome.future.exception() or exc from None
            if isinstance(exc, TimeoutError):
                raise CallNoAnswer(endpoint, None, "", f"not answered within {timeout} s") from None
            raise
        finally:
            self.host.registry.originates.pop(leg_id, None)
            # Its future keeps the busy or unanswered leg's exception raised above, whose
            # traceback holds this frame: let go of it, or they are a cycle.
            del outcome
        return leg_id

    def add_cleanup(self, what: str, cleanup: Cleanup) -> None:
        """Run ``await cleanup()`` at teardown; clean-ups run last-added first."""
        self._cleanups.append((what, cleanup))

    @property
    def hangup_callbacks(self) -> list[str]:
        """The names of the hangup callbacks still to run, in the order they will run."""
        return [name for name, _ in self._hangup_callbacks]

    def add_hangup_callback(self, name: str, callback: Cleanup) -> None:
        """Run ``await callback()`` once when the call ended, after its teardown."""
        self._hangup_callbacks.append((name, callback))

    # -- tasks -----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def task_group(self) -> Any:
        """Open the call's task group for the body; on exit every task still in it is
        cancelled and awaited (so the group never waits on a helper running forever)."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            self.running.set()
            try:
                yield group
            finally:
                self._group_closed = True
                for task in list(self._tasks):
                    task.cancel()

    def spawn(
        self, coro: Coroutine[Any, Any, T], *, name: str | None = None
    ) -> asyncio.Task[T | None]:
        """Run ``coro`` in the call's task group: cancelled when the call ends.

        An exception in it is logged and ends that task only (its result is then
        None): a failing helper must not cancel the call's other tasks, which a
        TaskGroup does with a child that raises."""
        if self._group is None or self._group_closed:
            coro.close()
            if self._group_closed:
                raise CallEnded(self.id, f"call {self.id} has ended: no new tasks")
            raise VoxtraError(f"call {self.id} is not running yet: no tasks can be spawned")
        task = self._group.create_task(self._guard(coro), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _guard(self, coro: Coroutine[Any, Any, T]) -> T | None:
        try:
            return await coro
        except Exception:
            logger.exception("call %s: a task of the call failed", self.id)
            return None

    # -- teardown --------------------------------------------------------------------

    async def teardown(self) -> None:
        """Release everything the call owns, in reverse order of creation; then run the
        hangup callbacks, exactly once.

        Every step runs on its own: one that raises (a peer's hangup refused by ARI, a
        media transport failing to close) is logged and the next still runs.
        """
        try:
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            while self._cleanups:
                what, cleanup = self._cleanups.pop()
                await self._step(what, cleanup)
            for channel_id in list(self.channels):
                await self._step(f"channel {channel_id}", self._releaser(channel_id))
            for bridge_id in list(self.bridges):
                await self._step(f"bridge {bridge_id}", self._destroyer(bridge_id))
            await self._step("peers", self._release_peers)
        finally:
            await self.fire_hangup_callbacks()

    def release_now(self) -> bool:
        """Finish the teardown at once if the call holds nothing to release (no task,
        cleanup, channel, bridge, peer or hangup callback): True then, and
        :meth:`teardown` has nothing left to do; False: await :meth:`teardown`."""
        if (
            self._tasks
            or self._cleanups
            or self.channels
            or self.bridges
            or self.peers
            or (self._hangup_callbacks and not self._callbacks_fired)
        ):
            return False
        self._callbacks_fired = True
        return True

    def _releaser(self, channel_id: str) -> Cleanup:
        return functools.partial(self.release_channel, channel_id)

    def _destroyer(self, bridge_id: str) -> Cleanup:
        return functools.partial(self.release_bridge, bridge_id)

    async def _step(self, what: str, step: Cleanup) -> None:
        try:
            await step()
        except AriError as exc:
            logger.warning("call %s: teardown of %s failed: %s", self.id, what, exc)
        except Exception:
            logger.exception("call %s: teardown step %r failed; going on", self.id, what)

    async def _release_peers(self) -> None:
        for peer in list(self.peers):
            peer.peers.discard(self)
            if peer.ended:
                continue
            if peer.handler_done.is_set():
                await self._step(f"peer {peer.id}", peer.hangup)
            elif not peer.peers:
                # Its handler still runs (a CRM write after the bridge): handed to nobody
                # now, the call is hung up when the handler returns, as any call. Left
                # handed off, the app waited for its end without a limit, alone in Stasis.
                peer.handed_off = False
        self.peers.clear()

    async def fire_hangup_callbacks(self) -> None:
        if self._callbacks_fired:
            return
        self._callbacks_fired = True
        # Let go of them as they run: a callback holds the session (``on_hangup``'s
        # closure), which holds this context: kept, a reference cycle.
        callbacks, self._hangup_callbacks = self._hangup_callbacks, []
        for name, callback in callbacks:
            try:
                await callback()
            except Exception:
                logger.exception("on_hangup callback %s failed for call %s", name, self.id)


def _leaves(event: AriEvent, channel_id: str) -> bool:
    return isinstance(event, StasisEnd | ChannelDestroyed) and event.channel_id == channel_id


def _channel_left_app(exc: AriError) -> bool:
    """A 409 saying the channel is not in the Stasis application: the call's channel
    left it (its StasisEnd on the way). Asterisk 22 answers it to every channel command
    (hold, mute, DTMF, play, answer, continue) once the channel went on in the dialplan
    (a continue from outside the app); bridge commands answer 422 instead (measured on
    the sandbox)."""
    # "Channel ...", not any "not in Stasis": a bridge that is not (or no longer) the
    # app's gets 409 "Bridge not in Stasis application", the call alive.
    return isinstance(exc, AriConflict) and "channel not in stasis" in exc.message.lower()


def _channel_not_found(exc: AriError) -> bool:
    """A 404 saying the channel is not there ("Channel not found", "Provided channel
    was not found": Asterisk 22's two wordings)."""
    if not isinstance(exc, AriNotFound):
        return False
    message = exc.message.lower()
    return "channel" in message and "not found" in message
