"""The voice agent on the Twilio backend: the scenarios the Asterisk tests run
(tests/integration/test_voice_agent.py), with a phone on a Twilio Media Stream.

The app is the demo assistant on its real embedded providers (WebRTC VAD, Whisper, the
rule agent, espeak-ng), reached the way Twilio reaches it: a signed webhook, then a
bidirectional Media Stream over a real WebSocket. The phone is
:class:`~voxtra.testing.fakes.twilio.TwilioPhone`: it sends the caller's speech (the
same espeak WAVs as the Asterisk tests) as 20 ms mu-law messages in real time, plays
what the app sends in real time, and echoes marks once their audio has played. REST
calls (hang-up, transfer, originate, recordings) go through the real ``twilio`` SDK
to :class:`~voxtra.testing.fakes.twilio.FakeTwilio`. Asterisk is not involved: the
app's ARI side is FakeAsterisk (no call ever touches it).

Each test takes 5-10 s (40 s for the five, one run on a loaded 2-core box): the speech
is real time both ways, as on Asterisk, and Whisper loads once per app.
"""

from __future__ import annotations

import asyncio
import uuid
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_voice_agent import (
    BARGE_IN_BOUND_S,
    HOURS,
    STORY,
    Watch,
    assert_heard_in,
    build_assistant,
    wavs,
)

from voxtra import CallInfo, CallSession, VoxtraApp
from voxtra.media import g711
from voxtra.pipeline import AgentResponseEvent, BargeInEvent, TurnMetrics, UserTranscriptEvent
from voxtra.testing import FakeAsterisk, audio
from voxtra.testing.fakes.twilio import FakeTwilio, TwilioPhone, serve_asgi
from voxtra.twilio import TwilioBackend

__all__ = ["wavs"]  # the module's speech fixture, shared with the Asterisk tests

_LEAD_INS = (0.2, 0.11, 0.26, 0.35, 0.08, 0.44)


@dataclass
class Rig:
    app: VoxtraApp
    backend: TwilioBackend
    twilio: FakeTwilio
    watch: Watch


@pytest.fixture
async def rig(fake_asterisk: FakeAsterisk, tmp_path: Path) -> AsyncIterator[Rig]:
    """The assistant with its Twilio endpoints on loopback, and a local Twilio."""
    watch = Watch()
    async with FakeTwilio() as twilio:
        app = build_assistant(
            on_pipeline=watch.on_pipeline,
            greeting=None,
            app_name=f"voxtra-twilio-{uuid.uuid4().hex[:8]}",
            environ={},
            handler_deadline=2.0,
            spool_dir=str(tmp_path / "spool"),
            recordings_dir=str(tmp_path / "recordings"),
            twilio={
                "account_sid": twilio.account_sid,
                "auth_token": twilio.auth_token,
                "public_url": "http://127.0.0.1:1",
                "api_base_url": twilio.url,
                "from_number": "+15550001",
            },
        )
        backend = TwilioBackend(app)
        async with fake_asterisk.serve(app, timeout=60), serve_asgi(backend.asgi()) as url:
            backend.public_url = url
            try:
                yield Rig(app, backend, twilio, watch)
            finally:
                for call in list(twilio.calls.values()):
                    if call.phone is not None:
                        await call.phone.close()
                await backend.aclose()


def caller_onset(phone: TwilioPhone, tick: int) -> float:
    """When the caller's speech queued at ``tick`` became audible (seconds)."""
    pcm = np.frombuffer(g711.ulaw_to_pcm16(b"".join(phone.sent)), dtype="<i2")
    onset = audio.onset_after(pcm, 8000, phone.seconds(tick))
    assert onset is not None
    return onset


def answer_audio(
    phone: TwilioPhone, asked_at: float
) -> tuple[list[np.ndarray[Any, Any]], int, float]:
    """The one stretch of agent speech the phone played after ``asked_at`` (seconds),
    cut with a few lead-ins for pocketsphinx, and its duration."""
    samples, rate = phone.heard_pcm()
    segments = audio.active_segments(samples, rate, min_gap_ms=800)
    after = [seg for seg in segments if seg[0] > asked_at]
    assert len(after) == 1, segments
    start, end = after[0]
    tail = int((end + 0.3) * rate)
    cuts = [samples[max(0, int((start - lead) * rate)) : tail] for lead in _LEAD_INS]
    return cuts, rate, end - start


async def ask(phone: TwilioPhone, wav: Path) -> float:
    """The caller says ``wav``; when its speech began (seconds on the phone's timeline)."""
    tick = phone.say(wav)
    await phone.until_said()
    return caller_onset(phone, tick)


async def test_caller_question_is_answered_and_heard(rig: Rig, wavs: dict[str, Path]) -> None:
    watch = rig.watch
    phone = await rig.twilio.call_in(rig.backend.voice_url, to="+15550100")
    sid = phone.call.sid
    await watch.until(lambda: sid in watch.pipelines)
    await asyncio.sleep(0.5)
    asked_at = await ask(phone, wavs["hours"])
    await watch.until(lambda: len(watch.of(sid, TurnMetrics)) == 1)
    pipeline = watch.pipelines[sid]
    await watch.until(lambda: not pipeline.speaking)
    await asyncio.sleep(0.5)  # marks confirm the last frames as the phone plays them
    await phone.hangup()

    heard = [e.text for e in watch.of(sid, UserTranscriptEvent) if e.is_final]
    assert len(heard) == 1 and "opening" in heard[0].lower()
    assert [e.text for e in watch.of(sid, AgentResponseEvent)] == [HOURS]
    cuts, rate, seconds = answer_audio(phone, asked_at)
    assert 4.0 < seconds < 6.5  # espeak says HOURS in about 5 s
    await assert_heard_in(cuts, rate, HOURS)
    assert phone.marks_echoed  # played_ms came from Twilio's marks


async def test_barge_in_clears_twilio_and_trims_history(rig: Rig, wavs: dict[str, Path]) -> None:
    watch = rig.watch
    # 50 ms each way between the phone and the app, as to a nearby Twilio edge: what
    # the caller hears stops a round trip later, and the marks come back that late.
    phone = await rig.twilio.call_in(rig.backend.voice_url, latency=0.05)
    sid = phone.call.sid
    await watch.until(lambda: sid in watch.pipelines)
    pipeline = watch.pipelines[sid]
    await asyncio.sleep(0.5)
    await ask(phone, wavs["story"])
    await watch.until(lambda: pipeline.speaking)
    await asyncio.sleep(3.0)  # well into the story
    interrupted_at = await ask(phone, wavs["interrupt"])
    await watch.until(lambda: len(watch.of(sid, TurnMetrics)) == 2)
    await asyncio.sleep(0.3)
    await phone.hangup()

    barge = watch.of(sid, BargeInEvent)
    assert len(barge) == 1
    story_turn, next_turn = watch.of(sid, TurnMetrics)
    assert story_turn.interrupted and not next_turn.interrupted
    assert phone.clears >= 1  # the app told Twilio to drop what it held
    messages = [(m.role, m.content) for m in pipeline.agent.history if m.role != "system"]
    assert [r for r, _ in messages] == ["user", "assistant", "user", "assistant"]
    told = messages[1][1]
    assert told and told == barge[0].heard_text
    assert STORY.startswith(told) and len(told) < len(STORY) / 2

    samples, rate = phone.heard_pcm()
    stopped = audio.offset_after(samples, rate, interrupted_at, hold_ms=800)
    assert stopped is not None
    stop_ms = (stopped - interrupted_at) * 1000
    print(f"\ntwilio barge-in (50 ms each way): agent audio stopped {stop_ms:.0f} ms after onset")
    assert 0 < stop_ms < BARGE_IN_BOUND_S * 1000
    story_start = audio.onset_after(samples, rate, interrupted_at - 3.5)
    assert story_start is not None
    # What the pipeline says was played (Twilio's marks) matches what the phone heard.
    heard_ms = (stopped - story_start) * 1000
    print(f"played_ms {barge[0].played_ms:.0f}, the phone heard {heard_ms:.0f} ms")
    assert barge[0].played_ms == pytest.approx(heard_ms, abs=150)


async def test_concurrent_calls_keep_separate_histories(rig: Rig, wavs: dict[str, Path]) -> None:
    watch = rig.watch
    one = await rig.twilio.call_in(rig.backend.voice_url, from_="+15550111")
    two = await rig.twilio.call_in(rig.backend.voice_url, from_="+15550222")
    a, b = one.call.sid, two.call.sid
    await watch.until(lambda: {a, b} <= set(watch.pipelines))
    await asyncio.sleep(0.5)
    await asyncio.gather(ask(one, wavs["hours"]), ask(two, wavs["weather"]))
    await watch.until(lambda: all(len(watch.of(c, TurnMetrics)) == 1 for c in (a, b)))
    for sid in (a, b):
        await watch.until(lambda sid=sid: not watch.pipelines[sid].speaking)  # type: ignore[misc]
    history = {
        sid: [(m.role, m.content) for m in watch.pipelines[sid].agent.history if m.role != "system"]
        for sid in (a, b)
    }
    await asyncio.sleep(0.5)
    await one.hangup()
    await two.hangup()

    assert [r for r, _ in history[a]] == ["user", "assistant"] and history[a][1][1] == HOURS
    # the weather answer came through the tool: user, tool call, tool result, answer
    assert [r for r, _ in history[b]] == ["user", "assistant", "tool", "assistant"]
    assert "weather" in history[b][0][1].lower()
    # Each phone heard its own answer only (the hours answer is the longer one).
    assert _speech_seconds(one) > _speech_seconds(two) + 1.0


def _speech_seconds(phone: TwilioPhone) -> float:
    samples, rate = phone.heard_pcm()
    return sum(end - start for start, end in audio.active_segments(samples, rate, min_gap_ms=800))


async def test_dtmf_menu_then_transfer_by_dial_twiml(rig: Rig) -> None:
    chosen: dict[str, Any] = {}

    async def menu(call: CallSession) -> None:
        await call.answer()
        said = await call.say("For sales press one. For a person press zero.")
        chosen["said"] = said
        chosen["digits"] = await call.gather(1, first_digit_timeout=10)
        if chosen["digits"] == "0":
            await call.transfer_to("+15550123")

    async def dispatch(info: CallInfo) -> Any:
        # Tried before the assistant's catch-all route: the called number (To) decides.
        return menu if info.called_number == "+15550200" else None

    rig.app.dispatcher(dispatch)
    phone = await rig.twilio.call_in(rig.backend.voice_url, to="+15550200")
    await rig.watch.until(lambda: "said" in chosen, timeout=20)
    await phone.press("0")
    await phone.wait_ended(10)

    assert chosen["digits"] == "0"
    samples, rate = phone.heard_pcm()
    segments = audio.active_segments(samples, rate, min_gap_ms=800)
    assert segments and 2.0 < segments[0][1] - segments[0][0] < 5.0  # the prompt, heard
    assert (
        phone.call.twiml_updates and "<Number>+15550123</Number>" in (phone.call.twiml_updates[0])
    )


async def test_originated_call_is_answered_recorded_and_delivered(
    rig: Rig, wavs: dict[str, Path]
) -> None:
    rig.twilio.script("+15550300", "answer")
    watch = rig.watch
    recorded: dict[str, Any] = {}

    async def agent(call: CallSession) -> None:
        recorded["name"] = await call.record_start(f"twilio-{call.id}")
        await call.converse()

    session = await rig.backend.originate("+15550300", handler=agent, timeout=10)
    phone = await rig.twilio.answered.get()
    await watch.until(lambda: session.id in watch.pipelines)
    await asyncio.sleep(0.5)
    await ask(phone, wavs["hours"])
    await watch.until(lambda: len(watch.of(session.id, TurnMetrics)) == 1)
    await watch.until(lambda: not watch.pipelines[session.id].speaking)
    await asyncio.sleep(0.5)
    await phone.hangup()
    assert rig.app.recordings is not None
    meta = await rig.app.recordings.wait_delivered(recorded["name"], timeout=20)

    assert str(session.direction) == "outbound"
    assert [e.text for e in watch.of(session.id, AgentResponseEvent)] == [HOURS]
    assert meta.call_id == session.id and meta.end_reason == "hangup"
    caller, app_side = _channels(Path(rig.app.settings.recordings_dir), recorded["name"])
    # Twilio's dual-channel recording: the question on one side, the answer on the other.
    assert audio.active_segments(caller, 8000, min_gap_ms=800)
    assert audio.active_segments(app_side, 8000, min_gap_ms=800)


def _channels(folder: Path, name: str) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    [path] = list(folder.rglob(f"{name}*.wav"))
    with wave.open(str(path)) as reader:
        assert reader.getnchannels() == 2
        frames = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    return frames[0::2].copy(), frames[1::2].copy()
