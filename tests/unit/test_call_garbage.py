"""A call leaves no reference cycle: once the app and the user let go of its session,
reference counting frees every object the call made, without the cyclic collector.

Why it matters: objects in a cycle wait for the collector's middle generation, which
runs every 1,000 young collections (voxtra.media.collector). At 50 calls in flight
against the fake that was a pause of 0.86 s every ~4,000 calls, walking the sessions
of every call since the last one (docs/performance.md). The tests run with the
collector off, so a cycle shows as an object that never goes.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from fake_apps import fake_app
from garbage import collector_off, cyclic_garbage

from voxtra import CallBusy, CallEnded, CallNoAnswer, CallSession, VoiceConfig, VoxtraApp
from voxtra.ari.models import CallerID, Channel
from voxtra.calls.assist import AgentAssist
from voxtra.calls.context import CallContext
from voxtra.calls.parties import SupervisorMode
from voxtra.calls.registry import PendingOriginate
from voxtra.media.frames import AudioChunk, Codec
from voxtra.pipeline.events import AgentResponseEvent
from voxtra.pipeline.io import MonotonicClock
from voxtra.pipeline.pipeline import VoicePipeline
from voxtra.testing import FakeAsterisk
from voxtra.testing.doubles import EnergyVAD, Reply, ScriptedLLM, ScriptedSTT, ScriptedTTS

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture
def no_collector() -> Iterator[None]:
    with collector_off():
        yield


def _parts(session: CallSession) -> dict[str, weakref.ref[Any]]:
    """Weak references to the session and each of its parts."""
    parts: dict[str, Any] = {
        "session": session,
        "context": session.context,
        "control": session.control,
        "media_path": session.media_path,
        "parties": session.parties,
        "secure": session.secure,
        "channel": session.channel,
    }
    return {name: weakref.ref(part) for name, part in parts.items()}


async def _freed(refs: dict[str, weakref.ref[Any]], app: VoxtraApp) -> list[str]:
    """The parts still alive once the app is done with the call (empty: all freed)."""
    for _ in range(200):
        if not app.active_sessions and all(ref() is None for ref in refs.values()):
            break
        await asyncio.sleep(0.01)
    return [name for name, ref in refs.items() if ref() is not None]


async def test_an_inbound_call_is_freed_without_the_cyclic_collector(
    fake_asterisk: FakeAsterisk, tmp_path: Path, no_collector: None
) -> None:
    app = fake_app(tmp_path, "garbage-inbound")
    refs: dict[str, weakref.ref[Any]] = {}
    hung_up: list[str] = []

    @app.route("_X.")
    async def handler(call: CallSession) -> None:
        refs.update(_parts(call))

        @call.on_hangup
        async def note(call: CallSession) -> None:
            hung_up.append(call.id)

        await call.answer()
        await call.hangup()

    async with fake_asterisk.serve(app):
        await fake_asterisk.incoming(extension="1000", caller="111")
        await fake_asterisk.wait_until(lambda: bool(hung_up) and not app.active_sessions)
        assert await _freed(refs, app) == []


async def test_an_originated_call_with_media_is_freed_without_the_cyclic_collector(
    fake_asterisk: FakeAsterisk, tmp_path: Path, no_collector: None
) -> None:
    app = fake_app(tmp_path, "garbage-outbound")
    refs: dict[str, weakref.ref[Any]] = {}
    sent: list[bool] = []

    async def handler(call: CallSession) -> None:
        refs.update(_parts(call))
        # The media path too: ExternalMedia and its transport, a frame sent.
        await call.send_audio(AudioChunk(b"\x00\x01" * 160, 8000, Codec.PCM16))
        sent.append(call.control.transport is not None)
        await call.hangup()

    async with fake_asterisk.serve(app):
        await app.originate("PJSIP/alice", handler=handler)
        await fake_asterisk.wait_until(lambda: bool(sent) and not app.active_sessions)
        assert sent == [True]
        assert await _freed(refs, app) == []


@pytest.mark.parametrize(("outcome", "error"), [("busy", CallBusy), ("noanswer", CallNoAnswer)])
async def test_an_originate_that_fails_leaves_no_cycle(
    fake_asterisk: FakeAsterisk,
    tmp_path: Path,
    no_collector: None,
    outcome: str,
    error: type[Exception],
) -> None:
    """Many of a campaign's calls are busy or unanswered: the exception raised through
    ``originate`` must not be held by the pending originate that its frame held."""
    app = fake_app(tmp_path, f"garbage-{outcome}")
    fake_asterisk.endpoint_outcomes["PJSIP/bob"] = outcome

    async def dial() -> str:
        try:
            await app.originate("PJSIP/bob")
        except error:
            return outcome
        return "answered"

    async with fake_asterisk.serve(app):
        # In a task of its own, as the platform's dialler runs each call.
        assert await asyncio.create_task(dial()) == outcome
        assert cyclic_garbage((PendingOriginate, error)) == []


async def test_a_session_the_user_keeps_still_answers_after_its_call(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    app = fake_app(tmp_path, "garbage-kept")
    kept: list[CallSession] = []

    @app.route("_X.")
    async def handler(call: CallSession) -> None:
        kept.append(call)
        await call.answer()

    async with fake_asterisk.serve(app):
        await fake_asterisk.incoming(extension="1000", caller="111")
        await fake_asterisk.wait_until(lambda: bool(kept) and not app.active_sessions)
        gc.collect()
        (call,) = kept
        # Its control lives as long as the session: the context still reaches it.
        assert call.context.control is call.control
        requests = len(fake_asterisk.requests)
        await call.hangup()  # the call has ended: nothing is sent
        assert call.ended and len(fake_asterisk.requests) == requests


class _Control:
    """A backend control that records its hang-ups."""

    backend = "stub"

    def __init__(self, context: CallContext, log: list[str]) -> None:
        self.context = context
        self.log = log

    async def hangup(self, reason: str) -> None:
        self.log.append(reason)


def _stub(log: list[str]) -> Callable[[CallContext], Any]:
    return lambda context: _Control(context, log)


async def test_a_context_whose_session_is_gone_sends_no_hangup(tmp_path: Path) -> None:
    app = fake_app(tmp_path, "garbage-orphan")
    log: list[str] = []
    channel = Channel(id="orphan-1", state="Up", caller=CallerID(number="+15550001"))
    session = CallSession(app, channel, control=_stub(log))
    context = session.context
    await context.hangup("busy")
    assert log == ["busy"]  # while the session lives, through its control

    session = CallSession(app, channel, control=_stub(log))
    context = session.context
    del session  # the session and its control go; the context stays
    assert context.control is None
    # Neither the backend's hang-up (gone with it) nor Asterisk's: it is another
    # backend's call, and the app had run it to its end before letting go.
    await context.hangup("busy")
    assert log == ["busy"] and context.hanging_up


# -- a call that ends while something waits on one of its events ----------------------
#
# A waiter's future keeps one CallEnded for everyone awaiting it; raised into a frame
# that holds the future, it held that frame (and through it the session) in a cycle.


async def _caller_hangs_up_during(
    fake: FakeAsterisk,
    tmp_path: Path,
    name: str,
    body: Callable[[CallSession], Any],
    *,
    ready: Callable[[], bool] | None = None,
    kinds: tuple[type, ...] = (),
) -> list[str]:
    """Run ``body`` in an answered call, hang the caller up while it waits (or once
    ``ready()``), and return the session parts still alive once the app is done and
    what of ``kinds`` only the cyclic collector would free (empty: all freed)."""
    app = fake_app(tmp_path, name)
    refs: dict[str, weakref.ref[Any]] = {}

    @app.route("_X.")
    async def handler(call: CallSession) -> None:
        refs.update(_parts(call))
        await call.answer()
        await body(call)

    async with fake.serve(app):
        caller = await fake.incoming(extension="200")

        def started() -> bool:
            # The body's wait is under way: its playback, leg or recording is there.
            return bool(fake.playbacks or fake.originated or fake.live_recordings)

        await fake.wait_until(ready or started)
        await asyncio.sleep(0.05)
        await caller.hang_up()
        await fake.wait_until(lambda: not app.active_sessions)
        left = await _freed(refs, app)
    assert refs, "the handler ran"
    garbage = cyclic_garbage((CallEnded, CallSession, *kinds))
    return left + [f"garbage: {kind}" for kind in garbage]


async def test_a_caller_hanging_up_during_a_prompt_leaves_no_cycle(
    fake_asterisk: FakeAsterisk, tmp_path: Path, no_collector: None
) -> None:
    """The IVR case: the caller hangs up while the handler waits for a playback."""
    fake_asterisk.playback_duration = 30.0

    async def prompt(call: CallSession) -> None:
        await call.play_and_wait("hello-world")

    assert await _caller_hangs_up_during(fake_asterisk, tmp_path, "garbage-ivr", prompt) == []


async def test_a_caller_hanging_up_while_recording_leaves_no_cycle(
    fake_asterisk: FakeAsterisk, tmp_path: Path, no_collector: None
) -> None:
    """Voicemail: the caller hangs up instead of pressing the finish key."""
    outcome: list[str] = []

    async def voicemail(call: CallSession) -> None:
        result = await call.record("garbage-vm", finish_on_key="#", max_length=30)
        outcome.append(result.reason)

    left = await _caller_hangs_up_during(fake_asterisk, tmp_path, "garbage-vm", voicemail)
    assert left == []
    assert outcome == ["hangup"]


async def test_a_caller_hanging_up_while_connected_leaves_no_cycle(
    fake_asterisk: FakeAsterisk, tmp_path: Path, no_collector: None
) -> None:
    """The caller hangs up while put through to a callee (the callee's watch waits)."""

    async def put_through(call: CallSession) -> None:
        await call.connect(ring_time=5, to="PJSIP/bob")
        await call.wait_ended()

    left = await _caller_hangs_up_during(fake_asterisk, tmp_path, "garbage-connect", put_through)
    assert left == []


@pytest.mark.parametrize("outcome", ["busy", "noanswer", "ringing"])
async def test_a_callee_who_does_not_answer_leaves_no_cycle(
    fake_asterisk: FakeAsterisk, tmp_path: Path, no_collector: None, outcome: str
) -> None:
    """A busy or unanswered callee (its exception raised through the dial), and the
    caller hanging up while the callee still rings (the dial cancelled)."""
    raised: list[str] = []
    if outcome == "ringing":
        fake_asterisk.endpoint_outcomes["PJSIP/bob"] = "ring"
    else:
        fake_asterisk.endpoint_outcomes["PJSIP/bob"] = outcome

    async def dial(call: CallSession) -> None:
        try:
            await call.connect(ring_time=5, to="PJSIP/bob")
        except (CallBusy, CallNoAnswer) as exc:
            raised.append(type(exc).__name__)
        await call.wait_ended()

    left = await _caller_hangs_up_during(fake_asterisk, tmp_path, f"garbage-{outcome}", dial)
    assert left == []
    expected = {"busy": ["CallBusy"], "noanswer": ["CallNoAnswer"], "ringing": []}
    assert raised == expected[outcome]


async def test_a_caller_hanging_up_while_supervised_leaves_no_cycle(
    fake_asterisk: FakeAsterisk, tmp_path: Path, no_collector: None
) -> None:
    """A supervisor listens in when the caller hangs up (its watch waits)."""
    joined: list[str] = []

    async def supervised(call: CallSession) -> None:
        await call.media()
        supervision = await call.parties.supervise("PJSIP/boss", SupervisorMode("spy"))
        joined.append(str(supervision.mode))
        await call.wait_ended()

    left = await _caller_hangs_up_during(fake_asterisk, tmp_path, "garbage-spy", supervised)
    assert left == []
    assert joined == ["spy"]


async def test_an_agent_assist_leaves_no_cycle(
    fake_asterisk: FakeAsterisk, tmp_path: Path, no_collector: None
) -> None:
    """An assist on a connected call, closed, then the caller hangs up: its tasks and
    its sides' pipelines (whose event handler holds the assist) are let go."""
    closed: list[bool] = []

    async def assisted(call: CallSession) -> None:
        await call.connect(ring_time=5, to="PJSIP/bob")
        app = call.app
        assert isinstance(app, VoxtraApp)
        clock = MonotonicClock()
        stt, tts = ScriptedSTT([], clock), ScriptedTTS(clock)
        async with app.assist(call, stt=stt, tts=tts, vad=EnergyVAD()) as assist:
            assert len(assist.sides) == 2
        closed.append(assist.ended)
        await call.wait_ended()

    left = await _caller_hangs_up_during(
        fake_asterisk,
        tmp_path,
        "garbage-assist",
        assisted,
        ready=lambda: bool(closed),
        kinds=(AgentAssist, VoicePipeline),
    )
    assert left == []
    assert closed == [True]


def _voice(tts: ScriptedTTS, clock: MonotonicClock) -> VoiceConfig:
    return VoiceConfig(
        stt=ScriptedSTT(["hello"], clock, delay=0.01),
        llm=ScriptedLLM([Reply(["Hi there."])], clock, delay=0.01),
        tts=tts,
        vad=EnergyVAD(),
        greeting="Hello.",
    )


async def _conversation_left(
    fake_asterisk: FakeAsterisk, app: VoxtraApp, tts: ScriptedTTS
) -> list[str]:
    """A caller who hears the greeting, speaks, hears the answer and hangs up; what
    is left of the call once the app is done with it: still alive (something holds
    it), or what only the cyclic collector would free."""

    refs: list[weakref.ref[CallSession]] = []

    @app.route("1000")
    async def agent(call: CallSession) -> None:
        refs.append(weakref.ref(call))
        await call.answer()
        await call.converse()

    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="1000", caller="111")
        await caller.wait_until(lambda c: len(tts.requests) >= 1, timeout=10)
        caller.send_audio(b"\x80\x00" * 4000)  # a second of loud audio: a turn
        await caller.wait_until(lambda c: len(tts.requests) >= 2, timeout=10)
        await caller.hang_up()
        await fake_asterisk.wait_until(lambda: not app.active_sessions)
    for _ in range(100):  # the app's last steps with the call (its tasks' ends)
        if refs[0]() is None:
            break
        await asyncio.sleep(0.01)
    kept = ["CallSession (alive)"] if refs[0]() is not None else []
    return kept + cyclic_garbage((CallSession, CallContext, VoicePipeline))


async def test_a_pipeline_handler_that_holds_its_call_leaves_no_cycle(
    fake_asterisk: FakeAsterisk, tmp_path: Path, no_collector: None
) -> None:
    """The handler a user subscribes to each call's pipeline events usually holds the
    call (to log with its id, to count its turns): call -> voice -> pipeline ->
    handler -> call. The app lets go of the engine's handlers once the call is over."""
    answers: list[str] = []

    def subscribe(call: CallSession, pipeline: VoicePipeline) -> None:
        @pipeline.on_event
        def log(event: object) -> None:
            if isinstance(event, AgentResponseEvent):
                answers.append(f"{call.id}: {event.text}")

    clock = MonotonicClock()
    tts = ScriptedTTS(clock, ms_per_char=1, first_byte=0)
    voice = replace(_voice(tts, clock), on_pipeline=subscribe)
    app = fake_app(tmp_path, "garbage-handler", voice=voice)
    left = await _conversation_left(fake_asterisk, app, tts)
    assert left == []
    assert answers and answers[-1].endswith("Hi there.")


async def test_a_traced_conversation_leaves_no_cycle(
    fake_asterisk: FakeAsterisk, tmp_path: Path, no_collector: None
) -> None:
    """The tracer subscribes every call's pipeline with a handler that holds the call
    (its turn spans are the call's children): let go of with the other handlers."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from voxtra.tracing import instrument

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    clock = MonotonicClock()
    tts = ScriptedTTS(clock, ms_per_char=1, first_byte=0)
    app = fake_app(tmp_path, "garbage-traced", voice=_voice(tts, clock))
    instrument(app, tracer_provider=provider)
    left = await _conversation_left(fake_asterisk, app, tts)
    assert left == []
    names = [span.name for span in exporter.get_finished_spans()]
    assert "voxtra.call" in names and "voxtra.turn" in names
