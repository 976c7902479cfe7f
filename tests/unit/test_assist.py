"""Agent assist against FakeAsterisk: where its snoops sit and which way they point, each
side's speech transcribed under its own label, a whisper reaching one side only, and
nothing of it left after the block, a hang-up or the app's stop (who hears what is
measured with real phones in tests/integration/test_assist_asterisk.py)."""

from __future__ import annotations

import asyncio
import importlib.util
import math
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from fake_apps import routed_app

from voxtra import CallSession, VoxtraApp
from voxtra.calls.assist import AgentAssist, AssistError, AssistTranscript, Suggestion
from voxtra.errors import PipelineNotConfigured
from voxtra.media.g711 import pcm16_to_ulaw, ulaw_to_pcm16
from voxtra.pipeline.io import MonotonicClock
from voxtra.testing import FakeAsterisk
from voxtra.testing.doubles import EnergyVAD, ScriptedSTT, ScriptedTTS
from voxtra.testing.fake_asterisk.calls import FakeCall

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

Handler = Callable[[CallSession], Awaitable[None]]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "agent_assist.py"


def make_app(tmp_path: Path, handler: Handler) -> VoxtraApp:
    return routed_app(tmp_path, "assist-tests", handler)


def tone(seconds: float, hz: float = 440.0) -> bytes:
    """A loud tone as 8 kHz u-law (the fake's wire codec): speech to an EnergyVAD."""
    n = int(8000 * seconds)
    pcm = struct.pack(
        f"<{n}h", *(int(8000 * math.sin(2 * math.pi * hz * i / 8000)) for i in range(n))
    )
    return pcm16_to_ulaw(pcm)


def loudest(ulaw: bytes) -> int:
    pcm = ulaw_to_pcm16(ulaw)
    return max((abs(s) for (s,) in struct.iter_unpack("<h", pcm)), default=0)


def live_snoops(fake: FakeAsterisk) -> list[FakeCall]:
    return [c for c in fake.channels.values() if c.kind == "snoop" and not c.ended]


def live_externals(fake: FakeAsterisk) -> list[FakeCall]:
    return [c for c in fake.channels.values() if c.kind == "external" and not c.ended]


def bridge_of(fake: FakeAsterisk, channel_id: str) -> set[str]:
    for bridge in fake.bridges.values():
        if channel_id in bridge.channels:
            return set(bridge.channels)
    return set()


async def next_final(turns: list[AssistTranscript], count: int) -> None:
    while len([t for t in turns if t.is_final]) < count:
        await asyncio.sleep(0.02)


async def test_assist_after_close_labels_each_side_whispers_to_one_and_leaves_nothing(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    clock = MonotonicClock()
    stt = ScriptedSTT(["I want to cancel", "We can offer a discount"], clock, delay=0.01)
    tts = ScriptedTTS(clock, first_byte=0.0)
    ready = asyncio.Event()
    go = asyncio.Queue[str]()
    done = asyncio.Event()
    seen: list[AssistTranscript] = []
    called: list[AssistTranscript] = []
    published: list[Suggestion] = []
    sides: dict[str, str] = {}

    async def handler(call: CallSession) -> None:
        await call.answer()
        await call.connect(ring_time=5, to="300")
        await call.close()  # caller and callee talk; the app is off the call
        app = call.app
        assert isinstance(app, VoxtraApp)
        async with app.assist(call, stt=stt, tts=tts, vad=EnergyVAD()) as assist:
            sides.update({s.label: s.channel_id for s in assist.sides.values()})
            assist.on_transcript(called.append)
            stream = assist.transcripts()
            suggestions = assist.suggestions()

            async def read() -> None:
                async for turn in stream:
                    seen.append(turn)

            reader = asyncio.ensure_future(read())
            ready.set()
            assert await go.get() == "caller spoke"
            await next_final(seen, 1)
            assert await go.get() == "callee spoke"
            await next_final(seen, 2)
            await assist.whisper("callee", "Offer the discount")
            assist.suggest("Offer the discount", to="callee", product="gold")
            published.append(await anext(suggestions))
            with pytest.raises(AssistError):
                await assist.whisper("nobody", "hello")
        await asyncio.wait_for(reader, 5)  # the block's exit ends the stream
        done.set()

    app = make_app(tmp_path, handler)
    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="200")
        await asyncio.wait_for(ready.wait(), 5)
        (callee,) = fake_asterisk.originated
        parties_bridge = bridge_of(fake_asterisk, caller.id)
        assert parties_bridge == {caller.id, callee.id}  # nobody was moved
        snoops = live_snoops(fake_asterisk)
        assert {(s.spied.id if s.spied else None, s.spy, s.whisper) for s in snoops} == {
            (caller.id, "in", "out"),
            (callee.id, "in", "out"),
        }
        for snoop in snoops:
            (other,) = bridge_of(fake_asterisk, snoop.id) - {snoop.id}
            assert fake_asterisk.channels[other].kind == "external"
        caller.send_audio(tone(0.6))
        await go.put("caller spoke")
        await fake_asterisk.wait_until(lambda: len([t for t in seen if t.is_final]) >= 1)
        callee.send_audio(tone(0.6, 880))
        await go.put("callee spoke")
        await asyncio.wait_for(done.wait(), 10)
        # The whisper went to the callee's snoop only (whisper=out: its ear).
        assert loudest(callee.audio_heard) > 0
        assert loudest(caller.audio_heard) == 0
        # Nothing of the assist is left; caller and callee still talk.
        assert not live_snoops(fake_asterisk)
        assert not live_externals(fake_asterisk)
        assert list(fake_asterisk.bridges) and all(
            set(b.channels) == {caller.id, callee.id} for b in fake_asterisk.bridges.values()
        )
        assert not caller.ended and not callee.ended
        await callee.hang_up()
        await caller.wait_ended()

    finals = [(t.speaker, t.channel_id, t.text) for t in seen if t.is_final]
    assert finals == [
        ("caller", caller.id, "I want to cancel"),
        ("callee", callee.id, "We can offer a discount"),
    ]
    assert sides == {"caller": caller.id, "callee": callee.id}
    assert any(not t.is_final and t.speaker == "caller" for t in seen)  # partials too
    assert [t.text for t in called if t.is_final] == [t[2] for t in finals]
    assert [text for _, text in tts.requests] == ["Offer the discount"]
    assert published[0].text == "Offer the discount" and published[0].to == "callee"
    assert published[0].data == {"product": "gold"} and published[0].call_id == caller.id
    assert all(s.closed for s in stt.streams) and len(stt.streams) == 2
    assert not fake_asterisk.bridges


async def test_a_party_hanging_up_ends_the_assist_and_releases_it(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    clock = MonotonicClock()
    stt = ScriptedSTT([], clock)
    started = asyncio.Event()
    holder: list[AgentAssist] = []

    async def handler(call: CallSession) -> None:
        await call.answer()

        async def assist_it() -> None:
            app = call.app
            assert isinstance(app, VoxtraApp)
            await asyncio.sleep(0.1)  # dial() below has bridged the two
            async with app.assist(call.id, stt=stt) as assist:
                holder.append(assist)
                started.set()
                async for _ in assist.transcripts():
                    pass  # ends when a party hangs up

        call.spawn(assist_it())
        result = await call.dial("PJSIP/300", timeout=5)
        assert result.ended_by == "target"

    app = make_app(tmp_path, handler)
    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="200")
        await fake_asterisk.wait_until(lambda: bool(fake_asterisk.originated))
        (callee,) = fake_asterisk.originated
        await callee.answer()
        await asyncio.wait_for(started.wait(), 5)
        (assist,) = holder
        assert {s.label: s.channel_id for s in assist.sides.values()} == {
            "caller": caller.id,
            "callee": callee.id,
        }
        assert len(live_snoops(fake_asterisk)) == 2
        await callee.hang_up()
        await asyncio.wait_for(assist.wait_ended(), 5)
        await fake_asterisk.wait_until(
            lambda: not live_snoops(fake_asterisk) and not live_externals(fake_asterisk)
        )
        with pytest.raises(PipelineNotConfigured):
            await assist.whisper("callee", "too late, and no TTS")
        await caller.wait_ended()
    assert all(s.closed for s in stt.streams)
    assert not fake_asterisk.bridges


async def test_the_app_stopping_releases_an_assist_left_open(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    opened = asyncio.Event()
    holder: list[AgentAssist] = []

    async def handler(call: CallSession) -> None:
        await call.answer()
        await call.connect(ring_time=5, to="300")
        app = call.app
        assert isinstance(app, VoxtraApp)
        assist = app.assist(call)
        await assist.start()  # never closed by the handler
        holder.append(assist)
        opened.set()
        await call.wait_ended()

    app = make_app(tmp_path, handler)
    async with fake_asterisk.serve(app):
        await fake_asterisk.incoming(extension="200")
        await asyncio.wait_for(opened.wait(), 5)
        (callee,) = fake_asterisk.originated
        await callee.answer()
        assert len(live_snoops(fake_asterisk)) >= 2
    assert holder[0].ended
    assert not live_snoops(fake_asterisk) and not live_externals(fake_asterisk)
    assert not fake_asterisk.bridges


async def test_a_call_with_nobody_else_on_it_is_an_assist_error(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    errors: list[Exception] = []

    async def handler(call: CallSession) -> None:
        await call.answer()
        app = call.app
        assert isinstance(app, VoxtraApp)
        with pytest.raises(AssistError) as raised:
            async with app.assist(call):
                pass
        errors.append(raised.value)
        with pytest.raises(AssistError):
            async with app.assist("no-such-channel"):
                pass

    app = make_app(tmp_path, handler)
    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="200")
        await caller.wait_ended()
    assert errors and "no bridge" in str(errors[0])
    assert not live_snoops(fake_asterisk)


async def test_channels_that_are_no_call_of_the_app_get_an_assist_of_their_own(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    async def handler(call: CallSession) -> None:
        await call.answer()
        await call.transfer_to("100@elsewhere")  # the channel lives on in the dialplan

    app = make_app(tmp_path, handler)
    async with fake_asterisk.serve(app):
        first = await fake_asterisk.incoming(extension="200")
        second = await fake_asterisk.incoming(extension="201")
        await first.wait_left_app()
        await second.wait_left_app()
        await fake_asterisk.wait_until(lambda: not app.active_sessions)
        assist = app.assist(first.id, sides={"agent": first.id, "customer": second.id})
        async with assist:
            assert assist.context is not None and assist.context.id == first.id
            snoops = live_snoops(fake_asterisk)
            assert {(s.spied.id if s.spied else None, s.spy, s.whisper) for s in snoops} == {
                (first.id, "in", "out"),
                (second.id, "in", "out"),
            }
            readers = assist.audio(), assist.transcripts()
        assert not live_snoops(fake_asterisk) and not live_externals(fake_asterisk)
        assert not fake_asterisk.bridges
        for reader in readers:  # ended with the assist
            assert [item async for item in reader] == []

        # A party hanging up ends it too.
        again = app.assist(first.id, sides={"agent": first.id, "customer": second.id})
        await again.start()
        await second.hang_up()
        await asyncio.wait_for(again.wait_ended(), 5)
        await fake_asterisk.wait_until(
            lambda: not live_snoops(fake_asterisk) and not live_externals(fake_asterisk)
        )
        assert not fake_asterisk.bridges
        assert not first.ended


async def test_the_agent_assist_example_coaches_the_agent_when_the_caller_cancels(
    fake_asterisk: FakeAsterisk, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = importlib.util.spec_from_file_location("agent_assist_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    clock = MonotonicClock()
    stt = ScriptedSTT(["i want to cancel my order"], clock, delay=0.01)
    tts = ScriptedTTS(clock, first_byte=0.0)
    monkeypatch.setattr(example, "STT", stt)
    monkeypatch.setattr(example, "TTS", tts)
    shown: list[Suggestion] = []
    monkeypatch.setattr(example, "show", shown.append)
    app = example.app
    app.use_app_name("assist-example")
    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="400")
        await fake_asterisk.wait_until(lambda: len(live_snoops(fake_asterisk)) == 2)
        (agent,) = fake_asterisk.originated
        assert agent.endpoint == "PJSIP/400"
        await fake_asterisk.wait_until(lambda: all(s.media_ends for s in (caller, agent)))
        caller.send_audio(tone(0.6))
        await fake_asterisk.wait_until(lambda: bool(tts.requests), timeout=10)
        await fake_asterisk.wait_until(lambda: loudest(agent.audio_heard) > 0, timeout=10)
        await caller.hang_up()
        await agent.wait_ended()
    assert [s.text for s in shown] == ["Offer the loyalty discount"]
    assert [text for _, text in tts.requests] == ["Offer the loyalty discount"]
    assert loudest(caller.audio_heard) == 0
    assert not fake_asterisk.bridges


async def test_each_sides_audio_comes_labelled_and_a_hang_up_cuts_a_whisper(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    clock = MonotonicClock()
    tts = ScriptedTTS(clock, ms_per_char=200.0, first_byte=0.0)  # a whisper of seconds
    loud: dict[str, int] = {"caller": 0, "callee": 0}
    ready = asyncio.Event()
    outcome: list[BaseException] = []

    async def handler(call: CallSession) -> None:
        await call.answer()
        await call.connect(ring_time=5, to="300")  # the agent stays on: still fine
        app = call.app
        assert isinstance(app, VoxtraApp)
        async with app.assist(call, tts=tts) as assist:
            sound = assist.audio(codec="ulaw", sample_rate=8000)
            ready.set()
            async for label, chunk in sound:
                assert chunk.sample_rate == 8000 and len(chunk.data) == 160
                loud[label] = max(loud[label], loudest(chunk.data))
                if loud["caller"] > 1000:
                    break
            try:
                await assist.whisper("callee", "a long piece of advice for the callee")
            except AssistError as exc:
                outcome.append(exc)
        await call.hangup()  # (the callee left: the caller was back with the agent)

    app = make_app(tmp_path, handler)
    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="200")
        await asyncio.wait_for(ready.wait(), 5)
        (callee,) = fake_asterisk.originated
        caller.send_audio(tone(0.4))
        await fake_asterisk.wait_until(lambda: bool(tts.requests))
        await fake_asterisk.wait_until(lambda: loudest(callee.audio_heard) > 0)
        await callee.hang_up()  # mid-whisper
        await caller.wait_ended()
    assert loud["caller"] > 1000 and loud["callee"] == 0  # the caller's tone, its label
    assert len(outcome) == 1 and "ended" in str(outcome[0])
    assert not live_snoops(fake_asterisk) and not fake_asterisk.bridges


async def test_an_assist_closed_before_it_starts_refuses_to_start_and_makes_nothing(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    # Closed first (the app stopping, or the user's close()), it went on to make its
    # snoops and media when started, and nothing released them.
    outcome: list[BaseException] = []
    done = asyncio.Event()

    async def handler(call: CallSession) -> None:
        await call.answer()
        await call.connect(ring_time=5, to="300")
        app = call.app
        assert isinstance(app, VoxtraApp)
        before = len(live_snoops(fake_asterisk))  # the call's own (connect's seat)
        assist = app.assist(call)
        await assist.close()
        try:
            await assist.start()
        except AssistError as exc:
            outcome.append(exc)
        made = len(live_snoops(fake_asterisk)) - before
        outcome.append(AssertionError(f"snoops made: {made}"))
        done.set()
        await call.hangup()

    app = make_app(tmp_path, handler)
    async with fake_asterisk.serve(app):
        await fake_asterisk.incoming(extension="200")
        await fake_asterisk.wait_until(lambda: bool(fake_asterisk.originated), timeout=5)
        (callee,) = fake_asterisk.originated
        await callee.answer()
        await asyncio.wait_for(done.wait(), 5)
    refused, snoops = outcome
    assert isinstance(refused, AssistError) and "closed before it started" in str(refused)
    assert str(snoops) == "snoops made: 0"
