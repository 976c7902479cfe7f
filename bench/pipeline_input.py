"""Benchmark: CPU of a voice pipeline's input side per second of caller audio.

One call's inbound path, as fast as the CPU allows: 8 kHz u-law frames (espeak speech
put through a phone line, with pauses between phrases) -> VoicePipeline's input loop
(energy, WebRTC VAD, turn detector, pre-roll) -> the STT stream's ``send``. The STT is
PocketSphinxSTT in its worker process, so the figure is the pipeline and the audio
conversion in this process (the decoding runs in the worker and is not counted), and
"stt-free" runs the same input loop with no STT at all.

The figure: CPU time of this process (``time.process_time``) per second of caller
audio, in microseconds; the median of ``--repeat`` runs.

    .venv/bin/python bench/pipeline_input.py [--seconds 30] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import AsyncIterator

import anyio
import numpy as np
import soxr

from voxtra.media import g711
from voxtra.media.frames import AudioChunk, Codec
from voxtra.pipeline import VoicePipeline
from voxtra.providers.espeak_tts import EspeakTTS
from voxtra.providers.pocketsphinx_stt import PocketSphinxSTT
from voxtra.providers.rules import RulesAgent
from voxtra.providers.webrtc_vad import WebRtcVAD

PHRASES = ("what are your opening hours", "tell me a long story", "thank you goodbye")


async def phone_audio(seconds: float) -> list[AudioChunk]:
    """``seconds`` of 20 ms u-law frames: phrases, each followed by 1.5 s of silence."""
    pieces = []
    for phrase in PHRASES:
        pcm = b"".join([c.data async for c in EspeakTTS(rate=150).synthesize(phrase)])
        pcm8 = soxr.resample(np.frombuffer(pcm, "<i2"), 22050, 8000).astype("<i2")
        pieces.append(pcm8.tobytes() + bytes(2 * 12000))
    cycle = g711.pcm16_to_ulaw(b"".join(pieces))
    need = int(seconds * 8000)
    data = (cycle * (need // len(cycle) + 1))[:need]
    return [AudioChunk(data[i : i + 160], 8000, Codec.ULAW) for i in range(0, need - 159, 160)]


class FastMedia:
    """A MediaIO that hands over prepared frames as fast as the pipeline takes them."""

    def __init__(self, frames: list[AudioChunk]) -> None:
        self._frames = frames
        self.done = anyio.Event()

    async def frames(self) -> AsyncIterator[AudioChunk]:
        for i, frame in enumerate(self._frames):
            if i % 10 == 0:
                await anyio.lowlevel.checkpoint()  # let the STT sender run
            yield frame
        self.done.set()
        await anyio.sleep(0.2)  # the last frames reach the STT stream

    async def send(self, chunk: AudioChunk) -> None:
        pass

    async def flush(self) -> None:
        pass

    @property
    def queued_ms(self) -> float:
        return 0.0

    @property
    def played_ms(self) -> float:
        return 0.0


async def one_run(frames: list[AudioChunk], stt: PocketSphinxSTT | None) -> float:
    """CPU microseconds per second of audio for one pass over ``frames``."""
    pipeline = VoicePipeline(stt=stt, vad=WebRtcVAD(), stt_timeout=None)
    media = FastMedia(frames)
    cpu0 = time.process_time()
    async with pipeline.attach(media):
        await media.done.wait()
    cpu = time.process_time() - cpu0
    audio_s = len(frames) * 0.02
    return cpu / audio_s * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    frames = await phone_audio(args.seconds)
    stt = PocketSphinxSTT(keywords=RulesAgent().vocabulary())
    await stt.warm_up()
    try:
        for label, provider in (("stt-free", None), ("pocketsphinx", stt)):
            await one_run(frames, provider)  # warm caches
            runs = [await one_run(frames, provider) for _ in range(args.repeat)]
            print(
                f"{label:13s} {statistics.median(runs):7.0f} us CPU per call-second "
                f"(min {min(runs):.0f}, max {max(runs):.0f}; {args.seconds:g} s of audio x "
                f"{args.repeat})"
            )
    finally:
        await stt.aclose()


if __name__ == "__main__":
    asyncio.run(main())
