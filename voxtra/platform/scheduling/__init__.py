"""Scheduling rules, sans-IO: calling windows, cron in a time zone, rate and concurrency
allowance, retry policy and the contact state machine. Every function takes the
current instant from its caller (an injected clock); nothing here does I/O."""

from voxtra.platform.scheduling.contacts import (
    FINAL_STATES,
    AttemptOutcome,
    ContactState,
    ContactStatus,
)
from voxtra.platform.scheduling.cron import CronSchedule
from voxtra.platform.scheduling.errors import (
    InvalidCallingWindow,
    InvalidCron,
    InvalidRetryPolicy,
    InvalidTime,
    InvalidTimeZone,
    InvalidTransition,
)
from voxtra.platform.scheduling.limits import RATE_SPAN, Allowance, allowance
from voxtra.platform.scheduling.retry import MAX_DELAY, RetryBackoff, RetryPolicy
from voxtra.platform.scheduling.timezones import instant, local_to_utc, utc, zone
from voxtra.platform.scheduling.windows import DAYS, CallingWindow, is_open, next_open

__all__ = [
    "DAYS",
    "FINAL_STATES",
    "MAX_DELAY",
    "RATE_SPAN",
    "Allowance",
    "AttemptOutcome",
    "CallingWindow",
    "ContactState",
    "ContactStatus",
    "CronSchedule",
    "InvalidCallingWindow",
    "InvalidCron",
    "InvalidRetryPolicy",
    "InvalidTime",
    "InvalidTimeZone",
    "InvalidTransition",
    "RetryBackoff",
    "RetryPolicy",
    "allowance",
    "instant",
    "is_open",
    "local_to_utc",
    "next_open",
    "utc",
    "zone",
]
