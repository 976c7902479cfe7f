"""Retry policy per outcome: which failed attempts are tried again, how often, how late."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from voxtra.platform.scheduling.errors import InvalidRetryPolicy

__all__ = ["MAX_DELAY", "RetryBackoff", "RetryPolicy"]

MAX_DELAY = 365 * 24 * 3600.0
"""The longest wait before a retry (a year, in seconds). Unbounded, a ``max_delay`` of
1e12 s passed the API and then failed every outcome written under it: the retry's time
is past the last date Python has (year 9999), so the attempt was never ended."""

RETRYABLE = ("busy", "no_answer", "failed")
"""Attempt outcomes a policy may retry (``lost``, a worker that died mid-attempt, counts
as ``failed``)."""


@dataclass(frozen=True)
class RetryBackoff:
    """Retry an outcome after ``delay`` seconds, times ``factor`` per earlier attempt,
    at most ``max_delay``; ``max_attempts`` (if set) caps this outcome's attempts below
    the policy's own cap."""

    delay: float = 60.0
    factor: float = 2.0
    max_delay: float = 3600.0
    max_attempts: int | None = None

    def __post_init__(self) -> None:
        # ``not (x >= 0)`` and not ``x < 0``: NaN compares false either way. JSON's 1e999
        # is infinity, which pydantic's float takes.
        if not (0 <= self.delay <= MAX_DELAY and 0 <= self.max_delay <= MAX_DELAY):
            raise InvalidRetryPolicy(f"backoff: delay and max_delay from 0 to {MAX_DELAY:.0f} s")
        if not (self.factor >= 1 and math.isfinite(self.factor)):
            raise InvalidRetryPolicy("backoff: factor >= 1 (and finite)")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise InvalidRetryPolicy("backoff: max_attempts >= 1")

    def wait(self, attempt: int) -> timedelta:
        """The wait after attempt number ``attempt`` (1 for the first)."""
        try:
            seconds = min(self.delay * self.factor ** max(attempt - 1, 0), self.max_delay)
        except OverflowError:  # factor 1e300 at the third attempt: past any ceiling
            seconds = self.max_delay
        return timedelta(seconds=seconds)


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` in all per contact (1: never retried); an outcome without a
    backoff (``None``) is final at once."""

    max_attempts: int = 3
    busy: RetryBackoff | None = RetryBackoff(delay=300)
    no_answer: RetryBackoff | None = RetryBackoff(delay=600)
    failed: RetryBackoff | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise InvalidRetryPolicy("max_attempts must be at least 1")

    def backoff(self, outcome: str) -> RetryBackoff | None:
        if outcome == "lost":
            outcome = "failed"
        if outcome not in RETRYABLE:
            return None
        rule: RetryBackoff | None = getattr(self, outcome)
        return rule

    def next_attempt_at(self, outcome: str, attempt: int, now: datetime) -> datetime | None:
        """When to try again after attempt number ``attempt`` ended with ``outcome``,
        or ``None``: the outcome is final."""
        rule = self.backoff(outcome)
        if rule is None:
            return None
        cap = (
            self.max_attempts
            if rule.max_attempts is None
            else min(rule.max_attempts, self.max_attempts)
        )
        if attempt >= cap:
            return None
        return now + rule.wait(attempt)
