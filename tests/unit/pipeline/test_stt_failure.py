"""An STT stream that fails after the caller's end of speech, before its final: the
caller hears the fallback line at once and the next turn is answered on a new stream.
Scripted providers, virtual clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio

from voxtra.pipeline.events import PipelineEvent, ProviderErrorEvent
from voxtra.pipeline.pipeline import VoicePipeline
from voxtra.pipeline.testing import MemoryMediaIO, tone_frames
from voxtra.providers.base import Transcript

from .doubles import EnergyVAD, Reply, ScriptedLLM, ScriptedSTT, ScriptedSTTStream, ScriptedTTS

FALLBACK = "Sorry, could you say that again?"


class DroppedStream(ScriptedSTTStream):
    """Takes the end of speech, then its socket drops: no final, the reader fails."""

    dropped = False

    async def end_of_speech(self) -> None:
        self.dropped = True
        await self._send.send(Transcript("when", is_final=False))

    async def transcripts(self) -> AsyncIterator[Transcript]:
        async with self._recv:
            async for transcript in self._recv:
                yield transcript
                if self.dropped:
                    raise ConnectionError("stt socket dropped")


class DroppingSTT(ScriptedSTT):
    """Its first stream drops after the first end of speech; later ones work."""

    name = "dropping-stt"

    async def stream(self) -> ScriptedSTTStream:
        s = ScriptedSTTStream(self) if self.streams else DroppedStream(self)
        self.streams.append(s)
        return s


async def test_a_stream_lost_before_its_final_gets_the_fallback_at_once() -> None:
    media = MemoryMediaIO()
    clock = media.clock
    stt = DroppingSTT(["when are you open"], clock)
    tts = ScriptedTTS(clock)
    p = VoicePipeline(
        stt, ScriptedLLM([Reply(["At nine."])], clock), tts, EnergyVAD(), fallback_text=FALLBACK
    )
    events: list[PipelineEvent] = []
    p.on_event(events.append)

    async def caller() -> None:
        media.inject(tone_frames(600, level_db=-15))  # ends 1.18 s (600 ms of silence)
        await media.wait_until(lambda: len(tts.requests) == 1 and not p.speaking, 10)
        media.inject(tone_frames(600, level_db=-15))  # the question again
        await media.wait_until(lambda: len(p.metrics) == 1 and media.queued_ms == 0, 10)
        media.hangup()

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            await p.run(media, clock=clock)

    (said_at, said), (_, answer) = tts.requests
    assert said == FALLBACK and answer == "At nine."
    # Right after the failure (1.2 s), not after stt_timeout's 5 s of silence.
    assert said_at < 1.3
    errors = [e for e in events if isinstance(e, ProviderErrorEvent)]
    assert [(e.stage, e.timed_out) for e in errors] == [("stt", False)]
    assert [m.content for m in p.agent.history if m.role == "user"] == ["when are you open"]


class DroppedSecondStream(DroppedStream):
    """The first end of speech is answered; the second one's socket drops."""

    async def end_of_speech(self) -> None:
        if self.owner.finals:
            await ScriptedSTTStream.end_of_speech(self)
        else:
            await DroppedStream.end_of_speech(self)


class LaterDroppingSTT(ScriptedSTT):
    name = "dropping-stt"

    async def stream(self) -> ScriptedSTTStream:
        s = ScriptedSTTStream(self) if self.streams else DroppedSecondStream(self)
        self.streams.append(s)
        return s


async def test_an_answer_paused_for_a_caller_whose_stream_drops_stops_at_once() -> None:
    """The caller speaks over the answer (300 ms: maybe a backchannel, the answer
    pauses) and the stream drops before that utterance's final: the answer is cut at
    the pause and the fallback follows, instead of 6.3 s of silence (the wait for a
    transcript) before the cut."""
    media = MemoryMediaIO()
    clock = media.clock
    stt = LaterDroppingSTT(["when are you open"], clock)
    tts = ScriptedTTS(clock)
    long = "We open at nine on weekdays and at ten on Saturdays, but never on Sundays."
    p = VoicePipeline(
        stt, ScriptedLLM([Reply([long])], clock), tts, EnergyVAD(), fallback_text=FALLBACK
    )

    async def caller() -> None:
        media.inject(tone_frames(600, level_db=-15))
        await media.wait_until(lambda: media.played_ms >= 1000, 10)
        media.inject(tone_frames(300, level_db=-15))
        await media.wait_until(lambda: tts.requests[-1][1] == FALLBACK, 20)
        await media.wait_until(lambda: not p.speaking, 10)
        media.hangup()

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            await p.run(media, clock=clock)

    onset = media.flushes[0]
    *answer, (said_at, said) = tts.requests
    assert " ".join(text for _, text in answer) == long and said == FALLBACK
    assert said_at - onset < 1.5  # the utterance's end (0.9 s after its onset) + 20 ms
    assert p.metrics[0].interrupted


class EndedStream(ScriptedSTTStream):
    """Takes the end of speech, gives a partial, then the service closes the stream
    normally: the transcripts end without an error, and without the final."""

    async def end_of_speech(self) -> None:
        await self._send.send(Transcript("when", is_final=False))
        self._send.close()


class EndingSTT(ScriptedSTT):
    """Its first stream ends cleanly after the first end of speech; later ones work."""

    name = "ending-stt"

    async def stream(self) -> ScriptedSTTStream:
        s = ScriptedSTTStream(self) if self.streams else EndedStream(self)
        self.streams.append(s)
        return s


async def test_a_stream_ended_before_its_final_gets_the_fallback_at_once() -> None:
    """A clean end is no final either: the fallback comes at once (it came after
    stt_timeout's 5 s, reported as a hung STT), and the question said again right after
    it, while the stream reopens, is answered on the one new stream (the watchdog's
    cancel at 6.2 s used to close that new stream too: a third was opened)."""
    media = MemoryMediaIO()
    clock = media.clock
    stt = EndingSTT(["when are you open"], clock)
    tts = ScriptedTTS(clock)
    p = VoicePipeline(
        stt, ScriptedLLM([Reply(["At nine."])], clock), tts, EnergyVAD(), fallback_text=FALLBACK
    )
    events: list[PipelineEvent] = []
    p.on_event(events.append)

    async def caller() -> None:
        media.inject(tone_frames(600, level_db=-15))  # ends 1.18 s (600 ms of silence)
        await media.wait_until(lambda: len(tts.requests) == 1 and not p.speaking, 10)
        media.inject(tone_frames(600, level_db=-15))  # the question again
        await media.wait_until(lambda: len(p.metrics) == 1 and media.queued_ms == 0, 10)
        media.hangup()

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            await p.run(media, clock=clock)

    (said_at, said), (_, answer) = tts.requests
    assert said == FALLBACK and answer == "At nine."
    assert said_at < 1.3  # right after the stream ended (1.2 s), not at 6.2 s
    errors = [e for e in events if isinstance(e, ProviderErrorEvent)]
    assert [(e.stage, e.timed_out) for e in errors] == [("stt", False)]
    assert len(stt.streams) == 2 and stt.streams[1].frames > 0
    assert [m.content for m in p.agent.history if m.role == "user"] == ["when are you open"]
