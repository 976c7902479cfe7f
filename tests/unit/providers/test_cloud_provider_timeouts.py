"""A cloud service that goes silent is a ``ProviderTimeout`` naming the provider, within
the provider's own timeout, through the real SDKs (on their own HTTP clients and on the
shared aiohttp ones). It was a plain ``ProviderError`` reading "APITimeoutError: Request
timed out." (OpenAI) or "ReadTimeout: " (ElevenLabs); Deepgram's handshake to a server
that never answered took 20 s (websockets' own timeouts) to fail, with "TimeoutError: "."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from voxtra.errors import ProviderError
from voxtra.pipeline.pipeline import ProviderTimeout
from voxtra.providers.base import ChatMessage
from voxtra.providers.deepgram_stt import DeepgramSTT
from voxtra.providers.elevenlabs_tts import ElevenLabsTTS
from voxtra.providers.http import HttpScope, shared_http
from voxtra.providers.openai_llm import OpenAILLM
from voxtra.testing.fakes import FakeElevenLabs, FakeOpenAI, OpenAIReply

HISTORY = [ChatMessage("user", "What time do you open?")]


@pytest.fixture(params=["sdk-client", "shared-aiohttp"])
async def http_scope(request: pytest.FixtureRequest) -> AsyncIterator[HttpScope | None]:
    """Each HTTP provider test on its SDK's own client, then on the app's shared one."""
    if request.param == "sdk-client":
        yield None
        return
    async with shared_http() as scope:
        yield scope


@asynccontextmanager
async def silent_server() -> AsyncIterator[str]:
    """A service that accepts TCP connections and never answers (``http://`` URL)."""
    release = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        release.set()
        server.close()
        await server.wait_closed()


@pytest.mark.usefixtures("http_scope")
async def test_an_llm_stream_that_goes_silent_is_a_provider_timeout() -> None:
    # The answer's headers and first chunk arrive, then nothing for 10 s.
    async with FakeOpenAI("sk-test", [OpenAIReply(text="We open at nine.", delay=10)]) as fake:
        llm = OpenAILLM("sk-test", base_url=fake.base_url, timeout=0.5)
        async with asyncio.timeout(5):
            with pytest.raises(ProviderTimeout) as raised:
                async for _chunk in llm.generate(HISTORY):
                    pass
    assert str(raised.value) == "openai: stream failed: no data within 0.5 s"
    assert isinstance(raised.value, ProviderError) and isinstance(raised.value, TimeoutError)
    assert raised.value.provider == "openai"


@pytest.mark.usefixtures("http_scope")
async def test_an_llm_that_never_answers_is_a_provider_timeout() -> None:
    async with silent_server() as url:
        llm = OpenAILLM("sk-test", base_url=f"{url}/v1", timeout=0.5)
        async with asyncio.timeout(5):
            with pytest.raises(ProviderTimeout, match=r"^openai: no data within 0\.5 s$"):
                async for _chunk in llm.generate(HISTORY):
                    pass
            with pytest.raises(ProviderTimeout, match=r"^openai: warm-up failed: no data"):
                await llm.warm_up("You are a phone agent.")


async def test_an_llm_refusal_is_still_a_provider_error_not_a_timeout() -> None:
    async with FakeOpenAI("sk-test", [OpenAIReply(status=429)]) as fake:
        with pytest.raises(ProviderError, match="openai: HTTP 429") as raised:
            async for _chunk in OpenAILLM("sk-test", base_url=fake.base_url).generate(HISTORY):
                pass
    assert not isinstance(raised.value, TimeoutError)


@pytest.mark.usefixtures("http_scope")
async def test_a_tts_stream_that_goes_silent_is_a_provider_timeout() -> None:
    # The first 100 ms of audio arrive, then nothing for 10 s.
    async with FakeElevenLabs("xi-key", chunk_delay=10) as fake:
        tts = ElevenLabsTTS("xi-key", "voice-1", base_url=fake.url, timeout=0.5)
        got = 0.0
        async with asyncio.timeout(5):
            with pytest.raises(ProviderTimeout) as raised:
                async for chunk in tts.synthesize("We open at nine in the morning."):
                    got += chunk.duration
    assert got == pytest.approx(0.1)
    assert str(raised.value) == "elevenlabs: no audio within 0.5 s"
    assert isinstance(raised.value, TimeoutError) and raised.value.provider == "elevenlabs"


@pytest.mark.usefixtures("http_scope")
async def test_a_tts_that_never_answers_is_a_provider_timeout() -> None:
    async with silent_server() as url:
        tts = ElevenLabsTTS("xi-key", "voice-1", base_url=url, timeout=0.5)
        async with asyncio.timeout(5):
            with pytest.raises(ProviderTimeout, match=r"^elevenlabs: no audio within 0\.5 s$"):
                async for _chunk in tts.synthesize("Hello."):
                    pass


async def test_an_stt_handshake_that_never_completes_is_a_provider_timeout() -> None:
    # websockets' own timeouts: 10 s to open, then 10 s for the half-open socket to
    # close. Now connect_timeout_s, then close_timeout_s.
    async with silent_server() as url:
        stt = DeepgramSTT("dg-key", base_url=url, connect_timeout_s=0.5, close_timeout_s=0.5)
        loop = asyncio.get_running_loop()
        start = loop.time()
        async with asyncio.timeout(5):
            with pytest.raises(ProviderTimeout) as raised:
                await stt.stream()
        took = loop.time() - start
    assert str(raised.value) == "deepgram: cannot connect: no handshake within 0.5 s"
    assert isinstance(raised.value, TimeoutError) and raised.value.provider == "deepgram"
    assert 0.5 <= took < 1.5


def test_a_timeout_that_is_not_a_number_still_makes_a_message() -> None:
    # The SDKs take None or an httpx.Timeout too; formatted with :g, building the
    # timeout's error raised a TypeError in its place.
    import httpx

    from voxtra.providers.http import seconds_text

    assert seconds_text(30.0) == "30 s" and seconds_text(0.5) == "0.5 s"
    assert seconds_text(None) == "the timeout (None)"
    assert seconds_text(httpx.Timeout(5.0)).startswith("the timeout (Timeout(")
