"""Calling windows: the days and hours a contact may be called, on the contact's clock.

A window is read on the wall clock of the contact's time zone: ``mon-fri 09:00-17:00``
in ``America/New_York`` opens at 09:00 New York time whatever the season. Sans-IO:
every answer is computed from an instant given by the caller (an injected clock).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from voxtra.platform.scheduling.errors import InvalidCallingWindow
from voxtra.platform.scheduling.timezones import local_to_utc, utc

__all__ = ["DAYS", "CallingWindow", "is_open", "next_open"]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Day names in ``datetime.weekday()`` order."""


def _minutes(text: str, *, end: bool) -> int:
    hours, sep, minutes = text.partition(":")
    if not sep or not hours.isdigit() or not minutes.isdigit() or len(minutes) != 2:
        raise InvalidCallingWindow(f"time {text!r}: HH:MM expected")
    try:
        value = int(hours) * 60 + int(minutes)
    except ValueError:
        # Digits int() refuses: "²" (isdigit, not a decimal) or 5,000 of them (past its
        # 4,300). The ValueError was a 500 from POST /v1/campaigns.
        raise InvalidCallingWindow(f"time {text!r}: HH:MM expected") from None
    if int(minutes) > 59 or value > (24 * 60 if end else 24 * 60 - 1):
        raise InvalidCallingWindow(f"time {text!r} is not a time of day")
    return value


@dataclass(frozen=True)
class CallingWindow:
    """Calls may start on ``days`` from ``start`` (inclusive) to ``end`` (exclusive).

    Times are ``"HH:MM"``; ``end`` may be ``"24:00"``. A window that crosses midnight is
    written as two (``22:00-24:00`` and ``00:00-02:00`` on the next days).
    """

    start: str = "00:00"
    end: str = "24:00"
    days: tuple[str, ...] = field(default=DAYS)

    def __post_init__(self) -> None:
        days = tuple(d.lower() for d in self.days)
        unknown = [d for d in days if d not in DAYS]
        if unknown or not days:
            raise InvalidCallingWindow(f"days {list(self.days)!r}: use {', '.join(DAYS)}")
        object.__setattr__(self, "days", days)
        if self.start_minute >= self.end_minute:
            raise InvalidCallingWindow(f"window {self.start}-{self.end}: start must be before end")

    @property
    def start_minute(self) -> int:
        return _minutes(self.start, end=False)

    @property
    def end_minute(self) -> int:
        return _minutes(self.end, end=True)

    def contains(self, wall: datetime) -> bool:
        """Whether the wall-clock time ``wall`` is inside the window."""
        minute = wall.hour * 60 + wall.minute
        return DAYS[wall.weekday()] in self.days and self.start_minute <= minute < self.end_minute


def is_open(windows: Sequence[CallingWindow], at: datetime, tz: ZoneInfo) -> bool:
    """Whether a call may start at the instant ``at`` for a contact in ``tz``.

    No windows means always open.
    """
    if not windows:
        return True
    wall = utc(at).astimezone(tz).replace(tzinfo=None)
    return any(w.contains(wall) for w in windows)


def _wall(day: date, minute: int) -> datetime:
    if minute >= 24 * 60:
        return datetime.combine(day + timedelta(days=1), time(0))
    return datetime.combine(day, time(minute // 60, minute % 60))


def next_open(windows: Sequence[CallingWindow], at: datetime, tz: ZoneInfo) -> datetime:
    """The first instant at or after ``at`` (UTC) when a call may start in ``tz``.

    ``at`` itself when open now. A window start that falls into a spring-forward gap
    opens at the jump; in the autumn overlap the first of the two instants counts.
    """
    at = utc(at)
    if is_open(windows, at, tz):
        return at
    today = at.astimezone(tz).date()
    best: datetime | None = None
    for offset in range(0, 9):  # every weekday is within a week; one spare for DST
        day = today + timedelta(days=offset)
        for window in windows:
            if DAYS[day.weekday()] not in window.days:
                continue
            opens = local_to_utc(_wall(day, window.start_minute), tz)
            closes = local_to_utc(_wall(day, window.end_minute), tz)
            if closes <= at or opens >= closes:
                continue  # gone already, or swallowed whole by a DST gap
            candidate = max(opens, at)
            if best is None or candidate < best:
                best = candidate
        if best is not None:
            return best
    raise InvalidCallingWindow("no calling window ever opens")  # pragma: no cover
