"""``CallService``: places the API's calls through the app's backends, and acts on
live ones.

:meth:`CallService.place` stores the call as ``queued`` and returns at once; a task
dials it through the call's backend (:mod:`voxtra.platform.backends`: Asterisk's
``app.originate`` or Twilio's ``TwilioBackend.originate``, with the route's handler)
and writes ``dialing``, then the outcome: answered calls are marked ``in_progress`` by
the recorder's ``on_call_start`` hook and finished by its ``on_call_end``; refused
ones end here as ``busy``, ``no_answer`` or ``failed`` (with Asterisk's hangup cause,
or Twilio's status). Part 2 (schedules, campaigns) places its calls through the same
backends.

The backends: Asterisk unless ``twilio.without_asterisk`` is set, and Twilio once
:meth:`CallService.add_backend` is given one (``voxtra serve`` does when Twilio is
configured). A call names its backend (``backend``); without one it goes through
Asterisk when the app has it, else through Twilio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from voxtra.app import VoxtraApp
from voxtra.calls.session import CallSession
from voxtra.config import PlatformSettings
from voxtra.errors import (
    CallBusy,
    CallNoAnswer,
    InvalidTransferTarget,
    OriginateError,
    VoxtraError,
)
from voxtra.platform.backends import (
    BACKENDS,
    AsteriskCallBackend,
    CallBackend,
    OriginateRequest,
)
from voxtra.platform.metrics import PlatformMetrics
from voxtra.platform.recorder import PLATFORM_CALL_ID
from voxtra.platform.schemas import CallRequest
from voxtra.platform.store.base import new_id, utcnow
from voxtra.platform.store.calls import FINAL_STATUSES, CallRecord, CallStatus
from voxtra.platform.store.repository import CallStore
from voxtra.platform.targets import InvalidTarget, check_webhook_url

__all__ = ["CallNotLive", "CallService", "UnknownRoute"]

logger = logging.getLogger(__name__)

Handler = Callable[[CallSession], Awaitable[None]]
_FINAL = [s.value for s in FINAL_STATUSES]


class UnknownRoute(InvalidTarget):
    """``route`` names no registered route (and the app has no default handler)."""


class CallNotLive(VoxtraError):
    """The call has ended: it cannot be hung up or transferred (the API's 409)."""


class CallService:
    """Places and controls calls for the API (and part 2's schedules and campaigns)."""

    def __init__(
        self,
        app: VoxtraApp,
        store: CallStore,
        settings: PlatformSettings,
        metrics: PlatformMetrics,
    ) -> None:
        self.app = app
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.dialing: dict[str, tuple[str | None, asyncio.Task[None]]] = {}
        """Calls being dialled: platform id -> (channel id if known, dialling task)."""
        self._writes: set[asyncio.Task[Any]] = set()
        """Status writes made from event callbacks (kept referenced until done)."""
        self.backends: dict[str, CallBackend] = {}
        """The backends calls go through, by name (see the module docstring)."""
        if not app.settings.twilio.without_asterisk:
            self.add_backend(AsteriskCallBackend(app, settings))

    def add_backend(self, backend: CallBackend) -> None:
        """Place calls through ``backend`` too (``backend.name``: ``twilio``...)."""
        self.backends[backend.name] = backend

    @property
    def default_backend(self) -> str | None:
        """Asterisk when the app has it, else the first other backend (Twilio)."""
        if "asterisk" in self.backends:
            return "asterisk"
        return next(iter(self.backends), None)

    def backend_for(self, name: str | None, field: str = "backend") -> CallBackend:
        """The backend named ``name`` (None: the default); :class:`InvalidTarget`
        naming ``field`` if it is unknown or not configured here."""
        chosen = name or self.default_backend
        found = self.backends.get(chosen) if chosen else None
        if found is None:
            configured = ", ".join(self.backends) or "none"
            if chosen is not None and chosen not in BACKENDS:
                message = f"unknown backend {chosen!r} (known: {', '.join(BACKENDS)})"
            else:
                message = f"backend {chosen!r} is not configured here (configured: {configured})"
            raise InvalidTarget(field, message)
        return found

    def backend_of(self, record: CallRecord) -> CallBackend | None:
        """The backend a stored call is on (a row from before the column: Asterisk)."""
        return self.backends.get(record.backend or "asterisk")

    def handler_for(self, route: str | None) -> Handler:
        """The handler of the route named ``route`` (None: the app's default handler)."""
        if route is None:
            if self.app.router.default is None:
                raise UnknownRoute("route", "required: the app has no default handler")
            return self.app.router.default
        for candidate in self.app.router.routes:
            if candidate.name == route:
                return candidate.handler
        names = ", ".join(sorted({r.name for r in self.app.router.routes})) or "none"
        raise UnknownRoute("route", f"no route named {route!r} (registered: {names})")

    def check(self, request: CallRequest) -> tuple[CallBackend, str, Handler]:
        """The backend, what it dials and the handler; :class:`InvalidTarget` naming the
        field (``backend``, ``to``, ``from``, ``route``)."""
        backend = self.backend_for(request.backend)
        target = backend.target(request.to)
        backend.caller_id(request.from_)
        hook = request.metadata.get("webhook_url")
        if isinstance(hook, str):  # the call's own receiver (anything else is not used)
            check_webhook_url(hook, self.settings.webhook_private_hosts, "metadata.webhook_url")
        return backend, target, self.handler_for(request.route)

    async def place(
        self,
        request: CallRequest,
        *,
        idempotency: tuple[str, str] | None = None,
        campaign_id: str | None = None,
        schedule_id: str | None = None,
        attempt: int = 1,
        call_id: str | None = None,
    ) -> tuple[CallRecord, bool]:
        """Store the call (``queued``) and start dialling it; ``(record, created)``.

        ``idempotency``: ``(token name, key)``; a key already used returns the call it
        made, with ``created`` False, and nothing is dialled again. Raises
        :class:`InvalidTarget` (``to``, ``route``) before anything is stored.
        """
        backend, endpoint, handler = self.check(request)
        record = CallRecord(
            id=call_id or new_id("call"),
            direction="outbound",
            status=CallStatus.QUEUED.value,
            route=request.route,
            to=request.to,
            from_=backend.caller_id(request.from_),
            endpoint=endpoint,
            backend=backend.name,
            variables=request.data(),
            meta=request.metadata,
            record=request.record,
            transcribe=request.transcribe,
            ring_timeout=request.ring_timeout,
            max_duration=request.max_duration,
            campaign_id=campaign_id,
            schedule_id=schedule_id,
            attempt=attempt,
            created_at=utcnow(),
        )
        if idempotency is not None:
            token_name, key = idempotency
            body = request.model_dump(mode="json", by_alias=True)
            if body.get("backend") is None:
                # A body naming no backend hashes as before the field existed: a key used
                # before the upgrade, sent again with its body, still finds its call.
                del body["backend"]
            record, created = await self.store.create_idempotent(
                record, token_name=token_name, key=key, request=body
            )
            if not created:
                return record, False
        else:
            await self.store.create(record)
        channel_id = backend.new_channel_id()
        task = asyncio.create_task(
            self._dial(record, request, backend, endpoint, handler, channel_id),
            name=f"voxtra-platform-dial-{record.id}",
        )
        self.dialing[record.id] = (channel_id, task)
        task.add_done_callback(lambda _: self.dialing.pop(record.id, None))
        return record, True

    async def _dial(
        self,
        record: CallRecord,
        request: CallRequest,
        backend: CallBackend,
        endpoint: str,
        handler: Handler,
        channel_id: str | None,
    ) -> None:
        await self.store.update(
            record.id,
            status=CallStatus.DIALING.value,
            started_at=utcnow(),
            channel_id=channel_id,
            instance_id=self.app.instance_id,
            event=("status", {"status": CallStatus.DIALING.value}),
            only_if_not=_FINAL,
        )
        metadata: dict[str, Any] = {
            **request.metadata,
            "customer_data": request.data(),
            PLATFORM_CALL_ID: record.id,
            "platform_transcribe": request.transcribe,
        }
        try:
            await backend.originate(
                OriginateRequest(
                    endpoint,
                    caller_id=record.from_,
                    timeout=request.ring_timeout,
                    handler=self._wrap(handler, request),
                    metadata=metadata,
                    channel_id=channel_id,
                    on_ringing=lambda: self._mark_ringing(record.id),
                )
            )
        except asyncio.CancelledError:
            try:
                await backend.cancel(channel_id)
            finally:
                await self._end(record.id, CallStatus.CANCELED, None, "canceled while dialling")
            raise
        except OriginateError as exc:
            status = (
                CallStatus.BUSY
                if isinstance(exc, CallBusy)
                else CallStatus.NO_ANSWER
                if isinstance(exc, CallNoAnswer)
                else CallStatus.FAILED
            )
            await self._end(record.id, status, exc.cause, str(exc), exc.cause_txt or None)
        except VoxtraError as exc:
            await self._end(record.id, CallStatus.FAILED, None, str(exc))
        except Exception as exc:
            # Anything else still ends the call (as the worker's attempts): left alone,
            # it escaped this task and the call stayed "dialing" for ever.
            logger.exception("platform call %s: dialling failed", record.id)
            await self._end(record.id, CallStatus.FAILED, None, type(exc).__name__)

    def _mark_ringing(self, call_id: str) -> None:
        """The far end rings: ``ringing``, unless the call already moved on (the answer's
        ``in_progress`` may be written first: the two writes race)."""
        task = asyncio.create_task(
            self.store.update(
                call_id,
                status=CallStatus.RINGING.value,
                event=("status", {"status": CallStatus.RINGING.value}),
                only_if_not=[*_FINAL, CallStatus.IN_PROGRESS.value],
            ),
            name=f"voxtra-platform-ringing-{call_id}",
        )
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _end(
        self,
        call_id: str,
        status: CallStatus,
        cause: int | None,
        error: str,
        cause_text: str | None = None,
    ) -> None:
        ended = await self.store.update(
            call_id,
            status=status.value,
            ended_at=utcnow(),
            duration=0.0,
            hangup_cause=cause,
            hangup_cause_text=cause_text,
            error=error,
            event=("status", {"status": status.value, "hangup_cause": cause}),
            only_if_not=_FINAL,
        )
        if ended:  # counted once, however many paths end it (see _cancel)
            self.metrics.calls.labels(status.value, "outbound").inc()

    def _wrap(self, handler: Handler, request: CallRequest) -> Handler:
        """The route's handler, with what the request asked for around it."""
        if not request.record and request.max_duration is None:
            return handler

        async def run(call: CallSession) -> None:
            if request.max_duration is not None:
                call.spawn(_hang_up_after(call, request.max_duration), name=f"limit-{call.id}")
            if request.record:
                try:
                    await call.record_start()
                except VoxtraError as exc:
                    logger.warning("call %s: cannot start the recording: %s", call.id, exc)
            await handler(call)

        return run

    # -- live calls ---------------------------------------------------------------------

    async def hangup(self, record: CallRecord) -> None:
        """Hang up a live call, or cancel one still queued or dialling."""
        if record.status in _FINAL:
            raise CallNotLive(f"call {record.id} has ended ({record.status})")
        dialing = self.dialing.get(record.id)
        session = self.app.get_session(record.channel_id) if record.channel_id else None
        if session is not None and not session.ended:
            await session.hangup()
            return
        if dialing is not None:
            await self._cancel(record.id, dialing[1])
            return
        if record.channel_id and record.instance_id not in (None, self.app.instance_id):
            # Live on another worker: its backend reaches it (the same Asterisk, the same
            # Twilio account); that worker sees the hang-up and records the call's end.
            backend = self.backend_of(record)
            if backend is None or not await backend.hangup_elsewhere(record.channel_id):
                raise CallNotLive(
                    f"call {record.id} is not live on this worker's {record.backend or 'asterisk'}"
                    f" (ended, or its worker {record.instance_id} serves another)"
                )
            return
        raise CallNotLive(f"call {record.id} is not live in this process")

    async def transfer(self, record: CallRecord, target: str) -> str:
        """Blind-transfer a live call to ``target`` (validated for the call's backend);
        the target dialled."""
        backend = self.backend_of(record)
        if backend is None:
            raise CallNotLive(f"call {record.id} is on {record.backend}, not served here")
        checked = backend.transfer_target(target)
        if record.status in _FINAL:
            raise CallNotLive(f"call {record.id} has ended ({record.status})")
        session = self.app.get_session(record.channel_id) if record.channel_id else None
        if session is None or session.ended:
            raise CallNotLive(f"call {record.id} is not answered and live in this process")
        try:
            await session.transfer_to(checked)
        except InvalidTransferTarget as exc:
            # Past the platform's own checks, a place the dialplan lacks (asked of
            # Asterisk, which would take the transfer and hang the caller up): the
            # caller is still on, the request the client's to correct.
            raise InvalidTarget("target", exc.reason) from exc
        await self.store.add_event(record.id, "transfer", {"target": checked})
        return checked

    async def _cancel(self, call_id: str, task: asyncio.Task[None]) -> None:
        """Cancel a call's dialling task; the call ends ``canceled`` unless it got further.

        A task cancelled before its first step never enters :meth:`_dial`, whose
        handler ends the call: a call hung up (or the platform stopped) right after
        ``POST /v1/calls`` stayed ``queued`` for ever, its event stream open."""
        task.cancel()
        # Waited for, not awaited: a cancel of whoever called this must reach it, not be
        # taken for the task's own cancellation.
        await asyncio.wait({task})
        if task.cancelled():
            await self._end(call_id, CallStatus.CANCELED, None, "canceled while dialling")

    async def stop(self) -> None:
        """Cancel the dialling still going on (their calls end ``canceled``)."""
        dialing = [(call_id, task) for call_id, (_, task) in self.dialing.items()]
        await asyncio.gather(
            *(self._cancel(call_id, task) for call_id, task in dialing), return_exceptions=True
        )


async def _hang_up_after(call: CallSession, seconds: float) -> None:
    await asyncio.sleep(seconds)
    if not call.ended:
        logger.info("call %s reached its max_duration (%.0f s): hanging up", call.id, seconds)
        with contextlib.suppress(VoxtraError):
            await call.hangup()
