"""RNNoise noise suppression in front of an STT (the rnnoise extra)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest

pytest.importorskip("pyrnnoise", reason="the rnnoise extra is not installed")

from voxtra.media import g711
from voxtra.media.frames import AudioChunk, Codec
from voxtra.media.resample import resample_once
from voxtra.providers.base import STT, Transcript
from voxtra.providers.espeak_tts import EspeakTTS
from voxtra.providers.rnnoise import DenoisedSTT, RNNoise


def level_db(x: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(x.astype(np.float64) ** 2) / 32768.0**2 + 1e-12))


async def noisy_line() -> tuple[np.ndarray, int, int]:
    """1 s of line noise, espeak-ng speech over the same noise, 1 s of noise: 8 kHz
    PCM16 samples, and where the speech starts and ends."""
    tts = EspeakTTS()
    pcm = b"".join([c.data async for c in tts.synthesize("what are your opening hours")])
    speech = np.frombuffer(resample_once(pcm, tts.sample_rate, 8000), dtype="<i2")
    x = np.concatenate([np.zeros(8000), speech.astype(np.float64), np.zeros(8000)])
    rng = np.random.default_rng(1)
    x = x + rng.normal(0, 32768 * 10 ** (-35 / 20), len(x))  # -35 dBFS of white noise
    return np.clip(np.round(x), -32768, 32767).astype("<i2"), 8000, 8000 + len(speech)


async def test_the_noise_goes_down_and_the_speech_stays() -> None:
    x, start, end = await noisy_line()
    ulaw = g711.pcm16_to_ulaw(x.tobytes())
    session = RNNoise().session()
    out = b"".join(
        session.process(AudioChunk(ulaw[i : i + 160], 8000, Codec.ULAW)).data
        for i in range(0, len(ulaw), 160)
    )
    session.close()
    y = np.frombuffer(out, dtype="<i2")
    assert abs(len(y) - len(x)) < 8000 * 0.05  # only the resamplers' and a frame's delay
    noise_in, noise_out = level_db(x[4000:7000]), level_db(y[4000:7000])
    speech_in, speech_out = level_db(x[start:end]), level_db(y[start:end])
    assert noise_out < noise_in - 10, (noise_in, noise_out)
    assert speech_out > speech_in - 6, (speech_in, speech_out)


class Recorder:
    """An STT that records what its stream was sent."""

    name = "recorder"
    sample_rate = 16000

    def __init__(self) -> None:
        self.sent: list[AudioChunk] = []
        self.calls: list[str] = []

    async def stream(self) -> Recorder:
        return self

    async def send(self, chunk: AudioChunk) -> None:
        self.sent.append(chunk)

    async def end_of_speech(self) -> None:
        self.calls.append("end_of_speech")

    async def close(self) -> None:
        self.calls.append("close")

    async def transcripts(self) -> AsyncIterator[Transcript]:
        yield Transcript("hello", is_final=True)


async def test_denoised_stt_hands_the_cleaned_frames_to_the_wrapped_stream() -> None:
    inner = Recorder()
    stt = DenoisedSTT(inner)
    assert isinstance(stt, STT) and stt.name == "recorder" and stt.sample_rate == 16000
    stream = await stt.stream()
    frame = AudioChunk(np.full(320, 1000, dtype="<i2").tobytes(), 16000, Codec.PCM16)
    for _ in range(50):
        await stream.send(frame)
    await stream.end_of_speech()
    await stream.close()
    assert [t.text async for t in stream.transcripts()] == ["hello"]
    assert inner.calls == ["end_of_speech", "close"]
    assert {(c.sample_rate, c.codec) for c in inner.sent} == {(16000, Codec.PCM16)}
    sent = sum(len(c.data) for c in inner.sent)
    assert 50 * 640 - 16000 * 2 * 0.05 < sent <= 50 * 640  # 1 s in, less the delay
