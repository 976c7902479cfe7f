"""Backchannels ("mm-hmm", "yeah") while the agent speaks do not interrupt it; a real
interruption still stops it at the onset. Scripted providers, virtual clock."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from voxtra.pipeline.events import BargeInEvent, PipelineEvent, UserTranscriptEvent
from voxtra.pipeline.pipeline import VoicePipeline
from voxtra.pipeline.testing import MemoryMediaIO, tone_frames
from voxtra.pipeline.turn import is_backchannel, is_echo

from .doubles import EnergyVAD, Reply, ScriptedLLM, ScriptedSTT, ScriptedTTS, words

LONG = (
    "Our opening hours are nine to five on weekdays. On Saturdays we open at ten. "
    "On Sundays we are closed, but the online shop stays open all day and night."
)


async def converse(
    finals: list[str], caller_ms: int, **options: Any
) -> tuple[MemoryMediaIO, VoicePipeline, ScriptedLLM, list[PipelineEvent]]:
    """The caller asks, and 1.5 s into the (long) answer says something ``caller_ms``
    long, which the STT hears as the second of ``finals``."""
    media = MemoryMediaIO()
    stt = ScriptedSTT(finals, media.clock)
    llm = ScriptedLLM([Reply(words(LONG)), Reply(["Sure."])], media.clock)
    tts = ScriptedTTS(media.clock)
    p = VoicePipeline(stt, llm, tts, EnergyVAD(), **options)
    p.tts_requests = tts.requests  # type: ignore[attr-defined]
    events: list[PipelineEvent] = []
    p.on_event(events.append)

    async def caller() -> None:
        media.inject(tone_frames(600, level_db=-15))
        await media.wait_until(lambda: media.played_ms >= 1500, 20)
        media.inject(tone_frames(caller_ms, level_db=-15))
        await media.wait_until(lambda: media.clock.now() > 25, 40)
        media.hangup()

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        await p.run(media, clock=media.clock)
    return media, p, llm, events


def of(events: list[PipelineEvent], kind: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


async def test_a_backchannel_pauses_the_answer_which_then_plays_on_whole() -> None:
    media, p, llm, events = await converse(["hours", "mm-hmm"], 300)
    assert of(events, BargeInEvent) == []
    # The audio stopped at the onset (one flush), and every frame of the answer played.
    assert len(media.flushes) == 1
    sentences = [text for _, text in p.tts_requests]  # type: ignore[attr-defined]
    assert " ".join(sentences) == LONG
    assert media.played_audio_ms() == sum(int(len(t) * 50) // 20 * 20 for t in sentences)
    assert [m.content for m in p.agent.history if m.role == "assistant"] == [LONG]
    assert len(llm.calls) == 1  # "mm-hmm" was not answered
    assert [m.content for m in p.agent.history if m.role == "user"] == ["hours"]
    assert not p.metrics[0].interrupted


async def test_a_real_interruption_stops_the_agent_at_the_onset() -> None:
    media, p, llm, events = await converse(["hours", "stop"], 300)
    (barge,) = of(events, BargeInEvent)
    onset = barge.at
    assert media.flushes[0] - onset <= 0.02 + 1e-9  # stopped in the onset's frame
    assert 1500 <= barge.played_ms <= 1700
    assert not any(f.at > onset + 0.02 for f in media.played if f.at < media.flushes[0] + 1)
    assistant = [m.content for m in p.agent.history if m.role == "assistant"]
    assert assistant == [barge.heard_text, "Sure."]  # trimmed to what was heard
    assert [m.content for m in p.agent.history if m.role == "user"] == ["hours", "stop"]
    assert len(llm.calls) == 2  # and "stop" is answered


async def test_speech_longer_than_a_backchannel_interrupts_before_its_transcript() -> None:
    _media, p, _llm, events = await converse(["hours", "yeah yeah"], 1000, backchannel_max_ms=700)
    (barge,) = of(events, BargeInEvent)
    finals = [e for e in of(events, UserTranscriptEvent) if e.is_final and e.text == "yeah yeah"]
    assert finals and barge.at < finals[0].at  # decided by its length, not its words
    assert p.metrics[0].interrupted


async def test_backchannels_none_interrupts_on_every_onset() -> None:
    _media, p, llm, events = await converse(["hours", "mm-hmm"], 300, backchannels=None)
    assert len(of(events, BargeInEvent)) == 1 and p.metrics[0].interrupted
    assert len(llm.calls) == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Mm-hmm.", True),
        ("Yeah.", True),
        ("okay", True),
        ("Uh-huh, right.", True),
        ("I see.", True),
        ("", True),
        ("stop", False),
        ("no", False),
        ("wait, what about Paris?", False),
        ("yeah, but what about Paris", False),
        ("okay okay okay okay", False),  # four words or more are never one
    ],
)
def test_is_backchannel(text: str, expected: bool) -> None:
    assert is_backchannel(text) is expected


def test_is_echo() -> None:
    agent = "Once upon a time, a small robot lived in a telephone exchange."
    assert is_echo("a small robot", agent)
    assert not is_echo("robot", agent)  # one word: could be the caller
    assert not is_echo("what robot", agent)


async def test_a_yes_over_an_application_say_is_still_its_answer() -> None:
    """Driven by the application (say, then listen), a "yes" said over the question
    does not cut it off, and listen() still returns it."""
    media = MemoryMediaIO()
    stt = ScriptedSTT(["yes"], media.clock)
    p = VoicePipeline(stt, None, ScriptedTTS(media.clock), EnergyVAD())
    async with p.attach(media, clock=media.clock):

        async def caller() -> None:
            await media.wait_until(lambda: media.played_ms >= 1000, 10)
            media.inject(tone_frames(300, level_db=-15))

        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            result = await p.say(LONG)
        heard = await p.listen(timeout=5)
        media.hangup()
    assert not result.interrupted and result.heard_text == LONG
    assert heard is not None and heard.text == "yes"
