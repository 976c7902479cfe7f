"""In-memory media for testing voice agents without a phone, a network or real time.

:class:`MemoryMediaIO` is a real :class:`~voxtra.pipeline.io.MediaIO`: it paces outbound
audio in 20 ms frames, records every frame "played" with its time, and feeds the
pipeline caller audio that the test injects (silence when there is none). With
``virtual=True`` (the default) it runs on a :class:`VirtualClock` that advances 20 ms
each time the pipeline takes an inbound frame, after letting every other task run, so
a ten-second conversation takes milliseconds and plays out the same way every time.
Virtual time only suits providers that wait on the same clock (test doubles): with
engines that compute in threads or talk to a server, ticks race ahead of them, so use
``virtual=False`` to measure anything about those.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

import anyio
import anyio.lowlevel
import numpy as np

from voxtra.media.frames import FRAME_MS, AudioChunk, Codec
from voxtra.pipeline.io import Clock, MonotonicClock

__all__ = ["MemoryMediaIO", "PlayedFrame", "VirtualClock", "silence_frames", "tone_frames"]


class VirtualClock:
    """A clock that only moves when told to (``advance``); ``sleep`` waits for it.

    After ``release()`` it runs free: every sleep advances it at once, so code still
    sleeping after the test's media has ended does not hang.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._waiters: list[tuple[float, int, anyio.Event]] = []
        self._seq = itertools.count()
        self._free = False

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0 or self._free:
            self._now += max(0.0, seconds)
            await anyio.lowlevel.checkpoint()
            return
        event = anyio.Event()
        heapq.heappush(self._waiters, (self._now + seconds, next(self._seq), event))
        await event.wait()

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has come."""
        self._now += seconds
        while self._waiters and self._waiters[0][0] <= self._now + 1e-9:
            heapq.heappop(self._waiters)[2].set()

    def release(self) -> None:
        """Wake all sleepers and let future sleeps pass at once."""
        self._free = True
        while self._waiters:
            heapq.heappop(self._waiters)[2].set()


@dataclass(frozen=True, slots=True)
class PlayedFrame:
    """One outbound frame and the clock time its playout started."""

    at: float
    chunk: AudioChunk


def _frames_of(chunk: AudioChunk, ms: int = FRAME_MS) -> list[AudioChunk]:
    step = AudioChunk.frame_bytes(chunk.codec, chunk.sample_rate, ms)
    if step <= 0:
        return [chunk]
    data = chunk.data
    return [
        AudioChunk(data[i : i + step], chunk.sample_rate, chunk.codec)
        for i in range(0, len(data), step)
    ]


class MemoryMediaIO:
    """A call's media in memory: inject caller audio, inspect what was played.

    ``codec`` / ``sample_rate``: format of the inbound frames (and of the silence sent
    when nothing is injected). Outbound audio keeps its format and is re-framed into
    20 ms frames across ``send`` calls, as a transport does.
    ``settle_steps``: event-loop turns given to other tasks per virtual frame.
    """

    def __init__(
        self,
        *,
        codec: Codec = Codec.ULAW,
        sample_rate: int = 8000,
        virtual: bool = True,
        settle_steps: int = 12,
    ) -> None:
        self.codec = codec
        self.sample_rate = sample_rate
        self.virtual = virtual
        self.settle_steps = settle_steps
        self.clock: Clock = VirtualClock() if virtual else MonotonicClock()
        self.played: list[PlayedFrame] = []
        self.flushes: list[float] = []
        """Clock times of every ``flush()``."""
        self.received: list[AudioChunk] = []
        """Every chunk passed to ``send``, unsplit."""
        self._inbound: deque[AudioChunk] = deque()
        self._outbound: deque[AudioChunk] = deque()
        self._tail: AudioChunk | None = None
        self._queued_ms = 0.0
        self._played_ms = 0.0
        self._hung_up = False
        self._started = False
        self._silence = AudioChunk.silence(codec, sample_rate)

    # -- MediaIO

    async def frames(self) -> AsyncIterator[AudioChunk]:
        if self._started:
            raise RuntimeError("MemoryMediaIO.frames() can be iterated only once")
        self._started = True
        start = self.clock.now()
        tick = 0
        try:
            while not self._hung_up:
                if tick:
                    if isinstance(self.clock, VirtualClock):
                        self.clock.advance(FRAME_MS / 1000)
                        for _ in range(self.settle_steps):
                            await anyio.lowlevel.checkpoint()
                    else:
                        await anyio.sleep(
                            max(0.0, start + tick * FRAME_MS / 1000 - self.clock.now())
                        )
                if self._hung_up:
                    break
                self._play_one()
                tick += 1
                yield self._inbound.popleft() if self._inbound else self._silence
        finally:
            self._hung_up = True
            if isinstance(self.clock, VirtualClock):
                self.clock.release()

    async def send(self, chunk: AudioChunk) -> None:
        self.received.append(chunk)
        self._queued_ms += chunk.duration_ms
        tail = self._tail
        if tail is not None and (tail.codec, tail.sample_rate) != (chunk.codec, chunk.sample_rate):
            self._outbound.append(tail)  # format change: the short tail plays on its own
            tail = None
        data = (tail.data if tail is not None else b"") + chunk.data
        step = AudioChunk.frame_bytes(chunk.codec, chunk.sample_rate)
        whole = len(data) - len(data) % step if step else len(data)
        for i in range(0, whole, step or 1):
            self._outbound.append(AudioChunk(data[i : i + step], chunk.sample_rate, chunk.codec))
        rest = data[whole:]
        self._tail = AudioChunk(rest, chunk.sample_rate, chunk.codec) if rest else None
        await anyio.lowlevel.checkpoint()

    async def flush(self) -> None:
        self._outbound.clear()
        self._tail = None
        self._queued_ms = 0.0
        self.flushes.append(self.clock.now())
        await anyio.lowlevel.checkpoint()

    @property
    def queued_ms(self) -> float:
        return self._queued_ms

    @property
    def played_ms(self) -> float:
        return self._played_ms

    # -- test controls

    def inject(self, frames: Iterable[AudioChunk]) -> None:
        """Queue caller audio; it is delivered one frame per 20 ms tick, in order."""
        for chunk in frames:
            self._inbound.extend(_frames_of(chunk))

    def hangup(self) -> None:
        """End the call: ``frames()`` stops at its next tick."""
        self._hung_up = True

    @property
    def hung_up(self) -> bool:
        return self._hung_up

    @property
    def pending_inbound_ms(self) -> float:
        return sum(f.duration_ms for f in self._inbound)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float | None = None) -> None:
        """Wait (on the media clock) until ``predicate()`` holds; TimeoutError after ``timeout``."""
        deadline = None if timeout is None else self.clock.now() + timeout
        while not predicate():
            if deadline is not None and self.clock.now() >= deadline:
                raise TimeoutError(f"condition not met within {timeout} s")
            if self._hung_up:
                await anyio.lowlevel.checkpoint()
                if not predicate():
                    raise TimeoutError("media ended before the condition was met")
                return
            await self.clock.sleep(FRAME_MS / 1000)

    def played_audio_ms(self, since: float = -math.inf) -> float:
        """Milliseconds of audio played at or after clock time ``since``."""
        return sum(p.chunk.duration_ms for p in self.played if p.at >= since)

    def _play_one(self) -> None:
        if not self._outbound and self._tail is not None:
            # Nothing more came: the partial last frame plays (as if padded).
            self._outbound.append(self._tail)
            self._tail = None
        if self._outbound:
            frame = self._outbound.popleft()
            self._queued_ms = max(0.0, self._queued_ms - frame.duration_ms)
            if not self._outbound and self._tail is None:
                # Chunks of odd lengths (espeak's 22,050 Hz) summed as floats and taken
                # back a frame at a time left a residue such as 1e-13 in 89 of 200 random
                # chunkings: "nothing queued" must read exactly 0.
                self._queued_ms = 0.0
            self._played_ms += frame.duration_ms
            self.played.append(PlayedFrame(self.clock.now(), frame))


def tone_frames(
    ms: int,
    *,
    freq: float = 300.0,
    level_db: float = -20.0,
    codec: Codec = Codec.ULAW,
    sample_rate: int = 8000,
) -> list[AudioChunk]:
    """A sine tone at ``level_db`` dBFS (RMS), cut into 20 ms frames: stand-in speech."""
    n = sample_rate * ms // 1000
    amp = 32767 * math.sqrt(2) * 10 ** (level_db / 20)
    t = np.arange(n) / sample_rate
    pcm = np.clip(amp * np.sin(2 * np.pi * freq * t), -32768, 32767).astype("<i2").tobytes()
    chunk = AudioChunk(pcm, sample_rate, Codec.PCM16)
    if codec is not Codec.PCM16:
        from voxtra.media import g711

        chunk = g711.encode(chunk, codec)
    return _frames_of(chunk)


def silence_frames(
    ms: int, *, codec: Codec = Codec.ULAW, sample_rate: int = 8000
) -> list[AudioChunk]:
    """Digital silence, cut into 20 ms frames."""
    return [AudioChunk.silence(codec, sample_rate) for _ in range(ms // FRAME_MS)]
