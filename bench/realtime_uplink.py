"""What the caller's audio costs on the way up to a speech-to-speech service, per 20 ms
frame: the engine's ``_send_audio`` (base64, the SDK's event transform, JSON, the
WebSocket frame) against the local fakes, one connection each.

    .venv/bin/python bench/realtime_uplink.py

OpenAI Realtime takes the phone's u-law as is (160 bytes a frame); Gemini Live takes
16 kHz PCM16 (640 bytes a frame, after the one conversion the transport or the engine
does, not counted here).
"""

from __future__ import annotations

import asyncio
import statistics
import time

from voxtra.media.frames import AudioChunk, Codec
from voxtra.pipeline.testing import MemoryMediaIO
from voxtra.providers.gemini_live import GeminiLiveEngine
from voxtra.providers.openai_realtime import OpenAIRealtimeEngine
from voxtra.providers.speech_to_speech import SpeechToSpeechEngine
from voxtra.testing.fakes.gemini_live import FakeGeminiLive
from voxtra.testing.fakes.openai_realtime import FakeOpenAIRealtime

FRAMES = 2000


async def measure(engine: SpeechToSpeechEngine, chunk: AudioChunk) -> list[float]:
    media = MemoryMediaIO(virtual=False)
    times: list[float] = []
    async with engine.attach(media, clock=media.clock):
        send = engine._send_audio  # the one call the uplink makes per frame
        for _ in range(FRAMES):
            start = time.perf_counter()
            await send(chunk)
            times.append((time.perf_counter() - start) * 1e6)
        media.hangup()
    return times


def report(name: str, times: list[float]) -> None:
    times.sort()
    print(
        f"{name:16s} per frame: median {statistics.median(times):6.1f} us, "
        f"p95 {times[int(len(times) * 0.95)]:6.1f} us, "
        f"{statistics.median(times) / 20000 * 100:.2f}% of a core per call"
    )


async def main() -> None:
    ulaw = AudioChunk(b"\x7f" * 160, 8000, Codec.ULAW)
    async with FakeOpenAIRealtime("k", speech_db=0.0) as fake:
        engine = OpenAIRealtimeEngine("k", base_url=fake.base_url)
        report("openai-realtime", await measure(engine, ulaw))
    pcm = AudioChunk(b"\x00\x01" * 320, 16000, Codec.PCM16)
    async with FakeGeminiLive("k", speech_db=0.0) as gfake:
        ssl = gfake.client_ssl_context
        gemini = GeminiLiveEngine("k", base_url=gfake.base_url, ssl_context=ssl)
        report("gemini-live", await measure(gemini, pcm))


if __name__ == "__main__":
    asyncio.run(main())
