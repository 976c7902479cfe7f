"""An STT that ends utterances itself: its final comes in the caller's pause, before the
pipeline's own end of turn (DeepgramSTT: Deepgram's endpointing, 300 ms, against
``end_silence_ms``' 600 or the 1.2 s a transcript that looks unfinished holds the turn).
Scripted providers, virtual clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import anyio

from voxtra.media.frames import AudioChunk
from voxtra.pipeline.events import (
    BargeInEvent,
    PipelineEvent,
    SpeechEndedEvent,
    SpeechStartedEvent,
    UserTranscriptEvent,
)
from voxtra.pipeline.pipeline import VoicePipeline
from voxtra.pipeline.testing import MemoryMediaIO, VirtualClock, tone_frames
from voxtra.providers.base import Transcript

from .doubles import EnergyVAD, Reply, ScriptedLLM, ScriptedTTS, words


class EndpointingStream:
    """Gives what the test sends it; an end of speech gets the next of ``finals``, or an
    empty final, as Deepgram answers a ``Finalize`` after its own final."""

    def __init__(self) -> None:
        self.send_q, self.recv_q = anyio.create_memory_object_stream[Transcript](10)
        self.finals: list[str] = []
        self.ends = 0

    async def send(self, chunk: AudioChunk) -> None:
        pass

    async def end_of_speech(self) -> None:
        self.ends += 1
        await self.send_q.send(Transcript(self.finals.pop(0) if self.finals else "", True))

    async def close(self) -> None:
        self.send_q.close()

    async def transcripts(self) -> AsyncIterator[Transcript]:
        async with self.recv_q:
            async for t in self.recv_q:
                yield t


class EndpointingSTT:
    name = "endpointing-stt"

    def __init__(self) -> None:
        self.s = EndpointingStream()

    async def stream(self) -> EndpointingStream:
        return self.s


async def test_a_final_in_the_pause_ends_the_turn() -> None:
    """The caller pauses after "when do you open, um" (the turn is held for 1.2 s);
    300 ms into the pause the STT gives its final. The turn ends with it: answered once,
    with no "Sorry, I did not catch that" after (the end of speech sent at 1.8 s drew an
    empty final, taken for a caller not understood); its metrics time that turn (they
    had no end of speech); and the caller, going on over the answer, interrupts it (the
    turn detector still counted the first utterance, so there was no onset)."""
    media = MemoryMediaIO()
    clock = media.clock
    stt = EndpointingSTT()
    stt.s.finals = ["on Sundays too?"]
    llm = ScriptedLLM(
        [Reply(words("We open at nine on weekdays and at ten on Saturdays.")), Reply(["No."])],
        clock,
    )
    tts = ScriptedTTS(clock)
    p = VoicePipeline(stt, llm, tts, EnergyVAD())
    events: list[PipelineEvent] = []
    p.on_event(events.append)

    async def caller() -> None:
        media.inject(tone_frames(600, level_db=-15))
        await media.wait_until(lambda: clock.now() >= 0.7, 5)
        await stt.s.send_q.send(Transcript("when do you open, um", False))
        await media.wait_until(lambda: clock.now() >= 0.9, 5)
        await stt.s.send_q.send(Transcript("when do you open", True, 0.9))
        await media.wait_until(lambda: media.played_ms >= 300, 5)
        media.inject(tone_frames(1000, level_db=-15))  # "... on Sundays too?"
        await media.wait_until(lambda: clock.now() > 8.0, 20)
        media.hangup()

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            await p.run(media, clock=clock)

    ends = [e.at for e in events if isinstance(e, SpeechEndedEvent)]
    assert ends[0] < 1.0  # with the final (0.9 s), not 1.2 s into the pause
    assert len([e for e in events if isinstance(e, SpeechStartedEvent)]) == 2
    assert [e.heard_text for e in events if isinstance(e, BargeInEvent)] == ["We open"]
    assert [t for _, t in tts.requests] == [
        "We open at nine on weekdays and at ten on Saturdays.",
        "No.",
    ]
    assert stt.s.ends == 1  # only the second utterance's end of speech was sent
    first = p.metrics[0]
    assert first.interrupted
    assert first.speech_end is not None and first.stt_final is not None
    assert first.stt_ms == 0.0  # the STT detected that end of speech, with its final
    assert [(m.role, m.content) for m in p.agent.history] == [
        ("user", "when do you open"),
        ("assistant", "We open"),
        ("user", "on Sundays too?"),
        ("assistant", "No."),
    ]


class DecodingStream(EndpointingStream):
    """An STT that decodes a whole utterance at its end of speech (Whisper,
    pocketsphinx): each final comes ``decode_s`` after the end of speech asked for it."""

    def __init__(self, clock: VirtualClock, decode_s: float) -> None:
        super().__init__()
        self.clock, self.decode_s = clock, decode_s
        self.decoding: set[asyncio.Task[None]] = set()

    async def end_of_speech(self) -> None:
        self.ends += 1
        text = self.finals.pop(0) if self.finals else ""

        async def decode() -> None:
            await self.clock.sleep(self.decode_s)
            await self.send_q.send(Transcript(text, True))

        task = asyncio.ensure_future(decode())
        self.decoding.add(task)
        task.add_done_callback(self.decoding.discard)


async def test_a_late_final_of_the_last_utterance_does_not_end_the_next() -> None:
    """The caller says one thing, pauses (its end of speech goes to the STT, which takes
    0.8 s to decode it), then a short "yes" and a pause. The first utterance's final
    lands in that second pause: it is the first one's, owed, not the STT ending "yes".
    Taken for that, "yes" was never sent to the STT (no end of speech for it) and never
    heard."""
    media = MemoryMediaIO()
    clock = media.clock
    stt = EndpointingSTT()
    stt.s = DecodingStream(clock, decode_s=0.8)
    stt.s.finals = ["what time do you open", "yes"]
    llm = ScriptedLLM([Reply(["At nine."]), Reply(["Good."])], clock)
    p = VoicePipeline(stt, llm, ScriptedTTS(clock), EnergyVAD())
    heard: list[str] = []
    p.on_event(lambda e: heard.append(e.text) if _final_text(e) else None)

    async def caller() -> None:
        media.inject(tone_frames(600, level_db=-15))  # "what time do you open"
        await media.wait_until(lambda: stt.s.ends == 1, 5)  # its end of speech (1.2 s)
        await media.wait_until(lambda: clock.now() >= 1.5, 5)
        media.inject(tone_frames(300, level_db=-15))  # "yes", over before 2.0 s
        await media.wait_until(lambda: clock.now() > 6.0, 20)
        media.hangup()

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            await p.run(media, clock=clock)

    assert stt.s.ends == 2  # "yes" went to the STT too
    assert heard == ["what time do you open", "yes"]


def _final_text(event: PipelineEvent) -> bool:
    return isinstance(event, UserTranscriptEvent) and event.is_final and bool(event.text)
