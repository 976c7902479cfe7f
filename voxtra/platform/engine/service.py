"""The engine inside ``voxtra serve``: one :class:`SchedulingWorker` and one webhook dispatcher per
platform, started and stopped with it (registered by the campaign and schedule routers'
modules).

Webhooks go to the app's URL (``platform.webhook_url``) for every call, inbound or
outbound, through the app's public hooks; the worker sends its calls' events (busy and
unanswered ones included, which never reach those hooks) to the app's URL and to the
campaign's or schedule's own.
"""

from __future__ import annotations

import logging
import uuid
import weakref
from typing import Any

from prometheus_client import Counter

from voxtra.calls.session import CallSession
from voxtra.platform.engine.clock import EngineClock
from voxtra.platform.engine.worker import SchedulingWorker
from voxtra.platform.platform import Platform
from voxtra.platform.recorder import PLATFORM_CALL_ID
from voxtra.platform.scheduling import AttemptOutcome
from voxtra.platform.store.base import new_id, utcnow
from voxtra.platform.store.calls import FINAL_STATUSES, CallRecord, CallStatus
from voxtra.platform.targets import InvalidTarget
from voxtra.platform.webhooks import WebhookDispatcher
from voxtra.recording.metadata import RecordingMetadata

__all__ = ["dispatcher_of", "install", "setup", "worker_of"]

logger = logging.getLogger(__name__)

_WORKERS: weakref.WeakKeyDictionary[Platform, SchedulingWorker] = weakref.WeakKeyDictionary()
_DISPATCHERS: weakref.WeakKeyDictionary[Platform, WebhookDispatcher] = weakref.WeakKeyDictionary()


def setup(platform: Platform, clock: EngineClock | None = None) -> SchedulingWorker:
    """Give ``platform`` its worker and webhooks (once), started after the store."""
    found = _WORKERS.get(platform)
    if found is not None:
        return found
    settings = platform.settings
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    deliveries = Counter(
        "voxtra_webhook_deliveries",
        "Webhook deliveries by event and result (delivered, retried, failed, dropped)",
        ["event", "result"],
        registry=platform.metrics.registry,
    )
    app_urls = (settings.webhook_url,) if settings.webhook_url else ()
    webhooks = WebhookDispatcher(
        secret,
        observe=lambda event, result: deliveries.labels(event, result).inc(),
        # Clients' URLs (a call's or campaign's own) are held to the API's address check
        # at connect time too, so a name rebound to a private address reaches nothing;
        # the operator's own URL is trusted as configured.
        private_hosts=settings.webhook_private_hosts,
        trusted=app_urls,
    )
    worker = SchedulingWorker(
        platform.app,
        platform.db,
        routes=platform.calls.handler_for,
        backends=platform.calls.backend_for,
        served=lambda: tuple(platform.calls.backends),
        clock=clock,
        worker_id=f"{platform.app.instance_id[:40]}-{uuid.uuid4().hex[:12]}",
        poll_interval=settings.worker_poll_interval,
        lease=settings.worker_lease,
        notify=webhooks.notify,
        app_webhooks=app_urls,
        calls=StoreCallLog(platform),
        # Not while the app stops: its originate() refuses, and the round's claims would
        # only be handed back (voxtra serve stops the app before the worker).
        ready=lambda: platform.app.accepting and platform.app.ari_connected,
    )
    _WORKERS[platform] = worker
    _DISPATCHERS[platform] = webhooks
    _call_webhooks(platform, webhooks, list(app_urls))

    async def start() -> None:
        if secret is None and app_urls:
            logger.warning("platform: webhook_secret is not set: webhooks go out unsigned")
        await webhooks.start()
        await worker.start()

    async def stop() -> None:
        await worker.stop()
        await webhooks.stop()

    platform.on_start(start)
    platform.on_stop(stop)
    return worker


class StoreCallLog:
    """The worker's calls in the platform's call store: a ``dialing`` record made before
    the dial (with the campaign, schedule and attempt), its id given to the call so the
    platform's recorder follows an answered one; busy, unanswered and failed ones are
    ended here, since they never reach the app's hooks."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    async def dialing(
        self,
        to: str,
        route: str | None,
        caller_id: str | None,
        metadata: dict[str, Any],
        backend: str | None = None,
    ) -> dict[str, Any]:
        now = utcnow()
        try:
            found = self.platform.calls.backend_for(backend)
            name: str | None = found.name
            endpoint: str | None = found.target(to)
        except InvalidTarget:  # recorded, then failed by the dial (no such backend here)
            name, endpoint = backend, None
        record = CallRecord(
            id=new_id("call"),
            direction="outbound",
            status=CallStatus.DIALING.value,
            route=route,
            to=to,
            from_=caller_id,
            endpoint=endpoint,
            backend=name,
            meta={k: v for k, v in metadata.items() if isinstance(v, str | int | float)},
            campaign_id=metadata.get("campaign_id"),
            schedule_id=metadata.get("schedule_id"),
            attempt=int(metadata.get("attempt", 1)),
            created_at=now,
            started_at=now,
            instance_id=self.platform.app.instance_id,
        )
        await self.platform.store.create(record)
        return {PLATFORM_CALL_ID: record.id}

    async def refused(
        self, extra: dict[str, Any], outcome: AttemptOutcome, cause: int | None, error: str | None
    ) -> None:
        status = {
            AttemptOutcome.BUSY: CallStatus.BUSY,
            AttemptOutcome.NO_ANSWER: CallStatus.NO_ANSWER,
            AttemptOutcome.CANCELED: CallStatus.CANCELED,
        }.get(outcome, CallStatus.FAILED)
        self.platform.metrics.calls.labels(status.value, "outbound").inc()
        await self.platform.store.update(
            extra[PLATFORM_CALL_ID],
            status=status.value,
            ended_at=utcnow(),
            duration=0.0,
            hangup_cause=cause,
            error=error,
            event=("status", {"status": status.value, "hangup_cause": cause}),
            only_if_not=[s.value for s in FINAL_STATUSES],
        )


def _call_webhooks(platform: Platform, webhooks: WebhookDispatcher, urls: list[str]) -> None:
    """call.started / call.ended / transcript.ready / recording.ready for the app's calls.

    A call the engine placed (its metadata names a campaign or schedule) is left to the
    engine, which reports it from the dial on, busy and unanswered ones too. A call whose
    metadata carries a ``webhook_url`` (its own receiver) is reported there as well.
    """
    app = platform.app
    ids: dict[str, str] = {}

    def engine_call(call: CallSession) -> bool:
        return "campaign_id" in call.metadata or "schedule_id" in call.metadata

    def targets(call: CallSession) -> list[str]:
        own = call.metadata.get("webhook_url")
        return [*urls, own] if isinstance(own, str) and own else urls

    def data(call: CallSession) -> dict[str, Any]:
        return {
            "call_id": ids.get(call.id, call.id),
            "channel_id": call.id,
            "direction": call.direction.value,
            "caller": call.caller_id or None,
            "called_number": call.called_number or None,
        }

    @app.on_call_start
    async def started(call: CallSession) -> None:
        track = platform.recorder.tracks.get(call.id)
        if track is not None:
            ids[call.id] = track.call_id
        if not engine_call(call):
            webhooks.notify("call.started", data(call), targets(call))
            if call.context.answered_at is not None:
                webhooks.notify("call.answered", data(call), targets(call))

    @app.on_call_end
    async def ended(call: CallSession) -> None:
        body = data(call)
        ids.pop(call.id, None)
        if engine_call(call):
            return
        webhooks.notify(
            "call.ended",
            {
                **body,
                "duration": round(call.duration, 3),
                "hangup_cause": call.hangup_cause,
                "end_reason": call.end_reason.value if call.end_reason else None,
            },
            targets(call),
        )
        if call.pipeline is not None or call.engine is not None:
            webhooks.notify(
                "transcript.ready",
                {**body, "transcript": f"/v1/calls/{body['call_id']}/transcript"},
                targets(call),
            )

    @app.on_recording_delivered
    async def recorded(meta: RecordingMetadata) -> None:
        webhooks.notify(
            "recording.ready",
            {
                "channel_id": meta.call_id,
                "name": meta.name,
                "format": meta.format,
                "duration": meta.duration,
                "size_bytes": meta.size_bytes,
                "location": meta.location,
            },
            urls,
        )


def install(platform: Platform) -> None:
    """The set-up function the routers register (:func:`setup` with the system clock)."""
    setup(platform)


def worker_of(platform: Platform) -> SchedulingWorker:
    """The platform's worker (made on first use)."""
    return setup(platform)


def dispatcher_of(platform: Platform) -> WebhookDispatcher:
    """The platform's webhook dispatcher."""
    setup(platform)
    return _DISPATCHERS[platform]
