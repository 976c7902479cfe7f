"""Providers that hang (accept the request, never answer) end the turn on a deadline.

Each stage's wait on its provider has a deadline on the pipeline clock (``stt_timeout``,
``llm_timeout``, ``tts_timeout``); past it the turn ends with a ``ProviderErrorEvent``
(``timed_out=True``) and the caller hears ``fallback_text``. Virtual time: the deadlines
are checked to the frame (20 ms).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import pytest

from voxtra.errors import ProviderError
from voxtra.media.frames import AudioChunk
from voxtra.pipeline.events import PipelineEvent, ProviderErrorEvent
from voxtra.pipeline.io import Clock
from voxtra.pipeline.pipeline import ProviderTimeout, VoicePipeline
from voxtra.pipeline.testing import MemoryMediaIO, tone_frames
from voxtra.providers.base import ChatMessage, LLMChunk, ToolSpec

from .doubles import EnergyVAD, Reply, ScriptedLLM, ScriptedSTT, ScriptedSTTStream, ScriptedTTS

FALLBACK = "Sorry, I am having trouble right now."
FRAME = 0.02


class HangingLLM:
    """Streams ``pieces``, then never sends another token (nor ends)."""

    name = "hanging-llm"

    def __init__(self, pieces: Sequence[str] = ()) -> None:
        self.pieces = list(pieces)
        self.started = 0
        self.closed = 0

    async def generate(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[LLMChunk]:
        self.started += 1
        try:
            for piece in self.pieces:
                yield LLMChunk(text=piece)
            await anyio.sleep_forever()
        finally:
            self.closed += 1


class HangingSTTStream(ScriptedSTTStream):
    """Takes audio and end-of-speech, never returns a transcript."""

    async def end_of_speech(self) -> None:
        return


class HangingSTT(ScriptedSTT):
    """Its first ``hung`` streams never finalise; later ones work as scripted."""

    name = "hanging-stt"

    def __init__(self, finals: Sequence[str], clock: Clock, *, hung: int = 1) -> None:
        super().__init__(finals, clock)
        self.hung = hung

    async def stream(self) -> ScriptedSTTStream:
        s = HangingSTTStream(self) if len(self.streams) < self.hung else ScriptedSTTStream(self)
        self.streams.append(s)
        return s


class HangingTTS:
    """Accepts every text, never yields audio."""

    name = "hanging-tts"
    sample_rate = 8000

    def __init__(self) -> None:
        self.requests: list[str] = []

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        self.requests.append(text)
        await anyio.sleep_forever()
        yield AudioChunk(b"", 8000)  # pragma: no cover - never reached


def speak(media: MemoryMediaIO) -> None:
    media.inject(tone_frames(600, level_db=-15))


def errors(events: list[PipelineEvent]) -> list[ProviderErrorEvent]:
    return [e for e in events if isinstance(e, ProviderErrorEvent)]


async def converse(p: VoicePipeline, media: MemoryMediaIO, caller: Any) -> None:
    with anyio.fail_after(20):  # real seconds: old code hung here
        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            await p.run(media, clock=media.clock)


@pytest.mark.parametrize("pieces", [[], ["Let me check that. ", "The answer "]])
async def test_llm_that_never_answers_ends_the_turn_with_the_fallback(pieces: list[str]) -> None:
    media = MemoryMediaIO()
    llm = HangingLLM(pieces)
    tts = ScriptedTTS(media.clock)
    p = VoicePipeline(
        ScriptedSTT(["what time is it"], media.clock),
        llm,
        tts,
        EnergyVAD(),
        llm_timeout=3.0,
        fallback_text=FALLBACK,
    )
    events: list[PipelineEvent] = []
    p.on_event(events.append)

    async def caller() -> None:
        speak(media)
        await media.wait_until(lambda: len(p.metrics) == 1 and media.queued_ms == 0, 30)
        media.hangup()

    await converse(p, media, caller)

    [error] = errors(events)
    assert (error.provider, error.stage, error.timed_out) == ("hanging-llm", "llm", True)
    assert error.message == "TimeoutError: no token within 3 s"
    # Three seconds after the last thing the LLM sent (or the request), to the frame.
    metrics = p.metrics[0]
    waited_from = metrics.stt_final if not pieces else metrics.llm_first_token
    assert waited_from is not None
    assert 3.0 - 1e-6 <= error.at - waited_from <= 3.0 + 2 * FRAME
    spoken = [t for _, t in tts.requests]
    assert spoken == (["Let me check that."] if pieces else []) + [FALLBACK]
    assert media.played_audio_ms(since=error.at) >= len(FALLBACK) * 50 - 20
    assert llm.closed == llm.started == 1  # the hung request was cancelled


async def test_stt_that_never_finalises_ends_the_turn_and_reopens() -> None:
    media = MemoryMediaIO()
    stt = HangingSTT(["second try"], media.clock, hung=1)
    tts = ScriptedTTS(media.clock)
    llm = ScriptedLLM([Reply(["Got it."])], media.clock)
    p = VoicePipeline(stt, llm, tts, EnergyVAD(), stt_timeout=2.0, fallback_text=FALLBACK)
    events: list[PipelineEvent] = []
    p.on_event(events.append)
    speech_ends: list[float] = []

    async def caller() -> None:
        speak(media)
        await media.wait_until(lambda: bool(errors(events)), 30)
        speech_ends.append(p._last_speech_end or 0.0)
        await media.wait_until(lambda: [t for _, t in tts.requests] == [FALLBACK], 10)
        await media.wait_until(lambda: media.queued_ms == 0 and not p.speaking, 10)
        speak(media)  # the caller tries again: the new stream hears it
        await media.wait_until(lambda: len(p.metrics) == 1 and media.queued_ms == 0, 30)
        media.hangup()

    await converse(p, media, caller)

    [error] = errors(events)
    assert (error.provider, error.stage, error.timed_out) == ("hanging-stt", "stt", True)
    assert "no final transcript within 2 s" in error.message
    assert 2.0 - 1e-6 <= error.at - speech_ends[0] <= 2.0 + 6 * FRAME
    assert stt.streams[0].closed and len(stt.streams) >= 2
    assert [t for _, t in tts.requests] == [FALLBACK, "Got it."]
    assert [m.content for m in llm.calls[0].messages if m.role == "user"] == ["second try"]


@pytest.mark.parametrize("with_fallback_tts", [True, False])
async def test_tts_that_never_yields_ends_the_turn(with_fallback_tts: bool) -> None:
    media = MemoryMediaIO()
    tts = HangingTTS()
    backup = ScriptedTTS(media.clock)
    p = VoicePipeline(
        ScriptedSTT(["hello"], media.clock),
        ScriptedLLM([Reply(["Hello there."])], media.clock),
        tts,
        EnergyVAD(),
        tts_timeout=2.0,
        fallback_text=FALLBACK,
        fallback_tts=backup if with_fallback_tts else None,
    )
    events: list[PipelineEvent] = []
    p.on_event(events.append)

    async def caller() -> None:
        speak(media)
        await media.wait_until(lambda: len(p.metrics) == 1 and media.queued_ms == 0, 30)
        media.hangup()

    await converse(p, media, caller)

    [error] = errors(events)
    assert (error.provider, error.stage, error.timed_out) == ("hanging-tts", "tts", True)
    first_token = p.metrics[0].llm_first_token
    assert first_token is not None
    assert 2.0 - 1e-6 <= error.at - first_token <= 2.0 + 2 * FRAME
    # The hung TTS is not asked to say the fallback (another 2 s of silence).
    assert tts.requests == ["Hello there."]
    if with_fallback_tts:
        assert [t for _, t in backup.requests] == [FALLBACK]
        assert media.played_audio_ms(since=error.at) >= len(FALLBACK) * 50 - 20
        assert p.agent.history[-1].content == FALLBACK
    else:
        assert media.played == []
    assert p.metrics[0].first_frame_out is None


async def test_say_raises_provider_timeout_when_tts_hangs() -> None:
    media = MemoryMediaIO()
    p = VoicePipeline(tts=HangingTTS(), tts_timeout=1.5)
    events: list[PipelineEvent] = []
    p.on_event(events.append)
    with anyio.fail_after(20):
        async with p.attach(media, clock=media.clock):
            start = media.clock.now()
            with pytest.raises(ProviderTimeout) as raised:
                await p.say("Hello")
            media.hangup()
    assert isinstance(raised.value, ProviderError) and isinstance(raised.value, TimeoutError)
    assert raised.value.provider == "hanging-tts"
    [error] = errors(events)
    assert error.timed_out and 1.5 - 1e-6 <= error.at - start <= 1.5 + 2 * FRAME


async def test_no_deadline_when_set_to_none() -> None:
    """``None`` keeps the old behaviour (wait as long as the provider takes)."""
    media = MemoryMediaIO()
    slow = ScriptedTTS(media.clock, first_byte=12.0)
    p = VoicePipeline(tts=slow, tts_timeout=None)
    with anyio.fail_after(20):
        async with p.attach(media, clock=media.clock):
            result = await p.say("Slow but fine.")
            media.hangup()
    assert not result.interrupted and result.heard_text == "Slow but fine."


def test_voice_config_passes_deadlines_and_fallback_to_each_call() -> None:
    from voxtra import VoiceConfig

    backup = ScriptedTTS(MemoryMediaIO().clock)
    p = VoiceConfig(
        stt_timeout=1.0, llm_timeout=2.0, tts_timeout=None, fallback_text="Hm?", fallback_tts=backup
    ).build()
    assert (p.stt_timeout, p.llm_timeout, p.tts_timeout) == (1.0, 2.0, None)
    assert (p.fallback_text, p.fallback_tts) == ("Hm?", backup)
    assert VoiceConfig(options={"llm_timeout": 30.0}).build().llm_timeout == 30.0


async def test_speech_the_stt_hears_nothing_in_is_not_a_hang() -> None:
    """A cough: the STT answers with an empty final. No error, no fallback line.
    (Longer speech with an empty final is answered: tests/unit/pipeline/test_turn_taking.)"""
    media = MemoryMediaIO()
    stt = ScriptedSTT([], media.clock)  # every end of speech: an empty final
    tts = ScriptedTTS(media.clock)
    p = VoicePipeline(stt, HangingLLM(), tts, EnergyVAD(), stt_timeout=1.0)
    events: list[PipelineEvent] = []
    p.on_event(events.append)

    async def caller() -> None:
        media.inject(tone_frames(200, level_db=-15))
        await media.wait_until(lambda: media.clock.now() > 5.0, 30)
        media.hangup()

    await converse(p, media, caller)
    assert errors(events) == [] and tts.requests == [] and len(stt.streams) == 1
