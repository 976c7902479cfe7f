"""OpenTelemetry spans of a whole call on FakeAsterisk, read from the SDK's in-memory
exporter: a call span, a turn span with its stage children on the pipeline's times,
the tool the agent called, and the call's media counters."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)

from voxtra import CallSession, VoiceConfig, VoxtraApp
from voxtra.ari.transport import AriRequest, AriResponse
from voxtra.pipeline.io import MonotonicClock
from voxtra.providers.base import ToolCall
from voxtra.testing import FakeAsterisk
from voxtra.testing.doubles import (
    EnergyVAD,
    Reply,
    ScriptedLLM,
    ScriptedSTT,
    ScriptedTTS,
)
from voxtra.tracing import SIP_CALL_ID, instrument

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def opening_hours() -> str:
    """When the shop is open."""
    return "nine to five"


async def test_a_conversation_is_traced_call_turn_and_stages(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    clock = MonotonicClock()
    tts = ScriptedTTS(clock, ms_per_char=2, first_byte=0)
    llm = ScriptedLLM(
        [
            Reply(tool_calls=(ToolCall("t1", "opening_hours", {}),)),
            Reply(["We are open nine to five."]),
        ],
        clock,
        delay=0.01,
    )
    app = VoxtraApp(
        "http://asterisk.invalid:8088",
        "user",
        "secret",
        app_name="trace-tests",
        instance_id="unit",
        spool_dir=str(tmp_path / "spool"),
        voice=VoiceConfig(
            stt=ScriptedSTT(["when are you open"], clock, delay=0.01),
            llm=llm,
            tts=tts,
            vad=EnergyVAD(),
            greeting="Hello.",
            tools=(opening_hours,),
        ),
    )
    instrument(app, tracer_provider=provider)

    @app.route("1000")
    async def agent(call: CallSession) -> None:
        await call.answer()
        await call.converse()

    async with fake_asterisk.serve(app):
        call = await fake_asterisk.incoming(extension="1000", caller="+4930123")
        await call.wait_until(lambda c: len(tts.requests) >= 1, timeout=10)
        call.send_audio(b"\x80\x00" * 4000)  # the caller asks (a second of loud audio)
        await call.wait_until(lambda c: len(tts.requests) >= 2, timeout=10)
        await call.hang_up()
        await fake_asterisk.wait_until(lambda: not app.active_sessions)

    spans = {s.name: s for s in exporter.get_finished_spans()}
    call_span, turn = spans["voxtra.call"], spans["voxtra.turn"]
    assert call_span.attributes is not None and turn.attributes is not None
    assert call_span.attributes["voxtra.call.caller"] == "+4930123"
    assert call_span.attributes["voxtra.call.called_number"] == "1000"
    assert call_span.attributes["voxtra.call.end_reason"] == "remote"
    assert int(call_span.attributes["voxtra.media.frames_in"]) > 0  # type: ignore[arg-type]
    assert turn.parent is not None and turn.parent.span_id == call_span.context.span_id
    assert turn.attributes["voxtra.turn.tools"] == ("opening_hours",)
    assert float(turn.attributes["voxtra.turn.total_ms"]) > 0  # type: ignore[arg-type]
    assert "voxtra.media.lost" in turn.attributes
    stages = [s for s in exporter.get_finished_spans() if s.name in ("voxtra.stt", "voxtra.llm")]
    assert {s.name for s in stages} == {"voxtra.stt", "voxtra.llm"}
    for stage in stages:
        assert stage.parent is not None and stage.parent.span_id == turn.context.span_id
        assert turn.start_time <= stage.start_time <= stage.end_time <= turn.end_time  # type: ignore[operator]


@pytest.mark.parametrize(
    ("status", "message"),
    [(404, "Provided channel was not found"), (500, "Unable to read provided function")],
)
async def test_the_sip_call_id_read_failing_leaves_the_call_traced(
    fake_asterisk: FakeAsterisk,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    status: int,
    message: str,
) -> None:
    """Asterisk's answers when the channel left before the read, and when it is not
    SIP after all: the call span goes on without ``sip.call_id`` and the call-start
    hook does not fail (the first, CallEnded, failed it before)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = VoxtraApp(
        "http://127.0.0.1:8088",
        "user",
        "secret",
        app_name="trace-sip-id",
        instance_id="unit",
        spool_dir=str(tmp_path / "spool"),
    )
    instrument(app, tracer_provider=provider)
    answer = fake_asterisk.handle_request

    async def refuse(request: AriRequest) -> AriResponse:
        if request.params.get("variable") == SIP_CALL_ID:
            body = json.dumps({"message": message}).encode()
            return AriResponse(status, body)
        return await answer(request)

    fake_asterisk.handle_request = refuse  # type: ignore[method-assign]

    @app.route("1000")
    async def hello(call: CallSession) -> None:
        await call.answer()
        await call.hangup()

    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="1000")
        await caller.wait_ended()
        await fake_asterisk.wait_until(lambda: not app.active_sessions)
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "voxtra.call"]
    assert span.attributes is not None and "sip.call_id" not in span.attributes
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
