"""DeepgramSTT through the real deepgram-sdk against FakeDeepgram's /v1/listen WebSocket."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from voxtra.errors import ProviderError
from voxtra.media.frames import AudioChunk
from voxtra.providers.base import STT, Transcript
from voxtra.providers.deepgram_stt import DeepgramSTT
from voxtra.testing.fakes import DeepgramTurn, FakeDeepgram

FRAME = AudioChunk.silence()  # 160 bytes of u-law


async def read_all(stream) -> list[Transcript]:
    return [t async for t in stream.transcripts()]


async def test_transcripts_interim_and_final_with_mulaw_passthrough() -> None:
    turns = [
        DeepgramTurn(1600, "Hello world.", interims=["hel", "hello"]),
        DeepgramTurn(4800, "What are your opening hours?", confidence=0.91),
    ]
    async with FakeDeepgram("key", turns) as fake:
        stt = DeepgramSTT("key", base_url=fake.url)
        assert isinstance(stt, STT)
        stream = await stt.stream()
        reader = asyncio.create_task(read_all(stream))
        for _ in range(30):  # 0.6 s of audio
            await stream.send(FRAME)
        await stream.close()
        got = await reader
    finals = [t for t in got if t.is_final]
    assert [t.text for t in finals] == ["Hello world.", "What are your opening hours?"]
    assert [t.text for t in got if not t.is_final] == ["hel", "hello"]
    assert finals[0].start == 0.0 and finals[0].end == pytest.approx(0.2)
    assert finals[1].start == pytest.approx(0.2) and finals[1].end == pytest.approx(0.6)
    assert finals[1].confidence == pytest.approx(0.91)
    (session,) = fake.sessions
    assert session.audio_bytes == 30 * 160  # the u-law went through untouched
    assert session.query["encoding"] == "mulaw" and session.query["sample_rate"] == "8000"
    assert session.query["model"] == "nova-3" and session.query["endpointing"] == "300"
    assert session.query["utterance_end_ms"] == "1000"
    assert session.headers["Authorization"] == "Token key"
    assert session.controls == [{"type": "CloseStream"}] and session.closed_by_client


async def test_end_of_speech_sends_finalize_and_gets_the_pending_turn() -> None:
    async with FakeDeepgram("key", [DeepgramTurn(10_000, "finalised early")]) as fake:
        stream = await DeepgramSTT("key", base_url=fake.url).stream()
        for _ in range(5):
            await stream.send(FRAME)
        await stream.end_of_speech()
        first = await asyncio.wait_for(anext(stream.transcripts()), 5)
        assert first == Transcript("finalised early", True, 0.98, 0.0, pytest.approx(0.1))
        await stream.close()
        assert fake.sessions[0].controls[0] == {"type": "Finalize"}


async def test_end_of_speech_with_nothing_heard_gives_an_empty_final() -> None:
    """No final at all would look like a hung STT to the pipeline (``stt_timeout``)."""
    async with FakeDeepgram("key", []) as fake:
        stream = await DeepgramSTT("key", base_url=fake.url).stream()
        for _ in range(5):
            await stream.send(FRAME)
        await stream.end_of_speech()
        first = await asyncio.wait_for(anext(stream.transcripts()), 5)
        assert (first.text, first.is_final) == ("", True)
        await stream.close()


async def test_pcm16_input_is_converted_to_the_configured_encoding() -> None:
    async with FakeDeepgram("key", [DeepgramTurn(640 * 10, "wideband")]) as fake:
        stt = DeepgramSTT("key", encoding="linear16", sample_rate=16000, base_url=fake.url)
        stream = await stt.stream()
        for _ in range(25):  # u-law 8 kHz frames in, PCM16 16 kHz out (640 bytes each)
            await stream.send(FRAME)
        await stream.close()
        got = await read_all(stream)
    assert [t.text for t in got] == ["wideband"]
    assert fake.sessions[0].query["encoding"] == "linear16"
    # all of it, plus the resampler's delay flushed at close (24 samples at 8 kHz: 96 bytes)
    assert 25 * 640 <= fake.sessions[0].audio_bytes <= 25 * 640 + 96


async def test_wrong_key_is_a_provider_error() -> None:
    async with FakeDeepgram("right") as fake:
        with pytest.raises(ProviderError, match="deepgram: cannot connect: HTTP 401"):
            await DeepgramSTT("wrong", base_url=fake.url).stream()


async def test_no_server_is_a_provider_error() -> None:
    async with FakeDeepgram("key") as fake:
        url = fake.url
    with pytest.raises(ProviderError, match="cannot connect"):
        await DeepgramSTT("key", base_url=url).stream()


async def test_connection_dropped_mid_stream() -> None:
    turns = [DeepgramTurn(800, "before the drop")]
    async with FakeDeepgram("key", turns, drop_after_bytes=1600) as fake:
        stream = await DeepgramSTT("key", base_url=fake.url).stream()
        reader = asyncio.create_task(read_all(stream))
        with pytest.raises(ProviderError, match="deepgram"):
            for _ in range(100):
                await stream.send(FRAME)
                await asyncio.sleep(0.005)
        with pytest.raises(ProviderError, match="connection lost"):
            await reader
        await stream.close()  # closing a dead stream is quiet


async def test_a_close_cut_short_by_its_caller_still_closes_the_socket() -> None:
    """The voice pipeline gives close() 2 s, less than close_timeout_s (3 s): against a
    Deepgram that does not answer CloseStream, a close cut short left the socket open
    (kept alive by pings) and its reader running, until the service dropped it."""
    async with FakeDeepgram("key", hang_after_bytes=len(FRAME.data)) as fake:
        stream = await DeepgramSTT("key", base_url=fake.url).stream()
        await stream.send(FRAME)
        with anyio.move_on_after(0.3) as scope:
            await stream.close()
        assert scope.cancelled_caught  # (the hung service held the close)
        (session,) = fake.sessions
        async with asyncio.timeout(2):
            while not session.ended:
                await asyncio.sleep(0.01)
        assert await asyncio.wait_for(read_all(stream), 1) == []  # the reader is done
    assert session.controls == [{"type": "CloseStream"}]


async def test_two_streams_are_independent() -> None:
    async with FakeDeepgram("key", [DeepgramTurn(800, "same script")]) as fake:
        stt = DeepgramSTT("key", base_url=fake.url)
        a, b = await stt.stream(), await stt.stream()
        for _ in range(10):
            await a.send(FRAME)
        for _ in range(3):
            await b.send(FRAME)
        await asyncio.gather(a.close(), b.close())
        got_a, got_b = await read_all(a), await read_all(b)
    assert [t.text for t in got_a] == ["same script"]
    assert got_b == []  # b never sent the 800 bytes its turn needs
    assert sorted(s.audio_bytes for s in fake.sessions) == [480, 1600]


async def test_the_sdk_headers_are_built_once_per_provider(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """deepgram-sdk looked its own version up in importlib.metadata on every connect
    (0.9 ms of CPU): one provider now builds its headers once, and every socket still
    sends them."""
    from importlib import metadata

    looked_up: list[str] = []
    version = metadata.version

    def counting(name: str) -> str:
        looked_up.append(name)
        return version(name)

    monkeypatch.setattr(metadata, "version", counting)
    async with FakeDeepgram("key", [DeepgramTurn(10_000, "hi")]) as fake:
        stt = DeepgramSTT("key", base_url=fake.url)
        for _ in range(3):
            stream = await stt.stream()
            await stream.send(FRAME)
            await stream.close()
    assert looked_up.count("deepgram-sdk") == 1
    agents = {s.headers["User-Agent"] for s in fake.sessions}
    assert len(fake.sessions) == 3 and agents == {f"deepgram-sdk/{version('deepgram-sdk')}"}
    assert all(s.headers["Authorization"] == "Token key" for s in fake.sessions)


async def test_the_socket_offers_no_deflate_unless_asked() -> None:
    """Telephone audio barely compresses, and permessage-deflate ran zlib over every
    audio message at both ends (issue 15): not offered unless ``compression=True``."""
    async with FakeDeepgram("key", [DeepgramTurn(10_000, "hi")]) as fake:
        for compression in (False, True):
            stream = await DeepgramSTT("key", base_url=fake.url, compression=compression).stream()
            await stream.send(FRAME)
            await stream.close()
        # Another user of the SDK in the process keeps its default (deflate offered).
        from deepgram import AsyncDeepgramClient, DeepgramClientEnvironment

        ws = fake.url.replace("http://", "ws://")
        env = DeepgramClientEnvironment(base=fake.url, production=ws, agent=ws, agent_rest=fake.url)
        client = AsyncDeepgramClient(api_key="key", environment=env)
        async with client.listen.v1.connect(model="nova-3") as socket:
            await socket.send_media(b"\xff" * 160)
    offered = [s.headers.get("Sec-WebSocket-Extensions", "") for s in fake.sessions]
    assert len(offered) == 3
    assert "permessage-deflate" not in offered[0]
    assert "permessage-deflate" in offered[1]
    assert "permessage-deflate" in offered[2]


def test_the_stt_asks_for_its_audio_in_100_ms_pieces() -> None:
    assert DeepgramSTT("key").batch_ms == 100.0
    assert DeepgramSTT("key", batch_ms=0).batch_ms == 0
