"""EspeakTTS: real espeak-ng synthesis, streamed, serialized across concurrent callers."""

from __future__ import annotations

import asyncio
import sys
import time

import numpy as np
import pytest

from voxtra.errors import ConfigError, ProviderError
from voxtra.media.frames import AudioChunk, Codec
from voxtra.providers.base import TTS
from voxtra.providers.espeak_tts import EspeakTTS


async def synth(tts: EspeakTTS, text: str) -> list[AudioChunk]:
    return [c async for c in tts.synthesize(text)]


async def test_hello_world_is_audible_22050_hz_pcm_of_plausible_length() -> None:
    tts = EspeakTTS()
    assert isinstance(tts, TTS)
    chunks = await synth(tts, "hello world")
    assert chunks and all(c.codec is Codec.PCM16 and c.sample_rate == 22050 for c in chunks)
    pcm = np.frombuffer(b"".join(c.data for c in chunks), dtype="<i2")
    seconds = len(pcm) / 22050
    assert 0.5 < seconds < 2.0
    rms = float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)))
    assert rms > 500  # speech, not silence


async def test_audio_streams_in_pieces_and_first_piece_is_fast() -> None:
    tts = EspeakTTS()
    await synth(tts, "warm up")
    text = "This sentence is long enough to take several seconds when it is spoken aloud."
    start = time.perf_counter()
    first = None
    chunks = []
    async for chunk in tts.synthesize(text):
        first = first if first is not None else time.perf_counter() - start
        chunks.append(chunk)
    assert len(chunks) > 10  # many ~60 ms pieces, not one blob
    assert first is not None and first < 0.1
    assert sum(c.duration for c in chunks) > 3.0


async def test_rate_changes_duration() -> None:
    slow = sum(c.duration for c in await synth(EspeakTTS(rate=100), "one two three four five"))
    fast = sum(c.duration for c in await synth(EspeakTTS(rate=300), "one two three four five"))
    assert slow > fast * 1.8


async def test_concurrent_syntheses_do_not_mix() -> None:
    """espeak is a global singleton: concurrent callers must each get their own audio,
    with their own settings. (espeak is not bit-exact run to run: it adds noise to
    consonants, so lengths are compared, not bytes.)"""
    a, b = EspeakTTS(rate=120), EspeakTTS(rate=300)
    text = "the same sentence for both callers"
    alone_a = sum(c.duration for c in await synth(a, text))
    alone_b = sum(c.duration for c in await synth(b, text))
    assert alone_a > alone_b * 1.8
    results = await asyncio.gather(*(synth(x, text) for x in (a, b, a, b)))
    durations = [sum(c.duration for c in chunks) for chunks in results]
    for got, alone in zip(durations, (alone_a, alone_b, alone_a, alone_b), strict=True):
        assert abs(got - alone) < 0.03 * alone


async def test_closing_mid_stream_stops_and_engine_stays_usable() -> None:
    tts = EspeakTTS()
    gen = tts.synthesize("a very long story that goes on and on " * 40)
    first = await gen.__anext__()
    assert first.data
    await gen.aclose()
    again = await synth(tts, "still working")
    assert sum(c.duration for c in again) > 0.4


async def test_empty_text_yields_nothing_and_bad_voice_fails_clearly() -> None:
    assert await synth(EspeakTTS(), "   ") == []
    with pytest.raises(ProviderError, match="unknown voice"):
        await synth(EspeakTTS(voice="no-such-voice-xx"), "hello")
    with pytest.raises(ConfigError):
        EspeakTTS(rate=5)


def rms(chunks: list[AudioChunk]) -> float:
    x = np.frombuffer(b"".join(c.data for c in chunks), dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(x**2)))


async def test_settings_of_one_instance_do_not_carry_over_to_another() -> None:
    """espeak keeps a parameter until it is set again: after EspeakTTS(volume=20) had
    spoken, a plain EspeakTTS() spoke at a quarter of its level."""
    plain = EspeakTTS()
    before = rms(await synth(plain, "hello there, how are you"))
    quiet = rms(await synth(EspeakTTS(volume=20, pitch=90), "hello there, how are you"))
    after = rms(await synth(plain, "hello there, how are you"))
    assert quiet < before * 0.5  # the setting does act
    assert abs(after - before) < 0.05 * before, (before, after)


def test_a_missing_espeak_package_is_a_config_error_at_construction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"voxtra\[espeak\]"):
        EspeakTTS()
