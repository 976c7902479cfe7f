"""Recurring schedules: a cron expression read in a time zone.

The expression is evaluated on the zone's wall clock, so ``0 9 * * MON`` in
``Europe/Berlin`` is 09:00 Berlin time every Monday, 08:00 UTC in winter and 07:00 UTC
in summer. Evaluation is ``cronsim``'s (small, no dependencies, typed, maintained with
healthchecks.io, which runs it for every check): it follows Debian cron on DST, so a
job whose wall time is skipped in spring runs at the jump and one in the repeated
autumn hour runs once. ``croniter`` was the other candidate; it pulls in dateutil and
its DST handling has been the subject of repeated bug reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

from voxtra.platform.scheduling.errors import InvalidCron
from voxtra.platform.scheduling.timezones import utc, zone

__all__ = ["CronSchedule"]


@dataclass(frozen=True)
class CronSchedule:
    """``expr`` (five fields) on the wall clock of ``tz`` (an IANA name)."""

    expr: str
    tz: str = "UTC"

    def __post_init__(self) -> None:
        fields = self.expr.split()
        if len(fields) != 5:
            raise InvalidCron(f"cron expression {self.expr!r}: five fields expected")
        try:
            CronSim(self.expr, datetime(2000, 1, 1, tzinfo=UTC))
        except CronSimError as exc:
            raise InvalidCron(f"cron expression {self.expr!r}: {exc}") from None
        zone(self.tz)

    @property
    def zone(self) -> ZoneInfo:
        return zone(self.tz)

    def next_after(self, after: datetime) -> datetime:
        """The first run strictly after ``after``, as an aware UTC datetime.

        Raises :class:`InvalidCron` if the expression never matches (``0 0 30 2 *``).
        """
        after = utc(after)
        start = after.astimezone(self.zone)
        try:
            runs = CronSim(self.expr, start)
            while True:
                run = next(runs).astimezone(UTC)
                # In the autumn overlap cronsim works on the wall time and may hand back
                # an instant at or before ``after`` (the first 01:30 when we are past
                # the second 01:30): skip it. Wall times only grow, so this ends once
                # the overlap (an hour: at most 60 runs of a per-minute job) is past.
                if run > after:
                    return run
        except StopIteration:
            raise InvalidCron(f"cron expression {self.expr!r} never matches") from None

    def runs(self, after: datetime, count: int) -> list[datetime]:
        """The next ``count`` runs after ``after`` (UTC)."""
        out: list[datetime] = []
        at = after
        for _ in range(count):
            at = self.next_after(at)
            out.append(at)
        return out
