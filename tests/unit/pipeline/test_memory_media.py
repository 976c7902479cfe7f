from __future__ import annotations

import time

import anyio
import pytest

from voxtra.media.frames import AudioChunk, Codec
from voxtra.pipeline.io import MediaIO
from voxtra.pipeline.testing import MemoryMediaIO, VirtualClock, silence_frames, tone_frames


def pcm(ms: int, rate: int = 8000) -> AudioChunk:
    return AudioChunk(b"\x01\x00" * (rate * ms // 1000), rate, Codec.PCM16)


async def test_paces_playout_on_the_virtual_clock() -> None:
    media = MemoryMediaIO()
    assert isinstance(media, MediaIO)
    await media.send(pcm(100, 16000))
    assert media.queued_ms == 100 and media.played_ms == 0
    media.inject(tone_frames(40))
    got: list[AudioChunk] = []
    async for frame in media.frames():
        got.append(frame)
        if len(got) == 3:
            assert media.played_ms == 60 and media.queued_ms == 40
            await media.flush()
        if len(got) == 6:
            media.hangup()
    assert len(got) == 6
    # Two injected tone frames first, then silence in the inbound codec.
    assert got[2] == AudioChunk.silence(Codec.ULAW) and got[0] != got[2]
    assert [p.at for p in media.played] == pytest.approx([0.0, 0.02, 0.04])
    assert all(p.chunk.sample_rate == 16000 and p.chunk.duration_ms == 20 for p in media.played)
    assert media.flushes == pytest.approx([0.04])
    assert media.played_ms == 60 and media.queued_ms == 0
    assert media.clock.now() == pytest.approx(0.10)


async def test_frames_only_once_and_clock_released_after_hangup() -> None:
    media = MemoryMediaIO()
    media.hangup()
    assert [f async for f in media.frames()] == []
    with pytest.raises(RuntimeError):
        async for _ in media.frames():
            pass
    # After the call, sleeping on the clock does not hang.
    await media.clock.sleep(5)
    assert media.clock.now() == pytest.approx(5)


async def test_virtual_clock_wakes_sleepers_in_order() -> None:
    clock = VirtualClock()
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, s: float) -> None:
        await clock.sleep(s)
        woke.append((name, clock.now()))

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper, "b", 0.5)
        tg.start_soon(sleeper, "a", 0.1)
        await anyio.sleep(0.01)
        clock.advance(0.2)
        await anyio.sleep(0.01)
        assert woke == [("a", pytest.approx(0.2))]
        clock.advance(0.3)
    assert [n for n, _ in woke] == ["a", "b"]


async def test_real_clock_mode_paces_in_real_time() -> None:
    media = MemoryMediaIO(virtual=False)
    await media.send(pcm(200))
    start = time.monotonic()
    n = 0
    async for _ in media.frames():
        n += 1
        if n == 11:
            media.hangup()
    elapsed = time.monotonic() - start
    assert 0.19 <= elapsed < 0.6
    assert media.played_ms == 200
    gaps = [b.at - a.at for a, b in zip(media.played, media.played[1:], strict=False)]
    assert all(0.01 < g < 0.06 for g in gaps)


def test_helpers() -> None:
    assert len(silence_frames(100)) == 5
    frames = tone_frames(50, codec=Codec.PCM16, sample_rate=16000)
    assert [f.duration_ms for f in frames] == [20, 20, 10]


async def test_small_chunks_are_reframed_into_20ms_frames() -> None:
    media = MemoryMediaIO()
    for _ in range(5):
        await media.send(pcm(9))  # 45 ms in 9 ms pieces
    assert media.queued_ms == pytest.approx(45)
    async for _ in media.frames():
        if media.queued_ms == 0:
            media.hangup()
    assert [p.chunk.duration_ms for p in media.played] == pytest.approx([20, 20, 5])
    assert media.played_ms == pytest.approx(45)


async def test_nothing_queued_reads_exactly_zero_after_odd_chunks_at_22050_hz() -> None:
    """espeak's 22,050 Hz chunks of odd lengths, summed as floats and taken back a frame
    at a time, left ``queued_ms`` at a residue such as 1e-13 once everything had played:
    a test waiting for ``queued_ms == 0`` waited for ever (the Gemini fallback test, CI)."""
    media = MemoryMediaIO()
    sizes = [18, 3649, 2182, 1875, 4843, 838, 2601, 251]  # left 5e-14 before
    for n in sizes:
        await media.send(AudioChunk(b"\x00\x01" * n, 22050, Codec.PCM16))
    sent = sum(n / 22050 * 1000 for n in sizes)
    assert media.queued_ms == pytest.approx(sent)
    ticks = 0
    async for _ in media.frames():
        ticks += 1
        if not media.queued_ms or ticks == 200:  # 37 frames play it all
            media.hangup()
    assert media.queued_ms == 0.0 and ticks < 200
    assert media.played_ms == pytest.approx(sent)
