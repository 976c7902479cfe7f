"""Retry policy per outcome: which failed attempts are tried again, how often, how late."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from voxtra.platform.scheduling.errors import InvalidRetryPolicy

__all__ = ["RetryBackoff", "RetryPolicy"]

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
        if self.delay < 0 or self.factor < 1 or self.max_delay < 0:
            raise InvalidRetryPolicy("backoff: delay >= 0, factor >= 1, max_delay >= 0")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise InvalidRetryPolicy("backoff: max_attempts >= 1")

    def wait(self, attempt: int) -> timedelta:
        """The wait after attempt number ``attempt`` (1 for the first)."""
        seconds = min(self.delay * self.factor ** max(attempt - 1, 0), self.max_delay)
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
