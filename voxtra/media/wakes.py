"""Waking a tick's readers a slice at a time, so timers and I/O run between slices.

The shared ticker hands every call its inbound frame in one callback; woken at once,
every call's reader then runs in the event loop's next pass, and asyncio runs a pass's
ready callbacks to the end before it looks at timers or sockets. With 200 agent calls
on one core that pass took 5-8 ms (measured, ``bench/agent_density.py``): the next
tick's timer waited behind it (ticks p99 5.7 ms late against a 2 ms bound) and so did
every step of the turns in flight (a turn's STT, LLM and TTS replies are socket reads).

``ReaderWakes`` takes the waiting readers' futures and completes them ``slice_size``
per loop pass: the readers of one slice run, then the loop checks its timers and
sockets, then the next slice. Readers are woken in the order their frames came; the
last of 200 runs a few passes later, well within its 20 ms tick.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque

__all__ = ["SLICE_SIZE", "ReaderWakes", "reader_wakes"]

SLICE_SIZE = 24
"""Readers woken per loop pass. A reader's pass costs 15-30 us at 200 agent calls
(VAD, turn detection, the STT send every fifth frame), so a slice is about 0.5 ms: the
longest a due tick or a turn's reply waits behind the frames' hand-over."""


class ReaderWakes:
    """One event loop's queue of readers to wake, ``slice_size`` per loop pass."""

    def __init__(self, loop: asyncio.AbstractEventLoop, slice_size: int | None = None) -> None:
        self.loop = loop
        self.slice_size = max(1, SLICE_SIZE if slice_size is None else slice_size)
        self._due: deque[asyncio.Future[None]] = deque()
        self._scheduled = False
        self.passes = 0
        """Loop passes that woke readers (for tests and benchmarks)."""

    def __len__(self) -> int:
        """Readers waiting for their slice."""
        return len(self._due)

    def wake(self, waiters: list[asyncio.Future[None]]) -> None:
        """Complete ``waiters`` in coming loop passes, in order (cancelled ones skipped);
        at once if the loop is closed (nothing would run the passes)."""
        if self.loop.is_closed():
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)
            return
        self._due.extend(waiters)
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._run)

    def _run(self) -> None:
        due = self._due
        self.passes += 1
        try:
            for _ in range(min(len(due), self.slice_size)):
                fut = due.popleft()
                if not fut.done():
                    fut.set_result(None)
        finally:  # whatever happened, the rest still gets its pass
            if due:
                self.loop.call_soon(self._run)
            else:
                self._scheduled = False


_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, ReaderWakes] = (
    weakref.WeakKeyDictionary()
)


def reader_wakes(loop: asyncio.AbstractEventLoop | None = None) -> ReaderWakes:
    """The running (or given) loop's ``ReaderWakes``, made on first use."""
    loop = loop if loop is not None else asyncio.get_running_loop()
    found = _BY_LOOP.get(loop)
    if found is None:
        found = _BY_LOOP[loop] = ReaderWakes(loop)
    return found
