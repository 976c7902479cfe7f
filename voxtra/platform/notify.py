"""Wake-ups for live readers of a call's events (the server-sent event streams).

The events themselves are rows of ``call_events``: a reader reads what is new from the
store and then waits here for the next write in this process, or a poll interval
(a call handled by another worker writes no wake-up here).
"""

from __future__ import annotations

import asyncio
import contextlib

__all__ = ["CallNotifier"]


class CallNotifier:
    """``notify(call_id)`` wakes every ``wait(call_id, timeout)`` of that call."""

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = {}

    def notify(self, call_id: str) -> None:
        for event in self._waiters.get(call_id, ()):
            event.set()

    async def wait(self, call_id: str, timeout: float) -> bool:
        """Wait for a write about ``call_id``; True if woken, False at the timeout."""
        event = asyncio.Event()
        waiters = self._waiters.setdefault(call_id, set())
        waiters.add(event)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
            return event.is_set()
        finally:
            waiters.discard(event)
            if not waiters:
                self._waiters.pop(call_id, None)
