"""The caller hangs up while the agent's audio is being sent (issue 15).

A real transport refuses audio once the call's media is closed (``MediaTransport.send``
raises ``CallEnded``), and its ``frames()`` ends only when its reader next asks for a
frame: in between, the TTS stage can send into a closed transport. The pipeline used to
let that ``CallEnded`` out of its task groups as an ``ExceptionGroup`` (bench/
agent_density.py saw it at hang-up), which ``run()`` raised instead of returning
``EndReason.HANGUP`` and which ``say()``'s callers could not catch as ``CallEnded``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from voxtra.errors import CallEnded
from voxtra.media.frames import AudioChunk, Codec
from voxtra.pipeline.events import PipelineEvent, UserTranscriptEvent
from voxtra.pipeline.pipeline import EndReason, VoicePipeline
from voxtra.pipeline.testing import MemoryMediaIO, tone_frames
from voxtra.testing.doubles import EnergyVAD, Reply, ScriptedLLM, ScriptedSTT, ScriptedTTS, words


class ClosingMedia(MemoryMediaIO):
    """MemoryMediaIO that refuses audio once hung up, as the transports do."""

    async def send(self, chunk: AudioChunk) -> None:
        if self.hung_up:
            raise CallEnded("c1", "media transport closed")
        await super().send(chunk)


class HangingUpTTS:
    """Sends one 100 ms chunk, then the caller hangs up, then it sends another."""

    name = "hanging-up-tts"
    sample_rate = 8000

    def __init__(self, media: MemoryMediaIO) -> None:
        self.media = media
        self.requests: list[str] = []

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        self.requests.append(text)
        yield AudioChunk(b"\x10\x00" * 800, 8000, Codec.PCM16)
        self.media.hangup()
        yield AudioChunk(b"\x10\x00" * 800, 8000, Codec.PCM16)


async def test_run_returns_hangup_when_the_transport_closes_mid_answer() -> None:
    media = ClosingMedia()
    clock = media.clock
    tts = HangingUpTTS(media)
    p = VoicePipeline(
        ScriptedSTT(["when are you open"], clock),
        ScriptedLLM([Reply(words("We open at nine. We close at five."))], clock),
        tts,
        EnergyVAD(),
        # No deadline, so no timer task: the wait for each chunk takes no extra loop
        # pass (as on the real clock, where it is a cancel scope), and the send into
        # the closed transport comes before the input side sees the end of the call.
        tts_timeout=None,
    )
    media.inject(tone_frames(600, level_db=-15))
    with anyio.fail_after(10):
        reason = await p.run(media, clock=clock, call_id="c1")
    assert reason is EndReason.HANGUP
    assert tts.requests == ["We open at nine."]


async def test_say_raises_call_ended_when_the_transport_closes_mid_say() -> None:
    media = ClosingMedia()
    p = VoicePipeline(None, None, HangingUpTTS(media), EnergyVAD())
    async with p.attach(media, clock=media.clock, call_id="c1"):
        with anyio.fail_after(10), pytest.raises(CallEnded):
            await p.say("Hello there.")


async def test_greeting_cut_by_the_hangup_ends_the_call_quietly() -> None:
    media = ClosingMedia()
    clock = media.clock
    p = VoicePipeline(
        ScriptedSTT([], clock),
        ScriptedLLM([], clock),
        HangingUpTTS(media),
        EnergyVAD(),
        greeting="Hello, shop here.",
        tts_timeout=None,
    )
    with anyio.fail_after(10):
        assert await p.run(media, clock=clock, call_id="c1") is EndReason.HANGUP


async def test_hangup_while_a_backchannel_is_judged_ends_the_call_quietly() -> None:
    """The answer paused for the caller's "mm-hmm", and the call ends as its transcript
    arrives: resuming the answer meets the closed transport."""
    media = ClosingMedia()
    clock = media.clock
    p = VoicePipeline(
        ScriptedSTT(["hours", "mm-hmm"], clock),
        ScriptedLLM([Reply(words("Our opening hours are nine to five on weekdays. " * 3))], clock),
        ScriptedTTS(clock),
        EnergyVAD(),
    )
    resumed: list[bool] = []

    def on_event(event: PipelineEvent) -> None:
        if isinstance(event, UserTranscriptEvent) and event.is_final and event.text == "mm-hmm":
            media.hangup()
            resumed.append(True)

    p.on_event(on_event)

    async def caller() -> None:
        media.inject(tone_frames(600, level_db=-15))
        await media.wait_until(lambda: media.played_ms >= 1500, 20)
        media.inject(tone_frames(300, level_db=-15))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            assert await p.run(media, clock=clock, call_id="c1") is EndReason.HANGUP
    assert resumed == [True]
