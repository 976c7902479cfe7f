"""Sinks with injected failures, built on the real LocalFileSink."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from voxtra.recording import DeliveryError, LocalFileSink, RecordingMetadata


class FlakySink:
    """Fails the first ``failures`` deliveries (or all while ``broken``), then stores for real."""

    def __init__(self, directory: Path, name: str = "flaky", failures: int = 0) -> None:
        self.inner = LocalFileSink(directory, name=name)
        self.failures = failures
        self.broken = False
        self.calls: list[float] = []
        self.stored = 0
        self.closed = False

    @property
    def name(self) -> str:
        return self.inner.name

    async def deliver(self, path: Path, meta: RecordingMetadata) -> str:
        self.calls.append(time.monotonic())
        if self.broken or len(self.calls) <= self.failures:
            raise DeliveryError(self.name, f"injected failure #{len(self.calls)}")
        location = await self.inner.deliver(path, meta)
        self.stored += 1
        return location

    async def aclose(self) -> None:
        self.closed = True


class BlockingSink:
    """Never finishes until released: for cancellation and shutdown tests."""

    name = "blocking"

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.cancelled = False

    async def deliver(self, path: Path, meta: RecordingMetadata) -> str:
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return f"blocked://{meta.name}"
