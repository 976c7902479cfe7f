"""Time zone names to ``ZoneInfo``, and wall-clock times to instants across DST."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from voxtra.platform.scheduling.errors import InvalidTime, InvalidTimeZone

__all__ = ["instant", "local_to_utc", "utc", "zone"]


def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; :class:`InvalidTimeZone` if unknown.

    ``ZoneInfo`` also takes file paths; a name is checked for shape first so nothing an
    API client sends reaches the file system as a path.
    """
    if not name or name.startswith(("/", ".")) or ".." in name or "\\" in name or len(name) > 64:
        raise InvalidTimeZone(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidTimeZone(f"unknown time zone {name!r}") from exc


def utc(at: datetime) -> datetime:
    """``at`` as an aware UTC datetime (a naive one is taken as UTC already)."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _exists(wall: datetime, tz: ZoneInfo) -> bool:
    instant = wall.replace(tzinfo=tz).astimezone(UTC)
    return instant.astimezone(tz).replace(tzinfo=None) == wall


def local_to_utc(wall: datetime, tz: ZoneInfo) -> datetime:
    """The instant the wall-clock time ``wall`` (naive) is reached in ``tz``.

    In the autumn overlap the first of the two instants; in the spring gap (02:30 that
    never happens in Berlin on the last Sunday of March) the moment the clock jumps,
    which is the first instant whose wall time is at or after ``wall``, as cron does.
    """
    wall = wall.replace(tzinfo=None)
    if _exists(wall, tz):
        return wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    # In a gap: fold=1 maps with the offset after the jump, landing before the jump;
    # walk forward to the jump itself (gaps are at most a few hours).
    instant = wall.replace(tzinfo=tz, fold=1).astimezone(UTC).replace(second=0, microsecond=0)
    for _ in range(24 * 60):
        if instant.astimezone(tz).replace(tzinfo=None) >= wall:
            return instant
        instant += timedelta(minutes=1)
    return wall.replace(tzinfo=tz).astimezone(UTC)  # pragma: no cover - no such zone


def instant(at: datetime, tz: ZoneInfo) -> datetime:
    """``at`` as an aware UTC instant: without an offset, a wall time in ``tz``
    (:func:`local_to_utc`); with one, that instant.

    :class:`InvalidTime` if it is within a day of the calendar's ends: an API client's
    ``9999-12-31T23:00:00-05:00`` is past the year 9999 in UTC, and the conversion's
    ``OverflowError`` was a 500.
    """
    edge = timedelta(days=1)
    wall = at.replace(tzinfo=None)
    if not datetime.min + edge <= wall <= datetime.max - edge:
        raise InvalidTime(f"{at.isoformat()} is out of range (years 1 to 9999)")
    return local_to_utc(at, tz) if at.tzinfo is None else utc(at)
