"""The input side's per-frame work (issue 15): every caller frame of every call goes
through the pipeline's input loop (energy, VAD, turn detector, the echo gate's level),
50 a second a call. Counted in Python function calls per frame, which do not depend on
the machine's load (bench/agent_density.py has the CPU figures)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from types import FrameType
from typing import Any

import anyio
import numpy as np
import pytest

from voxtra.media import g711
from voxtra.media.frames import AudioChunk, Codec
from voxtra.pipeline.pipeline import VoicePipeline, _Output, _Segment
from voxtra.providers.webrtc_vad import WebRtcVAD

FRAMES = 400


def caller_frames(count: int) -> list[AudioChunk]:
    """PCM16 8 kHz frames: speech-like bursts and silence, as a transport hands them."""
    rate = 8000
    t = np.arange(count * 160) / rate
    env = np.abs(np.sin(2 * np.pi * 0.7 * t)) * 9000
    pcm = (env * np.sin(2 * np.pi * 260 * t)).astype("<i2").tobytes()
    return [AudioChunk(pcm[i : i + 320], rate, Codec.PCM16) for i in range(0, len(pcm), 320)]


class AgentTalking:
    """A MediaIO whose agent audio is playing while the caller's frames come in."""

    def __init__(self, frames: list[AudioChunk]) -> None:
        self._frames = frames
        self.played = 0.0
        self.done = anyio.Event()

    async def frames(self) -> AsyncIterator[AudioChunk]:
        for frame in self._frames:
            self.played += 20.0
            yield frame
        self.done.set()
        await anyio.sleep_forever()

    async def send(self, chunk: AudioChunk) -> None:
        pass

    async def flush(self) -> None:
        pass

    @property
    def queued_ms(self) -> float:
        return 1000.0

    @property
    def played_ms(self) -> float:
        return self.played


async def python_calls_per_frame(frames: list[AudioChunk]) -> float:
    pipeline = VoicePipeline(vad=WebRtcVAD(), stt_timeout=None)
    media = AgentTalking(frames)
    calls = 0

    def count(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal calls
        if event == "call":
            calls += 1

    async with pipeline.attach(media):
        # The agent talks over the whole stretch: its levels are the echo gate's
        # reference, and an answer whose audio has started is on.
        for k in range(len(frames) + 20):
            pipeline._out_levels.append((k * 20.0, k * 20.0 + 20.0, -20.0 - (k % 7)))
        out = _Output(interruptible=False)
        out.segments.append(_Segment("We are open.", None, start_pos=0.0, end_pos=9e9))
        pipeline._output = out
        sys.setprofile(count)
        try:
            await media.done.wait()
        finally:
            sys.setprofile(None)
    return calls / len(frames)


async def test_a_caller_frame_costs_few_python_calls() -> None:
    # Per frame while the agent talks: 20.2 calls before (the frame's duration through
    # three properties, its energy through the G.711 decoder's dispatch, WebRTC VAD's
    # format checks, a scan of the answer's segments for whether its audio started,
    # max() per level of the echo gate's window), 13.2 now.
    per_frame = await python_calls_per_frame(caller_frames(FRAMES))
    assert per_frame <= 15.0


@pytest.mark.parametrize("ms", [10, 20, 30])
@pytest.mark.parametrize("rate", [8000, 16000])
def test_vad_fast_path_judges_pcm16_frames_as_before(
    ms: int, rate: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    frames = [
        AudioChunk(f.data[: rate // 1000 * ms * 2], rate, Codec.PCM16) for f in caller_frames(200)
    ]
    frames += [AudioChunk(bytes(rate // 1000 * ms * 2), rate, Codec.PCM16)] * 30  # silence
    direct = WebRtcVAD().session()
    checked = WebRtcVAD().session()
    decoded: list[Codec] = []
    real_decode = g711.decode

    def counting(data: bytes, codec: Codec) -> bytes:
        decoded.append(codec)
        return real_decode(data, codec)

    monkeypatch.setattr(g711, "decode", counting)
    got = [direct.is_speech(f) for f in frames]
    assert decoded == []  # PCM16 of a length webrtcvad takes: no checks, no decode
    monkeypatch.setattr(g711, "decode", real_decode)
    want = [bool(checked._vad.is_speech(f.data, rate)) for f in frames]
    assert got == want
    assert any(got) and not all(got)
