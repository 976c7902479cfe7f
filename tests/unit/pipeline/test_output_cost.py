"""The output side's per-frame work (issue 15): the echo gate's levels of the agent's
audio are computed for a whole TTS chunk at once, with the same figures as frame by
frame, and waiting for an answer to play out does not wake every 20 ms."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from voxtra.media import g711
from voxtra.media.frames import AudioChunk, Codec
from voxtra.pipeline.pipeline import VoicePipeline
from voxtra.pipeline.testing import MemoryMediaIO, VirtualClock
from voxtra.pipeline.turn import frame_energy_db
from voxtra.testing.doubles import ScriptedTTS


def speech_like(ms: int, rate: int = 8000) -> bytes:
    """A tone rising and falling in level, with stretches of digital silence."""
    n = rate * ms // 1000
    t = np.arange(n) / rate
    env = np.abs(np.sin(2 * np.pi * 1.3 * t)) * 12000
    pcm = env * np.sin(2 * np.pi * 310 * t)
    pcm[n // 3 : n // 3 + rate // 10] = 0  # 100 ms of silence
    return pcm.astype("<i2").tobytes()


@pytest.mark.parametrize(
    ("codec", "rate"), [(Codec.ULAW, 8000), (Codec.ALAW, 8000), (Codec.PCM16, 16000)]
)
async def test_levels_of_a_chunk_are_those_of_its_frames(codec: Codec, rate: int) -> None:
    pcm = AudioChunk(speech_like(1010, rate), rate, Codec.PCM16)  # 50 frames and a tail
    chunk = g711.encode(pcm, codec) if codec is not Codec.PCM16 else pcm
    p = VoicePipeline()
    p._note_levels(chunk, 5000.0)
    step = AudioChunk.frame_bytes(codec, rate)
    frames = [
        AudioChunk(chunk.data[i : i + step], rate, codec) for i in range(0, len(chunk.data), step)
    ]
    want = [frame_energy_db(f) for f in frames]
    got = list(p._out_levels)
    assert len(got) == len(frames) == 51
    # the same figures to the last bit (numpy's log10 of the chunk's frames was off
    # by an ulp now and then; the sums of squares are exact either way)
    assert [lvl for _, _, lvl in got] == want
    if codec is not Codec.ALAW:  # (A-law has no exact zero)
        assert -100.0 in want  # silent frames keep the silence figure
    assert got[0][0] == pytest.approx(5000.0 - 1010.0) and got[-1][1] == pytest.approx(5000.0)
    assert all(math.isclose(b[0], a[1]) for a, b in itertools.pairwise(got))


class CountingClock(VirtualClock):
    def __init__(self) -> None:
        super().__init__()
        self.sleeps = 0

    async def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        await super().sleep(seconds)


async def test_waiting_for_playout_does_not_wake_every_frame() -> None:
    media = MemoryMediaIO()
    clock = CountingClock()
    media.clock = clock
    tts = ScriptedTTS(clock, ms_per_char=100.0)  # 3 s of audio for 30 characters
    p = VoicePipeline(tts=tts, tts_timeout=None)  # (a deadline sleeps on the clock too)
    async with p.attach(media, clock=clock):
        result = await p.say("We are open from nine to five.")
        media.hangup()
    assert not result.interrupted and result.played_ms == pytest.approx(3000, abs=20)
    assert media.played_audio_ms() == pytest.approx(3000, abs=20)
    # 3 s played: one sleep for the TTS's first byte, a few for the playout (it was
    # one every 20 ms: 150)
    assert clock.sleeps <= 10
