"""The engine's clock: every timestamp it writes and every wait it makes goes through one,
so tests inject a fixed or accelerated one and several processes can share it."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["EngineClock", "ScaledClock", "SystemClock"]


class EngineClock(Protocol):
    def now(self) -> datetime:
        """Now, aware UTC."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        ...

    def real_seconds(self, seconds: float) -> float:
        """Wall seconds that ``seconds`` of this clock's time take."""
        ...


class SystemClock:
    """The machine's clock. Workers on several machines compare each other's timestamps
    (leases, the rate's 60 s span): keep their clocks synchronised (NTP)."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def real_seconds(self, seconds: float) -> float:
        return seconds


class ScaledClock:
    """Time that runs ``factor`` times faster than the wall clock from ``origin`` (a Unix
    time; several processes given the same origin and factor agree on the time)."""

    def __init__(self, factor: float, origin: float | None = None, start: datetime | None = None):
        self.factor = factor
        self.origin = time.time() if origin is None else origin
        self.start = start or datetime.fromtimestamp(self.origin, UTC)

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.time() - self.origin) * self.factor)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.factor)

    def real_seconds(self, seconds: float) -> float:
        return seconds / self.factor
