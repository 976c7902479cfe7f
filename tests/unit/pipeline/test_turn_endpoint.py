"""End of turn from the transcript's shape: a partial transcript in the caller's pause
that looks finished ends the turn at once; one that stops on a digit or "um" holds the
turn through a pause longer than ``end_silence_ms``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from voxtra.media.frames import AudioChunk
from voxtra.pipeline.events import PipelineEvent, SpeechEndedEvent, UserTranscriptEvent
from voxtra.pipeline.pipeline import VoicePipeline
from voxtra.pipeline.testing import MemoryMediaIO, tone_frames
from voxtra.pipeline.turn import TurnDetector, looks_unfinished
from voxtra.providers.base import Transcript

from .doubles import EnergyVAD


class PartialStream:
    """The test says what partial to give and when; each end of speech gives the
    final it was told."""

    def __init__(self) -> None:
        self.send_q, self.recv_q = anyio.create_memory_object_stream[Transcript](10)
        self.final = ""

    async def send(self, chunk: AudioChunk) -> None:
        pass

    async def partial(self, text: str) -> None:
        await self.send_q.send(Transcript(text, is_final=False))

    async def end_of_speech(self) -> None:
        await self.send_q.send(Transcript(self.final, is_final=True))

    async def close(self) -> None:
        self.send_q.close()

    async def transcripts(self) -> AsyncIterator[Transcript]:
        async with self.recv_q:
            async for t in self.recv_q:
                yield t


class PartialSTT:
    name = "partial-stt"

    def __init__(self) -> None:
        self.s = PartialStream()

    async def stream(self) -> PartialStream:
        return self.s


async def turn_ends(
    parts: list[tuple[int, str | None, int]], final: str, partial_after_ms: int = 300
) -> list[float]:
    """The caller speaks each (ms of speech, partial given ``partial_after_ms`` into the
    following pause or None, pause ms); the times the turn ended (SpeechEndedEvent)."""
    media = MemoryMediaIO()
    stt = PartialSTT()
    stt.s.final = final
    p = VoicePipeline(stt, None, None, EnergyVAD())
    events: list[PipelineEvent] = []
    p.on_event(events.append)
    async with p.attach(media, clock=media.clock):
        for speech_ms, partial, pause_ms in parts:
            media.inject(tone_frames(speech_ms, level_db=-15))
            start = media.clock.now()
            await media.clock.sleep(speech_ms / 1000 + partial_after_ms / 1000)
            if partial is not None:
                await stt.s.partial(partial)
            await media.clock.sleep(
                max(0.0, start + (speech_ms + pause_ms) / 1000 - media.clock.now())
            )
        await media.wait_until(lambda: media.clock.now() > 8.0, 20)
        media.hangup()
    finals = [e.text for e in events if isinstance(e, UserTranscriptEvent) and e.is_final]
    assert finals == [final]
    return [e.at for e in events if isinstance(e, SpeechEndedEvent)]


async def test_a_pause_after_a_digit_does_not_end_the_turn() -> None:
    """900 ms of pause (more than end_silence_ms, 600) after "four one five"."""
    ends = await turn_ends(
        [(600, "my number is four one five", 900), (600, "four one five, two two three", 0)],
        "my number is four one five two two three",
    )
    assert len(ends) == 1 and ends[0] > 0.6 + 0.9 + 0.6  # after the second group


async def test_a_pause_after_um_does_not_end_the_turn() -> None:
    ends = await turn_ends([(600, "I would like, um", 900), (600, None, 0)], "one turn")
    assert len(ends) == 1 and ends[0] > 2.1


async def test_a_finished_question_ends_the_turn_before_end_silence() -> None:
    ends = await turn_ends([(600, "When are you open?", 0)], "When are you open?")
    # the partial came 300 ms into the pause: the turn ended then, not at 600 ms
    assert len(ends) == 1 and ends[0] < 0.6 + 0.5


async def test_without_pause_hold_the_turn_ends_on_silence_alone() -> None:
    media = MemoryMediaIO()
    stt = PartialSTT()
    p = VoicePipeline(stt, None, None, EnergyVAD(), pause_hold_ms=None)
    events: list[PipelineEvent] = []
    p.on_event(events.append)
    async with p.attach(media, clock=media.clock):
        media.inject(tone_frames(600, level_db=-15))
        await media.wait_until(lambda: media.clock.now() >= 0.9)
        await stt.s.partial("my number is four one five")
        await media.wait_until(lambda: media.clock.now() > 3.0, 20)
        media.hangup()
    ends = [e.at for e in events if isinstance(e, SpeechEndedEvent)]
    assert len(ends) == 1 and 1.1 <= ends[0] <= 1.4  # 600 ms of silence, no hold


@pytest.mark.parametrize(
    ("text", "unfinished"),
    [
        ("My number is 4-1-5", True),
        ("my number is four one five", True),
        ("I would like, um", True),
        ("I would like to", True),
        ("Is it raining in Berlin today?", False),
        ("When are you open?", False),
        ("Thanks, that's all.", False),
        ("", False),
    ],
)
def test_looks_unfinished(text: str, unfinished: bool) -> None:
    assert looks_unfinished(text) is unfinished


def test_hold_and_end_now() -> None:
    det = TurnDetector(min_speech_ms=40, end_silence_ms=200)
    for _ in range(5):
        det.feed(True, -15.0)
    det.feed(False, -70.0)
    det.hold(1000)
    assert all(det.feed(False, -70.0) is None for _ in range(40))  # 800 ms held
    det.end_now()
    assert isinstance(det.feed(False, -70.0), SpeechEndedEvent)


async def test_an_early_partial_ends_the_turn_no_sooner_than_200_ms_into_the_pause() -> None:
    """WhisperSTT decodes 100 ms into a pause so that its transcript is ready by 200 ms;
    a partial that comes sooner still waits for 200 ms of pause (a shorter one is often
    inside a sentence), and one that comes later ends the turn at once."""
    ends = await turn_ends([(600, "When are you open?", 0)], "When are you open?", 40)
    # 200 ms of silence: the frames stamped 0.60 .. 0.78 (the speech ended at 0.60)
    assert len(ends) == 1 and 0.78 - 1e-6 <= ends[0] <= 0.78 + 0.02
    det = TurnDetector(min_speech_ms=40, end_silence_ms=600)
    for _ in range(5):
        det.feed(True, -15.0)
    det.feed(False, -70.0)
    det.end_now()  # 20 ms into the pause
    assert all(det.feed(False, -70.0) is None for _ in range(8))  # up to 180 ms
    assert isinstance(det.feed(False, -70.0), SpeechEndedEvent)  # 200 ms
    det = TurnDetector(min_speech_ms=40, end_silence_ms=600, min_pause_ms=0)
    for _ in range(5):
        det.feed(True, -15.0)
    det.feed(False, -70.0)
    det.end_now()
    assert isinstance(det.feed(False, -70.0), SpeechEndedEvent)


async def test_the_latest_partial_of_a_pause_decides() -> None:
    """Deepgram sends interim results as it goes: a finished-looking one 40 ms into the
    pause, then one that stops on "for" 100 ms in. The later one holds the turn (the
    caller goes on after 700 ms); the earlier one used to end it at 200 ms."""
    media = MemoryMediaIO()
    stt = PartialSTT()
    stt.s.final = "I'd like to book a table for two"
    p = VoicePipeline(stt, None, None, EnergyVAD())
    events: list[PipelineEvent] = []
    p.on_event(events.append)
    async with p.attach(media, clock=media.clock):
        media.inject(tone_frames(600, level_db=-15))
        await media.wait_until(lambda: media.clock.now() >= 0.64, 5)
        await stt.s.partial("I'd like to book a table.")
        await media.wait_until(lambda: media.clock.now() >= 0.70, 5)
        await stt.s.partial("I'd like to book a table for")
        await media.wait_until(lambda: media.clock.now() >= 1.30, 5)
        media.inject(tone_frames(400, level_db=-15))  # "... two"
        await media.wait_until(lambda: media.clock.now() > 3.0, 10)
        media.hangup()
    ends = [e.at for e in events if isinstance(e, SpeechEndedEvent)]
    assert len(ends) == 1 and ends[0] > 1.7  # one turn, ended after "two"
    det = TurnDetector(min_speech_ms=40, end_silence_ms=600)
    for _ in range(5):
        det.feed(True, -15.0)
    det.feed(False, -70.0)
    det.end_now()
    det.hold(1200)
    assert all(det.feed(False, -70.0) is None for _ in range(50))  # 1,020 ms held
