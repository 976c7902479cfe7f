"""The agent's own audio coming back on the caller's line never counts as the caller:
the echo gate follows the level of what the agent played (per 20 ms), with the line's
echo return learnt as the agent starts, and holds for the echo's tail."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence

import anyio
import numpy as np

from voxtra.media import g711
from voxtra.media.frames import AudioChunk, Codec
from voxtra.pipeline.events import (
    AgentResponseEvent,
    BargeInEvent,
    PipelineEvent,
    SpeechStartedEvent,
    UserTranscriptEvent,
)
from voxtra.pipeline.pipeline import VoicePipeline
from voxtra.pipeline.testing import MemoryMediaIO, tone_frames
from voxtra.pipeline.turn import TurnDetector

from .doubles import EnergyVAD, Reply, ScriptedLLM, ScriptedSTT


def feed(
    det: TurnDetector, frames: Sequence[tuple[float, float | None]], *, agent: bool
) -> list[object]:
    """(line level, agent level) per 20 ms frame, all VAD speech; the events."""
    events: list[object] = []
    for energy, agent_level in frames:
        ev = det.feed(True, energy, agent_speaking=agent, agent_level_db=agent_level)
        if ev is not None:
            events.append(ev)
    return events


def test_echo_that_gets_louder_with_the_agent_is_not_the_caller() -> None:
    """The agent starts quietly (-26 dBFS) and gets 14 dB louder; its echo, 12 dB down,
    follows. A fixed echo level learnt at the start let the louder echo through."""
    quiet, loud = [(-38.0, -26.0)] * 20, [(-24.0, -12.0)] * 50
    assert feed(TurnDetector(), quiet + loud, agent=True) == []
    old = TurnDetector()  # without the agent's level: the former gate
    assert [type(e) for e in feed(old, [(e, None) for e, _ in quiet + loud], agent=True)] == [
        SpeechStartedEvent
    ]


def test_the_caller_still_barges_in_over_the_echo() -> None:
    det = TurnDetector()
    echo = [(-24.0, -12.0)] * 20
    caller = [(-8.0, -12.0)] * 5  # the caller, louder than the agent's echo by 16 dB
    assert [type(e) for e in feed(det, echo + caller, agent=True)] == [SpeechStartedEvent]


def test_the_echo_tail_after_the_agent_stopped_is_not_a_turn() -> None:
    det = TurnDetector()
    feed(det, [(-24.0, -12.0)] * 20, agent=True)  # learns the echo return
    # The agent's last audio played; its echo still arrives for a few frames.
    assert feed(det, [(-24.0, -12.0)] * 8, agent=False) == []
    # Without recent agent audio the same level is the caller.
    assert [type(e) for e in feed(det, [(-24.0, None)] * 5, agent=False)] == [SpeechStartedEvent]


class SwellTTS:
    """A 300 Hz tone whose level steps from -26 to -12 dBFS after 400 ms."""

    name = "swell"
    sample_rate = 8000

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        t = np.arange(800) / 8000
        for i in range(30):  # 3 s in 100 ms chunks
            level = -26.0 if i < 4 else -12.0
            amp = 32767 * math.sqrt(2) * 10 ** (level / 20)
            pcm = (amp * np.sin(2 * np.pi * 300 * t)).astype("<i2").tobytes()
            yield AudioChunk(pcm, 8000, Codec.PCM16)
            await anyio.lowlevel.checkpoint()


class EchoLine(MemoryMediaIO):
    """The caller's line carries the agent's own audio back, 12 dB down, 40 ms late."""

    def __init__(self) -> None:
        super().__init__()
        self.out: list[bytes | None] = []

    async def frames(self) -> AsyncIterator[AudioChunk]:
        async for frame in super().frames():
            now = self.clock.now()
            played = (
                self.played[-1] if self.played and abs(self.played[-1].at - now) < 1e-9 else None
            )
            self.out.append(g711.decode(played.chunk.data, played.chunk.codec) if played else None)
            echo = self.out[-3] if len(self.out) >= 3 else None
            x = np.frombuffer(g711.decode(frame.data, frame.codec), dtype="<i2").astype(float)
            if echo is not None and len(echo) == len(x) * 2:
                x = x + np.frombuffer(echo, dtype="<i2") * 10 ** (-12 / 20)
            pcm = np.clip(x, -32768, 32767).astype("<i2").tobytes()
            yield AudioChunk(g711.pcm16_to_ulaw(pcm), 8000, Codec.ULAW)


async def test_the_agents_echo_neither_interrupts_it_nor_starts_a_turn() -> None:
    media = EchoLine()
    stt = ScriptedSTT([], media.clock)
    p = VoicePipeline(
        stt, ScriptedLLM([Reply(["Hi."])], media.clock), SwellTTS(), EnergyVAD(), greeting="x"
    )
    events: list[PipelineEvent] = []
    p.on_event(events.append)

    async def caller() -> None:
        await media.wait_until(lambda: media.clock.now() > 4.5, 10)  # greeting + echo tail
        media.hangup()

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        await p.run(media, clock=media.clock)
    assert media.played_audio_ms() == 3000  # the whole greeting played
    assert [e for e in events if isinstance(e, SpeechStartedEvent | BargeInEvent)] == []


async def test_the_caller_over_the_echo_still_interrupts() -> None:
    media = EchoLine()
    stt = ScriptedSTT([], media.clock)
    p = VoicePipeline(
        stt, ScriptedLLM([Reply(["Hi."])], media.clock), SwellTTS(), EnergyVAD(), greeting="x"
    )
    events: list[PipelineEvent] = []
    p.on_event(events.append)

    async def caller() -> None:
        await media.wait_until(lambda: media.played_ms >= 1500, 10)
        media.inject(tone_frames(400, freq=500, level_db=-6))
        await media.wait_until(lambda: media.clock.now() > 4.0, 10)
        media.hangup()

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        await p.run(media, clock=media.clock)
    barge = [e for e in events if isinstance(e, BargeInEvent)]
    assert len(barge) == 1 and 1500 <= barge[0].played_ms <= 1700


async def test_a_caller_heard_as_echo_at_the_agents_start_is_heard_after_it() -> None:
    """The caller talks over the start of the agent's greeting, quieter than the gate
    (learnt as echo return: 0 dB), and keeps quiet until it ends; the next question is
    heard. The echo tail was counted on the playout position, which stands still once
    nothing plays: the greeting's last 200 ms stayed "just played" for the rest of the
    call and the gate, agent level + 0 dB + 10 dB, kept the caller deaf (no onset, no
    transcript, no turn: found with the assistant on FakeAsterisk)."""
    media = MemoryMediaIO()
    stt = ScriptedSTT(["When do you open?"], media.clock)
    llm = ScriptedLLM([Reply(["At nine."])], media.clock)
    p = VoicePipeline(stt, llm, SwellTTS(), EnergyVAD(), greeting="x")
    events: list[PipelineEvent] = []
    p.on_event(events.append)

    async def caller() -> None:
        await media.wait_until(lambda: media.played_ms >= 60, 10)
        media.inject(tone_frames(1500, freq=500, level_db=-20))  # over the greeting
        await media.wait_until(lambda: media.clock.now() > 4.0, 10)  # greeting over
        media.inject(tone_frames(1000, freq=500, level_db=-20))  # the question
        await media.wait_until(lambda: media.clock.now() > 7.0, 10)
        media.hangup()

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller)
        await p.run(media, clock=media.clock)
    assert media.played_audio_ms() >= 3000  # the greeting played through
    started = [e for e in events if isinstance(e, SpeechStartedEvent)]
    assert len(started) == 1 and started[0].at > 4.0
    finals = [e.text for e in events if isinstance(e, UserTranscriptEvent) and e.is_final]
    assert finals == ["When do you open?"]
    assert [e.text for e in events if isinstance(e, AgentResponseEvent)] == ["At nine."]


def test_a_caller_taken_for_echo_in_one_answer_can_interrupt_the_next() -> None:
    """The caller talks over an answer's first 200 ms (-20 dBFS under an agent at -26:
    learnt as a 0 dB echo return). The next answer, on a line that carries its echo
    20 dB down, learns its own return: the caller at the agent's level interrupts it.
    The first return was kept for the call, so the gate stayed at the agent's level
    plus 10 dB for every later answer."""
    det = TurnDetector()
    assert feed(det, [(-20.0, -26.0)] * 10, agent=True) == []  # taken for echo
    feed(det, [(-100.0, None)] * 50, agent=False)  # the answer ended; silence
    feed(det, [(-32.0, -12.0)] * 10, agent=True)  # the next answer and its echo
    caller = [(-12.0, -12.0)] * 5  # the caller, as loud as the agent
    assert [type(e) for e in feed(det, caller, agent=True)] == [SpeechStartedEvent]
