"""ElevenLabsTTS through the real elevenlabs SDK against FakeElevenLabs' chunked stream."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from shared_http_checks import check_one_session_closed_with_the_scope

from voxtra.errors import ConfigError, ProviderError
from voxtra.media import g711
from voxtra.media.frames import AudioChunk, Codec
from voxtra.providers.base import TTS
from voxtra.providers.elevenlabs_tts import ElevenLabsTTS
from voxtra.providers.http import HttpScope
from voxtra.testing.fakes import FakeElevenLabs

pytestmark = pytest.mark.usefixtures("http_scope")  # each test on both HTTP stacks


async def synth(tts: ElevenLabsTTS, text: str) -> list[AudioChunk]:
    return [c async for c in tts.synthesize(text)]


async def test_ulaw_8000_streams_telephone_frames() -> None:
    async with FakeElevenLabs("xi-key", ms_per_char=50) as fake:
        tts = ElevenLabsTTS("xi-key", "voice-1", base_url=fake.url)
        assert isinstance(tts, TTS) and tts.sample_rate == 8000
        chunks = await synth(tts, "Hello from the cloud")  # 20 chars -> 1.0 s
    assert all(c.codec is Codec.ULAW and c.sample_rate == 8000 for c in chunks)
    # As the network delivered them (the fake writes 100 ms pieces), not cut into 20 ms
    # ones: each piece is a pass through the SDK, the pipeline and the transport.
    assert 1 <= len(chunks) <= 10
    assert sum(c.duration for c in chunks) == pytest.approx(1.0, abs=0.02)
    pcm = np.frombuffer(g711.ulaw_to_pcm16(b"".join(c.data for c in chunks)), "<i2")
    assert np.abs(pcm).max() > 4000  # the fake's 440 Hz tone, not silence
    (req,) = fake.requests
    assert req["voice_id"] == "voice-1" and req["query"]["output_format"] == "ulaw_8000"
    assert req["body"]["text"] == "Hello from the cloud"
    assert req["body"]["model_id"] == "eleven_flash_v2_5"


async def test_pcm_16000_and_a_real_voice_through_the_fake() -> None:
    def voice(text: str, rate: int) -> bytes:  # a test-supplied "voice": odd-sized body
        return np.full(int(rate * 0.25) + 1, 1234, "<i2").tobytes()

    async with FakeElevenLabs("xi-key", synthesize=voice, chunk_ms=7) as fake:
        tts = ElevenLabsTTS("xi-key", "v", output_format="pcm_16000", base_url=fake.url)
        chunks = await synth(tts, "anything")
    data = b"".join(c.data for c in chunks)
    assert all(c.codec is Codec.PCM16 and c.sample_rate == 16000 for c in chunks)
    assert len(data) == (4000 + 1) * 2 and set(np.frombuffer(data, "<i2")) == {1234}


async def test_first_audio_arrives_before_synthesis_ends() -> None:
    async with FakeElevenLabs("xi-key", chunk_delay=0.05, chunk_ms=100) as fake:
        tts = ElevenLabsTTS("xi-key", "v", base_url=fake.url)
        start = time.perf_counter()
        gen = tts.synthesize("a sentence of some length for streaming")
        await gen.__anext__()
        first = time.perf_counter() - start
        rest = [c async for c in gen]
        total = time.perf_counter() - start
    assert rest and first < total / 3


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"status": 500}, "HTTP 500: Scripted failure 500"),
        ({"status": 429}, "HTTP 429"),
        ({"voices": ("other",)}, "HTTP 404: A voice with voice_id v was not found"),
    ],
)
async def test_errors_are_provider_errors(options: dict[str, object], match: str) -> None:
    async with FakeElevenLabs("xi-key", **options) as fake:  # type: ignore[arg-type]
        with pytest.raises(ProviderError, match=match):
            await synth(ElevenLabsTTS("xi-key", "v", base_url=fake.url), "hi")
    assert len(fake.requests) == 1  # no retries by default


async def test_bad_key() -> None:
    async with FakeElevenLabs("xi-key") as fake:
        with pytest.raises(ProviderError, match="elevenlabs: HTTP 401: Invalid API key"):
            await synth(ElevenLabsTTS("nope", "v", base_url=fake.url), "hi")


async def test_connection_dropped_mid_stream() -> None:
    async with FakeElevenLabs("xi-key", drop_after=3, chunk_ms=100) as fake:
        got: list[AudioChunk] = []
        with pytest.raises(ProviderError, match="elevenlabs"):
            async for chunk in ElevenLabsTTS("xi-key", "v", base_url=fake.url).synthesize(
                "long enough text to need many chunks of audio"
            ):
                got.append(chunk)
    assert 0 < sum(c.duration for c in got) <= 0.3 + 1e-9


async def test_cancelling_stops_quickly_and_client_stays_usable() -> None:
    async with FakeElevenLabs("xi-key", chunk_delay=0.05) as fake:
        tts = ElevenLabsTTS("xi-key", "v", base_url=fake.url)
        gen = tts.synthesize("a long answer " * 20)
        await gen.__anext__()
        await asyncio.wait_for(gen.aclose(), 1.0)
        assert await synth(tts, "again")


def test_unknown_format_is_config_error() -> None:
    with pytest.raises(ConfigError, match="output_format"):
        ElevenLabsTTS("k", "v", output_format="mp3_44100_128")


async def test_in_a_shared_scope_the_sdk_runs_on_one_aiohttp_session(
    http_scope: HttpScope | None,
) -> None:
    async with FakeElevenLabs("xi-key", ms_per_char=10) as fake:
        tts = ElevenLabsTTS("xi-key", "v", base_url=fake.url, timeout=7.0)
        assert await synth(tts, "first")
        assert await synth(tts, "second")
        assert len(fake.requests) == 2
    await check_one_session_closed_with_the_scope(
        http_scope, "httpx", tts, lambda sdk: sdk._client_wrapper.httpx_client.httpx_client
    )
