"""Errors of the scheduling rules: each is a rejected value, so a ``ConfigError``."""

from __future__ import annotations

from voxtra.errors import ConfigError, VoxtraError

__all__ = [
    "InvalidCallingWindow",
    "InvalidCron",
    "InvalidRetryPolicy",
    "InvalidTime",
    "InvalidTimeZone",
    "InvalidTransition",
]


class InvalidTimeZone(ConfigError):
    """Not an IANA time zone name this machine knows (``Europe/Berlin``, ``UTC``)."""


class InvalidTime(ConfigError):
    """A date and time too close to the ends of the calendar (years 1 and 9999) to be
    placed in a time zone."""


class InvalidCron(ConfigError):
    """A cron expression that does not parse (five fields: minute hour day month weekday)."""


class InvalidCallingWindow(ConfigError):
    """A calling window with unknown days or hours out of order."""


class InvalidRetryPolicy(ConfigError):
    """A retry policy with an unknown outcome or a negative figure."""


class InvalidTransition(VoxtraError):
    """A contact was asked to move from a state that does not allow it (a contact with a
    final outcome never gets a second one)."""
