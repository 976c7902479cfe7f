"""OpenTelemetry traces of calls and turns, tied to the call's media quality.

``instrument(app)`` (the ``otel`` extra: ``pip install voxtra[otel]``) gives every call
a span and every conversational turn a child span, laid on the pipeline's timestamps:

- ``voxtra.call`` (SERVER for inbound, CLIENT for outbound): the Asterisk channel id
  and name, direction, caller, called number, the SIP Call-ID on PJSIP channels; at the
  end the end reason, hangup cause, duration and the media transport's counters
  (frames in and out, lost, late, concealed, silence filled in).
- ``voxtra.turn``: from the end of the caller's speech to the first answer frame out,
  with ``voxtra.stt`` / ``voxtra.llm`` / ``voxtra.tts`` children for each stage, the
  stage times as attributes, whether the caller interrupted, the tools the agent
  called, and the frames lost and concealed *during that turn*: a slow or broken turn
  shows the line it ran on, which no peer ties together.
- Events on the call span: barge-ins (with what the caller heard), provider errors
  (stage, timed out), silence timeouts.

Spans go to the tracer provider given, else the global one (``opentelemetry.trace``),
so any exporter (OTLP, console, in-memory in tests) works unchanged.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer, TracerProvider

from voxtra.app import VoxtraApp
from voxtra.ari.errors import AriError
from voxtra.calls.session import CallSession
from voxtra.calls.state import CallDirection
from voxtra.errors import CallEnded
from voxtra.pipeline.events import (
    AgentResponseEvent,
    BargeInEvent,
    PipelineEvent,
    ProviderErrorEvent,
    SilenceTimeoutEvent,
    TurnMetrics,
)
from voxtra.pipeline.pipeline import VoicePipeline

__all__ = ["Instrumentation", "instrument"]

logger = logging.getLogger(__name__)

SCOPE = "voxtra"
SIP_CALL_ID = "CHANNEL(pjsip,call-id)"
"""Asterisk's dialplan function for a PJSIP channel's Call-ID (ARI reads functions)."""

_MEDIA_COUNTERS = ("frames_in", "frames_out", "silence_out", "lost", "late", "concealed")


@dataclass
class _CallTrace:
    span: Span
    offset_ns: int
    """Pipeline clock (monotonic seconds) -> epoch nanoseconds."""
    tools: list[str] = field(default_factory=list)
    media_seen: dict[str, int] = field(default_factory=dict)


class Instrumentation:
    """What :func:`instrument` installed: the tracer, and the calls being traced."""

    def __init__(self, app: VoxtraApp, tracer: Tracer, *, sip_call_id: bool) -> None:
        self.app = app
        self.tracer = tracer
        self.sip_call_id = sip_call_id
        self.calls: dict[str, _CallTrace] = {}

    # -- the call span ---------------------------------------------------------------

    async def call_started(self, call: CallSession) -> None:
        kind = SpanKind.SERVER if call.direction is CallDirection.INBOUND else SpanKind.CLIENT
        span = self.tracer.start_span(
            "voxtra.call",
            kind=kind,
            attributes={
                "voxtra.call.id": call.id,
                "voxtra.call.direction": str(call.direction),
                "voxtra.call.caller": call.caller_id,
                "voxtra.call.called_number": call.called_number,
                "voxtra.app_name": call.app_name,
                "asterisk.channel.id": call.id,
                "asterisk.channel.name": call.channel.name,
            },
        )
        offset = time.time_ns() - int(time.monotonic() * 1e9)
        self.calls[call.id] = _CallTrace(span, offset)
        if self.sip_call_id and call.channel.name.upper().startswith("PJSIP/"):
            try:
                span.set_attribute("sip.call_id", await call.get_variable(SIP_CALL_ID))
            # the channel left meanwhile (CallEnded), or not SIP after all (Asterisk's
            # 500 for a function it cannot read)
            except (AriError, CallEnded) as exc:
                logger.debug("call %s: no SIP Call-ID: %s", call.id, exc)

    async def call_ended(self, call: CallSession) -> None:
        traced = self.calls.pop(call.id, None)
        if traced is None:
            return
        span = traced.span
        span.set_attribute("voxtra.call.end_reason", str(call.end_reason or ""))
        span.set_attribute("voxtra.call.duration_s", round(call.duration, 3))
        if call.hangup_cause is not None:
            span.set_attribute("voxtra.call.hangup_cause", call.hangup_cause)
        for name, value in _media_counters(call).items():
            span.set_attribute(f"voxtra.media.{name}", value)
        if call.state == "failed":
            span.set_status(Status(StatusCode.ERROR, "the handler raised"))
        span.end()

    # -- turns (pipeline events) -------------------------------------------------------

    def pipeline_created(self, call: CallSession, pipeline: VoicePipeline) -> None:
        pipeline.on_event(lambda event: self._on_event(call, event))

    def _on_event(self, call: CallSession, event: PipelineEvent) -> None:
        traced = self.calls.get(call.id)
        if traced is None:
            return
        try:
            if isinstance(event, TurnMetrics):
                self._turn(call, traced, event)
            elif isinstance(event, AgentResponseEvent):
                traced.tools.extend(t.name for t in event.tool_calls)
            elif isinstance(event, BargeInEvent):
                traced.span.add_event(
                    "barge_in",
                    {"voxtra.heard_text": event.heard_text, "voxtra.played_ms": event.played_ms},
                    self._ns(traced, event.at),
                )
            elif isinstance(event, ProviderErrorEvent):
                traced.span.add_event(
                    "provider_error",
                    {
                        "voxtra.provider": event.provider,
                        "voxtra.stage": event.stage,
                        "voxtra.timed_out": event.timed_out,
                        "voxtra.message": event.message,
                    },
                    self._ns(traced, event.at),
                )
            elif isinstance(event, SilenceTimeoutEvent):
                traced.span.add_event(
                    "silence_timeout", {"voxtra.seconds": event.seconds}, self._ns(traced, event.at)
                )
        except Exception:  # tracing never breaks a call
            logger.exception("call %s: tracing a pipeline event failed", call.id)

    def _turn(self, call: CallSession, traced: _CallTrace, metrics: TurnMetrics) -> None:
        start = metrics.speech_end if metrics.speech_end is not None else metrics.at
        end = metrics.first_frame_out if metrics.first_frame_out is not None else metrics.at
        context = trace.set_span_in_context(traced.span)
        turn = self.tracer.start_span(
            "voxtra.turn", context=context, start_time=self._ns(traced, start)
        )
        for name, value in metrics.as_dict().items():
            if value is not None:
                turn.set_attribute(f"voxtra.turn.{name}", round(value, 2))
        turn.set_attribute("voxtra.turn.interrupted", metrics.interrupted)
        if traced.tools:
            turn.set_attribute("voxtra.turn.tools", list(traced.tools))
            traced.tools.clear()
        now = _media_counters(call)
        for name in ("lost", "late", "concealed"):
            if name in now:
                turn.set_attribute(
                    f"voxtra.media.{name}", now[name] - traced.media_seen.get(name, 0)
                )
        traced.media_seen = now
        turn_context = trace.set_span_in_context(turn)
        for name, begin, finish in (
            ("voxtra.stt", metrics.speech_end, metrics.stt_final),
            ("voxtra.llm", metrics.stt_final, metrics.llm_first_token),
            ("voxtra.tts", metrics.llm_first_token, metrics.tts_first_byte),
        ):
            if begin is not None and finish is not None:
                stage = self.tracer.start_span(
                    name, context=turn_context, start_time=self._ns(traced, begin)
                )
                stage.end(end_time=self._ns(traced, finish))
        turn.end(end_time=self._ns(traced, max(end, start)))

    @staticmethod
    def _ns(traced: _CallTrace, at: float) -> int:
        return traced.offset_ns + int(at * 1e9)


def _media_counters(call: CallSession) -> dict[str, int]:
    transport = call.media_path.transport
    if transport is None:
        return {}
    stats: Any = transport.stats
    return {name: int(getattr(stats, name, 0)) for name in _MEDIA_COUNTERS}


def instrument(
    app: VoxtraApp,
    *,
    tracer_provider: TracerProvider | None = None,
    sip_call_id: bool = True,
) -> Instrumentation:
    """Trace ``app``'s calls and turns (see the module doc). Call it before ``start()``.

    ``sip_call_id``: read each PJSIP call's Call-ID (one ARI request per call).
    Routes that set a call's ``voice_config`` of their own keep the app's
    ``on_pipeline`` only if they copied it from ``app.voice``.
    """
    tracer = trace.get_tracer(SCOPE, tracer_provider=tracer_provider)
    instrumentation = Instrumentation(app, tracer, sip_call_id=sip_call_id)
    app.on_call_start(instrumentation.call_started)
    app.on_call_end(instrumentation.call_ended)
    previous = app.voice.on_pipeline

    def on_pipeline(call: Any, pipeline: VoicePipeline) -> None:
        if previous is not None:
            previous(call, pipeline)
        instrumentation.pipeline_created(call, pipeline)

    app.voice = replace(app.voice, on_pipeline=on_pipeline)
    return instrumentation
