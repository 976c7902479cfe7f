"""Caller audio that arrives while the STT stream is opening reaches the stream.

A cold engine takes a while to open its stream (pocketsphinx starts its decoder
process: ~0.5 s here), and so does a reopen after a failure or a hang. The caller may
speak meanwhile, typically right at the start of the call; those frames wait in a
bounded buffer and go to the stream, in order, once it is open.

The STT double "recognises" tones: each word of a sentence is a 200 ms tone of its own
frequency, so the transcript shows which of the caller's frames the stream received.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import numpy as np

from voxtra.media import g711
from voxtra.media.frames import AudioChunk, Codec
from voxtra.pipeline.events import PipelineEvent, ProviderErrorEvent
from voxtra.pipeline.io import Clock
from voxtra.pipeline.pipeline import VoicePipeline
from voxtra.pipeline.testing import MemoryMediaIO, tone_frames
from voxtra.pipeline.turn import frame_energy_db
from voxtra.providers.base import Transcript

from .doubles import EnergyVAD

WORDS = {400: "what", 800: "time", 1200: "is", 1600: "it", 2000: "now"}
FREQ = {w: f for f, w in WORDS.items()}


def said(text: str) -> list[AudioChunk]:
    """The caller says ``text``: one 200 ms tone per word (ten 20 ms frames each)."""
    return [f for word in text.split() for f in tone_frames(200, freq=FREQ[word], level_db=-15)]


def word_of(chunk: AudioChunk) -> str | None:
    """The word a loud frame carries, from its zero crossings (silence: None)."""
    if frame_energy_db(chunk) < -35:
        return None
    pcm = g711.decode(chunk.data, chunk.codec) if chunk.codec is not Codec.PCM16 else chunk.data
    x = np.frombuffer(pcm, dtype="<i2")
    crossings = int(np.count_nonzero(np.diff(np.signbit(x))))
    freq = crossings / 2 / chunk.duration_ms * 1000
    return WORDS[min(WORDS, key=lambda f: abs(f - freq))]


class ToneStream:
    def __init__(self, hang_end: bool) -> None:
        self.hang_end = hang_end
        self.frames: list[AudioChunk] = []
        self.closed = False
        self._heard: list[str] = []
        self._send, self._recv = anyio.create_memory_object_stream[Transcript](100)

    async def send(self, chunk: AudioChunk) -> None:
        self.frames.append(chunk)
        word = word_of(chunk)
        if word is not None and (not self._heard or self._heard[-1] != word):
            self._heard.append(word)

    async def end_of_speech(self) -> None:
        if self.hang_end:
            await anyio.sleep_forever()  # a stuck connection: the call never returns
        text, self._heard = " ".join(self._heard), []
        await self._send.send(Transcript(text, is_final=True))

    async def close(self) -> None:
        self.closed = True
        self._send.close()

    async def transcripts(self) -> AsyncIterator[Transcript]:
        async with self._recv:
            async for t in self._recv:
                yield t


class SlowOpeningSTT:
    """Each ``stream()`` takes ``open_s`` (pipeline clock); the first ``hung`` streams
    never return from ``end_of_speech``."""

    name = "slow-opening-stt"

    def __init__(self, clock: Clock, *, open_s: float = 0.5, hung: int = 0) -> None:
        self.clock = clock
        self.open_s = open_s
        self.hung = hung
        self.opening = 0
        self.streams: list[ToneStream] = []

    async def stream(self) -> ToneStream:
        self.opening += 1
        await self.clock.sleep(self.open_s)
        s = ToneStream(hang_end=len(self.streams) < self.hung)
        self.streams.append(s)
        return s


def loud(frames: list[AudioChunk]) -> list[bytes]:
    """The loud frames' samples (the pipeline hands the STT PCM16, decoded once)."""
    return pcm([f for f in frames if word_of(f) is not None])


def pcm(frames: list[AudioChunk]) -> list[bytes]:
    return [g711.decode(f.data, f.codec) for f in frames]


async def test_first_words_said_while_the_stream_opens_are_recognised() -> None:
    media = MemoryMediaIO()
    stt = SlowOpeningSTT(media.clock, open_s=0.5)
    p = VoicePipeline(stt, vad=EnergyVAD())
    speech = said("what time is it")  # 800 ms, from the first frame of the call
    with anyio.fail_after(20):
        async with p.attach(media, clock=media.clock):
            media.inject(speech)
            got = await p.listen(10)
            media.hangup()
    assert got is not None and got.text == "what time is it"
    [stream] = stt.streams
    assert loud(stream.frames) == pcm(speech)  # every frame, in order
    assert p.stt_frames_dropped == 0


async def test_audio_during_a_reopen_after_a_hung_stream_reaches_the_new_stream() -> None:
    """The first stream hangs in end_of_speech (a stuck connection). After stt_timeout
    the caller says it again at once, while the new stream is still opening."""
    media = MemoryMediaIO()
    stt = SlowOpeningSTT(media.clock, open_s=0.5, hung=1)
    p = VoicePipeline(stt, vad=EnergyVAD(), stt_timeout=2.0)
    events: list[PipelineEvent] = []
    p.on_event(events.append)
    again = said("is it now")
    with anyio.fail_after(20):
        async with p.attach(media, clock=media.clock):
            await media.wait_until(lambda: len(stt.streams) == 1, 5)
            media.inject(said("what time"))
            await media.wait_until(lambda: any(isinstance(e, ProviderErrorEvent) for e in events))
            assert stt.opening == 1  # the new stream is not open yet: the caller speaks now
            media.inject(again)
            got = await p.listen(10)
            media.hangup()
    [error] = [e for e in events if isinstance(e, ProviderErrorEvent)]
    assert error.timed_out and error.stage == "stt"
    assert got is not None and got.text == "is it now"
    assert len(stt.streams) == 2 and stt.streams[0].closed
    assert loud(stt.streams[1].frames) == pcm(again)


async def test_an_utterance_held_past_stt_timeout_is_not_answered_late() -> None:
    """The stream takes longer than stt_timeout to open: the caller got the fallback
    ("say that again"), so the held utterance is dropped, not decoded once the stream
    opens (that would answer the old question after asking for it again)."""
    media = MemoryMediaIO()
    stt = SlowOpeningSTT(media.clock, open_s=3.0)
    p = VoicePipeline(stt, vad=EnergyVAD(), stt_timeout=1.0)
    events: list[PipelineEvent] = []
    p.on_event(events.append)
    with anyio.fail_after(20):
        async with p.attach(media, clock=media.clock):
            media.inject(said("what time"))
            await media.wait_until(lambda: any(isinstance(e, ProviderErrorEvent) for e in events))
            await media.wait_until(lambda: len(stt.streams) == 1, 5)
            media.inject(said("is it now"))
            got = await p.listen(10)
            media.hangup()
    assert got is not None and got.text == "is it now"
    assert loud(stt.streams[0].frames) == pcm(said("is it now"))


async def test_the_buffer_while_opening_is_bounded_and_counts_what_it_drops() -> None:
    media = MemoryMediaIO()
    stt = SlowOpeningSTT(media.clock, open_s=10.0)
    p = VoicePipeline(stt, vad=EnergyVAD(), stt_timeout=None)
    speech = said("what time is it now") * 8  # 8 s of speech before the stream opens
    with anyio.fail_after(20):
        async with p.attach(media, clock=media.clock):
            media.inject(speech)
            await media.wait_until(lambda: len(stt.streams) == 1, 15)
            await media.wait_until(lambda: not p.queue_depths["stt_audio"], 5)
            media.hangup()
    [stream] = stt.streams
    kept = loud(stream.frames)
    assert 0 < len(kept) < len(speech) and len(stream.frames) <= 5500 // 20 + 1
    assert kept == pcm(speech[-len(kept) :])  # the newest, in order
    assert p.stt_frames_dropped == len(speech) - len(kept)


async def _phone_speech(text: str) -> list[AudioChunk]:
    """espeak saying ``text`` as a phone line carries it: 8 kHz u-law, 20 ms frames."""
    import soxr

    from voxtra.providers.espeak_tts import EspeakTTS

    pcm = b"".join([c.data async for c in EspeakTTS(rate=150).synthesize(text)])
    pcm8 = soxr.resample(np.frombuffer(pcm, dtype="<i2"), 22050, 8000).astype("<i2")
    ulaw = g711.pcm16_to_ulaw(pcm8.tobytes())
    step = AudioChunk.frame_bytes(Codec.ULAW, 8000)
    return [AudioChunk(ulaw[i : i + step], 8000) for i in range(0, len(ulaw) - step + 1, step)]


async def test_a_cold_pocketsphinx_hears_the_question_said_at_the_start_of_the_call() -> None:
    """Real engines on the real clock: the provider was never warmed up, so opening
    the call's stream starts its decoder process (~0.5 s here) while the caller asks."""
    from voxtra.providers.pocketsphinx_stt import PocketSphinxSTT
    from voxtra.providers.rules import RulesAgent
    from voxtra.providers.webrtc_vad import WebRtcVAD

    speech = await _phone_speech("what are your opening hours")
    stt = PocketSphinxSTT(keywords=RulesAgent().vocabulary())
    media = MemoryMediaIO(virtual=False)
    p = VoicePipeline(stt, vad=WebRtcVAD(), stt_timeout=None)
    try:
        with anyio.fail_after(30):
            async with p.attach(media, clock=media.clock):
                media.inject(speech)
                got = await p.listen(10)
                media.hangup()
    finally:
        await stt.aclose()
    assert got is not None
    heard = got.text.split()
    assert heard[:2] == ["what", "are"] and "hours" in heard, got.text
