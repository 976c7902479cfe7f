"""Turn taking in the voice pipeline: never silent after a caller who was not understood."""

from __future__ import annotations

import anyio

from voxtra.pipeline.events import PipelineEvent, TurnMetrics, UserTranscriptEvent
from voxtra.pipeline.pipeline import NOT_UNDERSTOOD, VoicePipeline
from voxtra.pipeline.testing import MemoryMediaIO, tone_frames

from .doubles import EnergyVAD, Reply, ScriptedLLM, ScriptedSTT, ScriptedTTS, words


def build(
    media: MemoryMediaIO, finals: list[str], replies: list[Reply], **kw: object
) -> tuple[VoicePipeline, ScriptedSTT, ScriptedLLM, ScriptedTTS, list[PipelineEvent]]:
    stt = ScriptedSTT(finals, media.clock)
    llm = ScriptedLLM(replies, media.clock)
    tts = ScriptedTTS(media.clock)
    p = VoicePipeline(stt, llm, tts, EnergyVAD(), **kw)  # type: ignore[arg-type]
    events: list[PipelineEvent] = []
    p.on_event(events.append)
    return p, stt, llm, tts, events


async def test_speech_with_an_empty_transcript_is_answered_not_ignored() -> None:
    """The caller spoke (600 ms), the STT recognised nothing (empty final): the agent
    says it did not understand and asks again, then answers the repeated question.
    A 100 ms click with an empty transcript stays unanswered."""
    media = MemoryMediaIO()
    # ScriptedSTT answers "" once its finals run out: the click's and the mumble's.
    p, stt, llm, tts, events = build(media, [], [Reply(words("At nine."))])

    async def caller() -> None:
        media.inject(tone_frames(100, level_db=-15))  # a click: too short to answer
        await media.wait_until(lambda: media.clock.now() > 1.5, 10)
        media.inject(tone_frames(600, level_db=-15))  # a mumble nothing recognised
        await media.wait_until(lambda: len(tts.requests) == 1, 10)
        await media.wait_until(lambda: not p.speaking, 10)
        stt.finals.append("when are you open")
        media.inject(tone_frames(600, level_db=-15))  # the question again
        await media.wait_until(lambda: bool(p.metrics) and media.queued_ms == 0, 10)
        media.hangup()

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        await p.run(media, clock=media.clock)

    assert [t for _, t in tts.requests] == [NOT_UNDERSTOOD, "At nine."]
    assert "again?" in NOT_UNDERSTOOD
    assert [m.content for m in p.agent.history if m.role == "user"] == ["when are you open"]
    assert len(llm.calls) == 1  # the empty transcript never reached the LLM
    finals = [e.text for e in events if isinstance(e, UserTranscriptEvent) and e.is_final]
    assert finals == ["when are you open"]  # event readers never see empty finals
    assert len([e for e in events if isinstance(e, TurnMetrics)]) == 1


async def test_not_understood_text_none_keeps_quiet() -> None:
    media = MemoryMediaIO()
    # No finals: ScriptedSTT answers "" (a final of [""] made its end_of_speech raise,
    # a failed STT, which this test then passed on only while that was not answered).
    p, _stt, _llm, tts, _events = build(media, [], [], not_understood_text=None)

    async def caller() -> None:
        media.inject(tone_frames(600, level_db=-15))
        await media.wait_until(lambda: media.clock.now() > 4.0, 10)
        media.hangup()

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        await p.run(media, clock=media.clock)
    assert tts.requests == []
