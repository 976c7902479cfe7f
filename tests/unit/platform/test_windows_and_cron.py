"""Calling windows and cron, on the wall clock of a time zone, across DST (sans-IO: every
instant is given, as an injected clock would)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from voxtra.platform.scheduling import (
    CallingWindow,
    CronSchedule,
    InvalidCallingWindow,
    InvalidCron,
    InvalidTimeZone,
    is_open,
    local_to_utc,
    next_open,
    zone,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
OFFICE = [CallingWindow("09:00", "17:00", ("mon", "tue", "wed", "thu", "fri"))]


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_a_window_is_read_on_the_contacts_clock() -> None:
    # Monday 2026-11-30 14:30 UTC: 15:30 in Berlin (open), 09:30 in New York (open),
    # and 13:30 UTC is 08:30 in New York (closed).
    assert is_open(OFFICE, at("2026-11-30T14:30"), BERLIN)
    assert is_open(OFFICE, at("2026-11-30T14:30"), NEW_YORK)
    assert not is_open(OFFICE, at("2026-11-30T13:30"), NEW_YORK)
    # 16:59 Berlin is open, 17:00 is not (end exclusive)
    assert is_open(OFFICE, at("2026-11-30T15:59"), BERLIN)
    assert not is_open(OFFICE, at("2026-11-30T16:00"), BERLIN)


def test_next_open_is_the_next_start_on_the_contacts_clock() -> None:
    # Friday 2026-12-04 17:30 Berlin: next is Monday 09:00 Berlin = 08:00 UTC
    assert next_open(OFFICE, at("2026-12-04T16:30"), BERLIN) == at("2026-12-07T08:00")
    # open now: now
    assert next_open(OFFICE, at("2026-12-04T10:00"), BERLIN) == at("2026-12-04T10:00")
    # before opening the same day
    assert next_open(OFFICE, at("2026-12-04T05:00"), BERLIN) == at("2026-12-04T08:00")
    # no windows: always open
    assert next_open([], at("2026-12-05T03:00"), BERLIN) == at("2026-12-05T03:00")


def test_a_window_keeps_its_local_hours_across_dst() -> None:
    # Berlin springs forward on Sunday 2026-03-29. Friday 09:00 is 08:00 UTC (CET);
    # Monday 09:00 is 07:00 UTC (CEST).
    assert next_open(OFFICE, at("2026-03-27T06:00"), BERLIN) == at("2026-03-27T08:00")
    assert next_open(OFFICE, at("2026-03-27T17:00"), BERLIN) == at("2026-03-30T07:00")
    assert is_open(OFFICE, at("2026-03-30T07:00"), BERLIN)
    assert not is_open(OFFICE, at("2026-03-30T06:59"), BERLIN)


def test_a_window_starting_in_the_spring_gap_opens_at_the_jump() -> None:
    night = [CallingWindow("02:30", "04:00", ("sun",))]
    # 02:30 never happens on 2026-03-29 in Berlin: the clock jumps 02:00 -> 03:00 at 01:00 UTC
    assert next_open(night, at("2026-03-29T00:00"), BERLIN) == at("2026-03-29T01:00")
    assert local_to_utc(datetime(2026, 3, 29, 2, 30), BERLIN) == at("2026-03-29T01:00")
    # the autumn overlap: 02:30 happens twice on 2026-10-25; the first one counts
    assert local_to_utc(datetime(2026, 10, 25, 2, 30), BERLIN) == at("2026-10-25T00:30")


def test_windows_are_checked() -> None:
    with pytest.raises(InvalidCallingWindow):
        CallingWindow("17:00", "09:00")
    with pytest.raises(InvalidCallingWindow):
        CallingWindow("09:00", "25:00")
    with pytest.raises(InvalidCallingWindow):
        CallingWindow("9", "10:00")
    with pytest.raises(InvalidCallingWindow):
        CallingWindow(days=("monday",))
    assert CallingWindow("22:00", "24:00").end_minute == 24 * 60


def test_time_zones_are_names_never_paths() -> None:
    assert zone("Europe/Berlin") == BERLIN
    for bad in ("Mars/Olympus", "../../etc/passwd", "/etc/localtime", ""):
        with pytest.raises(InvalidTimeZone):
            zone(bad)


def test_a_monday_nine_oclock_call_stays_nine_oclock_local_across_dst() -> None:
    weekly = CronSchedule("0 9 * * MON", "Europe/Berlin")
    runs = weekly.runs(at("2026-03-16T00:00"), 4)
    assert [r.astimezone(BERLIN).strftime("%a %H:%M") for r in runs] == ["Mon 09:00"] * 4
    # UTC moves by an hour at the change (CET -> CEST on 2026-03-29)
    assert runs == [
        at("2026-03-16T08:00"),
        at("2026-03-23T08:00"),
        at("2026-03-30T07:00"),
        at("2026-04-06T07:00"),
    ]
    autumn = weekly.runs(at("2026-10-19T00:00"), 2)
    assert autumn == [at("2026-10-19T07:00"), at("2026-10-26T08:00")]


def test_cron_in_the_dst_gap_and_overlap_runs_once() -> None:
    nightly = CronSchedule("30 2 * * *", "Europe/Berlin")
    # spring: 02:30 does not exist on 03-29; the run happens at the jump (03:00 CEST)
    assert nightly.runs(at("2026-03-28T12:00"), 2) == [
        at("2026-03-29T01:00"),
        at("2026-03-30T00:30"),
    ]
    # autumn: 02:30 happens twice on 10-25; one run only
    assert nightly.runs(at("2026-10-24T12:00"), 2) == [
        at("2026-10-25T00:30"),
        at("2026-10-26T01:30"),
    ]
    # asked from inside the overlap, past the first 02:30: the next day's, not a second one
    assert nightly.next_after(at("2026-10-25T01:10")) == at("2026-10-26T01:30")


def test_cron_every_quarter_hour_through_the_autumn_overlap_never_goes_back() -> None:
    quarter = CronSchedule("*/15 * * * *", "Europe/Berlin")
    runs = quarter.runs(at("2026-10-24T23:50"), 12)
    assert all(b > a for a, b in itertools.pairwise(runs))


def test_cron_expressions_and_zones_are_checked() -> None:
    for bad in ("61 * * * *", "* * *", "0 9 * * FUNDAY", "0 0 0 0 0 0"):
        with pytest.raises(InvalidCron):
            CronSchedule(bad, "UTC")
    with pytest.raises(InvalidTimeZone):
        CronSchedule("0 9 * * *", "Nowhere/City")
    with pytest.raises(InvalidCron):
        CronSchedule("0 0 31 2 *", "UTC").next_after(at("2026-01-01T00:00"))
    assert CronSchedule("0 9 * * *", "UTC").next_after(at("2026-01-01T09:00")) - at(
        "2026-01-01T09:00"
    ) == timedelta(days=1)
