"""Speech fixtures: real espeak speech, put through a telephone line (8 kHz u-law)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import numpy as np
import pytest
import soxr

from voxtra.media import g711
from voxtra.media.frames import AudioChunk, Codec
from voxtra.providers.espeak_tts import EspeakTTS


async def speak_pcm(text: str, rate: int = 150) -> bytes:
    """espeak's 22,050 Hz PCM16 for ``text`` (150 wpm: pocketsphinx hears it best)."""
    return b"".join([c.data async for c in EspeakTTS(rate=rate).synthesize(text)])


async def speak_ulaw(text: str) -> bytes:
    """``text`` as a phone line carries it: espeak, downsampled to 8 kHz, mu-law."""
    pcm = np.frombuffer(await speak_pcm(text), dtype="<i2")
    pcm8 = soxr.resample(pcm, 22050, 8000).astype("<i2")
    return g711.pcm16_to_ulaw(pcm8.tobytes())


def frames(data: bytes, codec: Codec = Codec.ULAW, rate: int = 8000) -> list[AudioChunk]:
    """``data`` cut into whole 20 ms frames (a trailing partial frame is dropped)."""
    size = AudioChunk.frame_bytes(codec, rate)
    return [
        AudioChunk(data[i : i + size], rate, codec) for i in range(0, len(data) - size + 1, size)
    ]


@pytest.fixture
def say_ulaw() -> Callable[[str], Awaitable[bytes]]:
    return speak_ulaw


@pytest.fixture
def say_pcm() -> Callable[[str], Awaitable[bytes]]:
    return speak_pcm


@pytest.fixture
def to_frames() -> Callable[..., list[AudioChunk]]:
    return frames
