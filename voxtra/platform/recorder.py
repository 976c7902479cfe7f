"""Fills the store from a running app through its public hooks; handlers stay unchanged.

* ``app.on_call_start``: an outbound call placed by the API is marked answered; any
  other call (inbound, or placed from code) gets a record of its own.
* the pipeline's events (``VoiceConfig.on_pipeline``, chained to the app's own): caller
  turns (final transcripts), agent turns (answers) with their latency split (STT, LLM,
  TTS) from :class:`~voxtra.pipeline.events.TurnMetrics`, barge-ins, provider errors.
* DTMF: a waiter on the call's events that sees every digit (and never completes).
* ``app.on_call_end``: final status, hangup cause, duration and the call's figures.
* ``app.on_recording_delivered``: the recording's link.

Pipeline callbacks are synchronous and run inline in the pipeline: they only put a write
on a bounded queue that one writer task drains in order, so a slow database never
delays a call's audio (a full queue drops the write, counted in
``voxtra_store_writes_dropped``).

A write the database could not take because it was away (a connection refused or cut)
is tried again, and the writes behind it wait, in order, until it is back: a call's
record, turns and end reach the store after an outage. A write the database refused
for good (a constraint) and those still queued when the platform stops are lost: each
is logged with its call and counted in ``voxtra_store_writes_failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError

from voxtra.app import VoxtraApp
from voxtra.ari.events import ChannelDtmfReceived, ChannelStateChange
from voxtra.calls.session import CallSession
from voxtra.calls.state import CallDirection, CallState
from voxtra.pipeline import VoicePipeline
from voxtra.pipeline.events import (
    AgentResponseEvent,
    BargeInEvent,
    PipelineEvent,
    ProviderErrorEvent,
    SpeechEndedEvent,
    SpeechStartedEvent,
    TurnMetrics,
    UserTranscriptEvent,
)
from voxtra.platform.metrics import PlatformMetrics
from voxtra.platform.store.base import new_id, utcnow
from voxtra.platform.store.calls import CallRecord, CallStatus, TranscriptTurn
from voxtra.platform.store.db import unreachable
from voxtra.platform.store.repository import CallStore
from voxtra.recording.metadata import RecordingMetadata

__all__ = ["PLATFORM_CALL_ID", "PlatformRecorder"]

logger = logging.getLogger(__name__)

PLATFORM_CALL_ID = "platform_call_id"
"""The ``call.metadata`` key holding the store's id of a call the API placed."""

_QUEUE = 10_000
# A write the database could not take is tried again after 0.5, 1, 2, 4 s, then every
# 8 s, as the engine's outcome writes are (voxtra.platform.engine.worker).
_RETRY_FIRST = 0.5
_RETRY_MAX = 8.0


@dataclass(frozen=True, slots=True)
class _Write:
    """One queued write: ``run`` it; ``call_id`` and ``what`` name it in logs."""

    call_id: str
    what: str
    run: Callable[[], Awaitable[object]]


@dataclass
class _Track:
    """What the recorder keeps in memory about one live call."""

    call_id: str
    call: CallSession
    transcribe: bool = True
    speech_start: float | None = None
    speech_end: float | None = None
    pending_answer: str | None = None
    barge_ins: int = 0
    caller_talk_ms: float = 0.0
    agent_talk_ms: float = 0.0
    turns: int = 0
    dtmf: int = 0
    latencies: dict[str, list[float]] = field(
        default_factory=lambda: {"total_ms": [], "stt_ms": [], "llm_ms": [], "tts_ms": []}
    )

    def offset(self, at: float | None) -> float | None:
        """Seconds from the answer to ``at`` (the pipeline's clock, ``time.monotonic``
        by default, like the call's own timestamps)."""
        answered = self.call.context.answered_at
        if at is None or answered is None:
            return None
        return round(max(0.0, at - answered), 3)


def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank ``q`` percentile (0-100) of ``values``; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return round(ordered[rank - 1], 1)


class PlatformRecorder:
    """Records every call of ``app`` in ``store`` (see the module doc)."""

    def __init__(self, app: VoxtraApp, store: CallStore, metrics: PlatformMetrics) -> None:
        self.app = app
        self.store = store
        self.metrics = metrics
        self.tracks: dict[str, _Track] = {}
        """Live calls by channel id."""
        self._queue: asyncio.Queue[_Write | None] = asyncio.Queue(maxsize=_QUEUE)
        self._writer: asyncio.Task[None] | None = None
        self._writing: _Write | None = None
        app.on_call_start(self._call_started)
        app.on_call_end(self._call_ended)
        app.on_recording_delivered(self._recording_delivered)
        chained = app.voice.on_pipeline

        def on_pipeline(call: Any, pipeline: VoicePipeline) -> None:
            if chained is not None:
                chained(call, pipeline)
            self.watch_pipeline(call, pipeline)

        app.voice = replace(app.voice, on_pipeline=on_pipeline)

    # -- the writer ---------------------------------------------------------------------

    def start(self) -> None:
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_loop(), name="voxtra-platform-writer")

    async def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued (at most ``timeout`` seconds), then stop the writer."""
        if self._writer is None:
            return
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._writer), timeout)
        except TimeoutError:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            await self._abandon()
        self._writer = None

    async def flush(self) -> None:
        """Wait until every write queued so far is done (tests, the API's reads)."""
        done = asyncio.get_running_loop().create_future()

        async def mark() -> None:
            done.set_result(None)

        self._put("", "", mark)
        await done

    def _put(self, call_id: str, what: str, run: Callable[[], Awaitable[object]]) -> None:
        try:
            self._queue.put_nowait(_Write(call_id, what, run))
        except asyncio.QueueFull:
            self.metrics.store_writes_dropped.inc()
            logger.warning(
                "platform: the store's write queue is full; call %s: %s dropped", call_id, what
            )

    async def _write_loop(self) -> None:
        while (write := await self._queue.get()) is not None:
            self._writing = write
            await self._write(write)
            self._writing = None

    async def _write(self, write: _Write) -> None:
        """``write``, tried until the database takes it while it is away (see the module
        doc); the writes queued behind it wait, so they still land in order."""
        wait = _RETRY_FIRST
        while True:
            try:
                await write.run()
                return
            except Exception as exc:
                if not unreachable(exc):
                    self._lost(write, exc)
                    return
                logger.warning(
                    "platform: the store is out of reach (%s); call %s: %s tried again in "
                    "%.1f s (%d write(s) wait behind it)",
                    type(exc).__name__,
                    write.call_id,
                    write.what,
                    wait,
                    self._queue.qsize(),
                )
            await asyncio.sleep(wait)
            wait = min(wait * 2, _RETRY_MAX)

    def _lost(self, write: _Write, exc: BaseException | None) -> None:
        self.metrics.store_writes_failed.inc()
        if exc is None:
            logger.error(
                "platform: the store was still out of reach at stop; call %s: %s not written",
                write.call_id,
                write.what,
            )
        else:
            logger.error(
                "platform: call %s: %s not written: the store refused it",
                write.call_id,
                write.what,
                exc_info=exc,
            )

    async def _abandon(self) -> None:
        """At stop, the writer given up on: every write not done is lost, each said (a
        flush's mark, no write, is let through)."""
        left = [self._writing] if self._writing is not None else []
        self._writing = None
        while not self._queue.empty():
            if (write := self._queue.get_nowait()) is not None:
                left.append(write)
        for write in left:
            if write.call_id:
                self._lost(write, None)
            else:
                await write.run()

    # -- call start and end -------------------------------------------------------------

    async def _call_started(self, call: CallSession) -> None:
        answered = call.context.answered_at
        platform_id = call.metadata.get(PLATFORM_CALL_ID)
        track = _Track(
            call_id=platform_id if isinstance(platform_id, str) else new_id("call"),
            call=call,
            transcribe=bool(call.metadata.get("platform_transcribe", True)),
        )
        self.tracks[call.id] = track
        self.metrics.active_calls.inc()
        now = utcnow()
        if isinstance(platform_id, str):

            async def answered_write() -> None:
                await self.store.update(
                    track.call_id,
                    status=CallStatus.IN_PROGRESS.value,
                    channel_id=call.id,
                    answered_at=now,
                    instance_id=self.app.instance_id,
                    event=("status", {"status": CallStatus.IN_PROGRESS.value}),
                    only_if_not=[s.value for s in _FINAL],
                )

            self._put(track.call_id, "its answer", answered_write)
        else:
            inbound = call.direction is CallDirection.INBOUND
            status = (
                CallStatus.IN_PROGRESS
                if call.state is CallState.IN_PROGRESS
                else CallStatus.RINGING
            )
            fields: dict[str, Any] = {
                "id": track.call_id,
                "channel_id": call.id,
                "direction": call.direction.value,
                "status": status.value,
                "to": call.called_number or None,
                "from_": (call.caller_id or None) if inbound else None,
                "backend": call.backend,
                "meta": _plain(call.metadata),
                "created_at": now,
                "started_at": now,
                "answered_at": now if answered is not None else None,
                "instance_id": self.app.instance_id,
            }

            async def create() -> None:
                # A new row each try: one from a rolled back session is not added again.
                try:
                    await self.store.create(CallRecord(**fields), event={"status": status.value})
                except IntegrityError:
                    # Tried again after a connection lost at its commit: it may be there.
                    if await self.store.get(track.call_id) is None:
                        raise

            self._put(track.call_id, "its record", create)
            if status is CallStatus.RINGING:
                self._watch_answer(call, track)
        self._watch_dtmf(call, track)

    def _watch_answer(self, call: CallSession, track: _Track) -> None:
        """An inbound call taken ringing: ``in_progress`` once its channel is up."""
        answered = False

        def up(event: ChannelStateChange) -> bool:
            nonlocal answered
            if not answered and event.channel.id == call.id and event.channel.state == "Up":
                answered = True
                self._put(
                    track.call_id,
                    "its answer",
                    functools.partial(
                        self.store.update,
                        track.call_id,
                        status=CallStatus.IN_PROGRESS.value,
                        answered_at=utcnow(),
                        event=("status", {"status": CallStatus.IN_PROGRESS.value}),
                        only_if_not=[s.value for s in _FINAL],
                    ),
                )
            return False  # stays registered; failed (CallEnded) when the call ends

        waiter = call.context.expect(ChannelStateChange, up)
        waiter.add_done_callback(lambda f: f.cancelled() or f.exception())

    def _watch_dtmf(self, call: CallSession, track: _Track) -> None:
        """Record every digit, as the call's event dispatch sees it (synchronously: a
        helper task re-arming a wait after each digit could miss one sent right after).
        The waiter's predicate records and answers False, so it stays for the whole
        call; the call's end fails it (CallEnded), which is retrieved here."""

        def seen(event: ChannelDtmfReceived) -> bool:
            track.dtmf += 1
            self._put(
                track.call_id,
                "a DTMF digit",
                functools.partial(
                    self.store.add_event, track.call_id, "dtmf", {"digit": event.digit}
                ),
            )
            return False

        waiter = call.context.expect(ChannelDtmfReceived, seen)
        waiter.add_done_callback(lambda f: f.cancelled() or f.exception())

    async def _call_ended(self, call: CallSession) -> None:
        track = self.tracks.pop(call.id, None)
        if track is None:
            return
        self.metrics.active_calls.dec()
        if track.pending_answer is not None:
            self._agent_turn(track, track.pending_answer, None)
        failed = call.state is CallState.FAILED
        status = CallStatus.FAILED if failed else CallStatus.COMPLETED
        if call.context.answered_at is None and call.direction is CallDirection.INBOUND:
            status = CallStatus.CANCELED if not failed else status  # caller gave up ringing
        figures = self._figures(track)
        self.metrics.calls.labels(status.value, call.direction.value).inc()
        if call.dtmf_dropped:
            self.metrics.dtmf_dropped.inc(call.dtmf_dropped)
        transport = call.media_path.transport
        if transport is not None:
            stats = transport.stats
            for kind, value in (
                ("in", stats.frames_in),
                ("out", stats.frames_out),
                ("lost", stats.lost),
                ("late", stats.late),
                ("concealed", stats.concealed),
            ):
                if value:
                    self.metrics.media_frames.labels(kind).inc(value)
        ended_at = utcnow()
        fields: dict[str, Any] = {
            "status": status.value,
            "ended_at": ended_at,
            "duration": round(call.duration, 3),
            "hangup_cause": call.hangup_cause,
            "end_reason": call.end_reason.value if call.end_reason is not None else None,
            "metrics": figures,
        }
        if call.context.answered_at is not None:
            fields["answered_at"] = ended_at - timedelta(seconds=call.duration)

        async def final() -> None:
            await self.store.update(
                track.call_id,
                event=("status", {"status": status.value, "end_reason": fields["end_reason"]}),
                only_if_not=[s.value for s in _FINAL],
                **fields,
            )

        self._put(track.call_id, "its end (status, duration, figures)", final)

    def _figures(self, track: _Track) -> dict[str, Any]:
        latency = {
            stage: {"p50": percentile(values, 50), "p95": percentile(values, 95)}
            for stage, values in track.latencies.items()
        }
        return {
            "turns": track.turns,
            "latency_ms": latency,
            "barge_ins": track.barge_ins,
            "talk_time": {
                "caller": round(track.caller_talk_ms / 1000.0, 2),
                "agent": round(track.agent_talk_ms / 1000.0, 2),
            },
            "dtmf": track.dtmf,
        }

    async def _recording_delivered(self, meta: RecordingMetadata) -> None:
        track = self.tracks.get(meta.call_id)
        recording = {
            "name": meta.name,
            "format": meta.format,
            "duration": meta.duration,
            "size_bytes": meta.size_bytes,
            "location": meta.location,
        }

        async def write() -> None:
            call_id = track.call_id if track is not None else None
            if call_id is None:
                record = await self.store.by_channel(meta.call_id)
                if record is None:
                    logger.debug("platform: recording %s of no stored call", meta.name)
                    return
                call_id = record.id
            await self.store.update(call_id, recording=recording, event=("recording", recording))

        self._put(track.call_id if track is not None else meta.call_id, "its recording", write)

    # -- the pipeline's events ----------------------------------------------------------

    def watch_pipeline(self, call: Any, pipeline: VoicePipeline) -> None:
        """Subscribe to ``pipeline``'s events for ``call`` (a CallSession)."""
        track = self.tracks.get(call.id)
        if track is None:
            return
        pipeline.on_event(lambda event: self._on_pipeline_event(track, event))

    def _on_pipeline_event(self, track: _Track, event: PipelineEvent) -> None:
        if isinstance(event, SpeechStartedEvent):
            track.speech_start = event.at
        elif isinstance(event, SpeechEndedEvent):
            track.speech_end = event.at
            track.caller_talk_ms += event.speech_ms
        elif isinstance(event, UserTranscriptEvent):
            if event.is_final and event.text.strip() and track.transcribe:
                self._add_turn(
                    track,
                    speaker="caller",
                    text=event.text,
                    start=track.offset(track.speech_start),
                    end=track.offset(track.speech_end or event.at),
                    confidence=event.confidence,
                )
        elif isinstance(event, AgentResponseEvent):
            if event.text.strip():
                if track.pending_answer is not None:  # a tool step's text, then the answer
                    self._agent_turn(track, track.pending_answer, None)
                track.pending_answer = event.text
        elif isinstance(event, TurnMetrics):
            self._turn_metrics(track, event)
        elif isinstance(event, BargeInEvent):
            track.barge_ins += 1
            self.metrics.barge_ins.inc()
            data: dict[str, Any] = {"played_ms": round(event.played_ms, 1)}
            if track.transcribe:  # the agent's words heard: not kept without transcripts
                data["heard_text"] = event.heard_text
            self._put(
                track.call_id,
                "a barge-in",
                lambda: self.store.add_event(track.call_id, "barge_in", data),
            )
        elif isinstance(event, ProviderErrorEvent):
            self.metrics.provider_errors.labels(event.stage or "?", str(event.timed_out)).inc()
            data = {"stage": event.stage, "provider": event.provider, "timed_out": event.timed_out}
            self._put(
                track.call_id,
                "a provider error",
                lambda: self.store.add_event(track.call_id, "provider_error", data),
            )

    def _turn_metrics(self, track: _Track, metrics: TurnMetrics) -> None:
        figures = {
            k: (round(v, 1) if v is not None else None) for k, v in metrics.as_dict().items()
        }
        for stage in ("total_ms", "stt_ms", "llm_ms", "tts_ms"):
            value = figures.get(stage)
            if value is not None:
                track.latencies[stage].append(value)
                self.metrics.turn_latency.labels(stage.removesuffix("_ms")).observe(value / 1000)
        if metrics.first_frame_out is not None:
            track.agent_talk_ms += max(0.0, (metrics.at - metrics.first_frame_out) * 1000.0)
        if track.pending_answer is not None:
            text, track.pending_answer = track.pending_answer, None
            self._agent_turn(
                track, text, figures, metrics.first_frame_out, metrics.at, metrics.interrupted
            )

    def _agent_turn(
        self,
        track: _Track,
        text: str,
        latency: dict[str, float | None] | None,
        start: float | None = None,
        end: float | None = None,
        interrupted: bool = False,
    ) -> None:
        if not track.transcribe:
            return
        self._add_turn(
            track,
            speaker="agent",
            text=text,
            start=track.offset(start),
            end=track.offset(end),
            interrupted=interrupted,
            latency=dict(latency) if latency is not None else None,
        )

    def _add_turn(self, track: _Track, **fields: Any) -> None:
        """Queue a turn, numbered here: its ``seq`` is its key, so a try again after a
        connection lost at the commit finds the turn written, not adds it twice."""
        track.turns += 1
        seq = track.turns
        data = {
            "speaker": fields["speaker"],
            "text": fields["text"],
            "start": fields["start"],
            "end": fields["end"],
            "interrupted": fields.get("interrupted"),
        }

        async def write() -> None:
            # A new row each try: one from a rolled back session is not added again.
            turn = TranscriptTurn(call_id=track.call_id, seq=seq, **fields)
            await self.store.add_turn(turn, event_data=data)

        self._put(track.call_id, f"transcript turn {seq}", write)


_FINAL = (
    CallStatus.COMPLETED,
    CallStatus.BUSY,
    CallStatus.NO_ANSWER,
    CallStatus.FAILED,
    CallStatus.CANCELED,
)


def _plain(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with only JSON values (handlers may put any object in call.metadata)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, str | int | float | bool | type(None) | list | dict):
            out[str(key)] = value
        else:
            out[str(key)] = repr(value)
    return out
