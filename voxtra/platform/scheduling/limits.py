"""How many calls may start now under ``max_concurrent`` and ``calls_per_minute``.

Sans-IO: the caller reads the figures from the store (calls still up, start times of
the last minute, counted over every worker) while holding the campaign's row lock, asks
here, and records the starts it makes before releasing the lock. So the limits hold
across workers because their state is in the store, not in any one process.

The rate is a sliding log, not a token bucket: no 60-second span, wherever it is put,
holds more than ``calls_per_minute`` starts, which is what an operator (and the test,
from the store's timestamps) checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["RATE_SPAN", "Allowance", "allowance"]

RATE_SPAN = timedelta(seconds=60)


@dataclass(frozen=True)
class Allowance:
    """``count`` calls may start now; if 0 because of the rate, ``retry_at`` is when the
    oldest start leaves the span (``None``: wait for a call to end)."""

    count: int
    retry_at: datetime | None = None


def allowance(
    *,
    now: datetime,
    max_concurrent: int | None,
    active: int,
    calls_per_minute: int | None,
    recent_starts: Sequence[datetime],
) -> Allowance:
    """``recent_starts``: start times of the campaign's attempts after ``now - 60 s``."""
    free = max(0, max_concurrent - active) if max_concurrent is not None else 1 << 30
    if calls_per_minute is None:
        return Allowance(free)
    starts = sorted(s for s in recent_starts if s > now - RATE_SPAN)
    room = max(0, calls_per_minute - len(starts))
    if room == 0:
        # The span ending at t holds the starts after t - 60 s: one slot frees when the
        # (len - limit + 1)-th oldest start is exactly 60 s old.
        oldest = starts[len(starts) - calls_per_minute]
        return Allowance(0, oldest + RATE_SPAN)
    return Allowance(min(free, room))
