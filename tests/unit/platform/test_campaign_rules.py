"""Campaign rules, sans-IO: retry policy per outcome, the rate and concurrency allowance,
and the contact state machine (exactly one final outcome)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from voxtra.platform.scheduling import (
    RATE_SPAN,
    AttemptOutcome,
    ContactState,
    ContactStatus,
    InvalidRetryPolicy,
    InvalidTransition,
    RetryBackoff,
    RetryPolicy,
    allowance,
)

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def test_retry_policy_per_outcome_with_backoff_and_caps() -> None:
    policy = RetryPolicy(
        max_attempts=4,
        busy=RetryBackoff(delay=60, factor=2),
        no_answer=RetryBackoff(delay=300, factor=1, max_attempts=2),
        failed=None,
    )
    assert policy.next_attempt_at("busy", 1, T0) == T0 + timedelta(seconds=60)
    assert policy.next_attempt_at("busy", 2, T0) == T0 + timedelta(seconds=120)
    assert policy.next_attempt_at("busy", 3, T0) == T0 + timedelta(seconds=240)
    assert policy.next_attempt_at("busy", 4, T0) is None  # the policy's cap
    assert policy.next_attempt_at("no_answer", 1, T0) == T0 + timedelta(seconds=300)
    assert policy.next_attempt_at("no_answer", 2, T0) is None  # the outcome's own cap
    assert policy.next_attempt_at("failed", 1, T0) is None
    assert policy.next_attempt_at("completed", 1, T0) is None
    # a lost attempt (its worker died) is retried as failed would be
    assert RetryPolicy(failed=RetryBackoff(delay=5)).next_attempt_at(
        "lost", 1, T0
    ) == T0 + timedelta(seconds=5)
    # the backoff's ceiling
    assert RetryBackoff(delay=100, factor=10, max_delay=500).wait(3) == timedelta(seconds=500)


def test_retry_policy_figures_are_checked() -> None:
    with pytest.raises(InvalidRetryPolicy):
        RetryPolicy(max_attempts=0)
    with pytest.raises(InvalidRetryPolicy):
        RetryBackoff(delay=-1)
    with pytest.raises(InvalidRetryPolicy):
        RetryBackoff(factor=0.5)
    # figures whose retry is past the year 9999 (or not a number): every outcome written
    # under them raised OverflowError, so the attempt was never ended
    for figures in (
        {"delay": 1e12, "max_delay": 1e12},
        {"max_delay": float("inf")},
        {"delay": float("nan")},
        {"factor": float("inf")},
        {"factor": float("nan")},
    ):
        with pytest.raises(InvalidRetryPolicy):
            RetryBackoff(**figures)


def test_a_steep_backoff_stops_at_its_ceiling_instead_of_overflowing() -> None:
    policy = RetryPolicy(max_attempts=20, failed=RetryBackoff(delay=1, factor=1e300))
    # 1e300 ** 2 is past a float: the wait is the ceiling (an hour by default)
    assert policy.next_attempt_at("failed", 3, T0) == T0 + timedelta(seconds=3600)


def test_allowance_takes_the_tighter_of_concurrency_and_rate() -> None:
    assert (
        allowance(now=T0, max_concurrent=20, active=5, calls_per_minute=300, recent_starts=[]).count
        == 15
    )
    assert (
        allowance(
            now=T0, max_concurrent=20, active=25, calls_per_minute=None, recent_starts=[]
        ).count
        == 0
    )
    starts = [T0 - timedelta(seconds=s) for s in (1, 10, 30)]
    assert (
        allowance(
            now=T0, max_concurrent=None, active=0, calls_per_minute=5, recent_starts=starts
        ).count
        == 2
    )
    # starts older than the span do not count
    old = [T0 - timedelta(seconds=61)] * 10
    assert (
        allowance(
            now=T0, max_concurrent=None, active=0, calls_per_minute=5, recent_starts=old
        ).count
        == 5
    )


def test_a_full_rate_says_when_a_slot_frees() -> None:
    starts = [T0 - timedelta(seconds=s) for s in (50, 40, 30)]
    full = allowance(now=T0, max_concurrent=10, active=0, calls_per_minute=3, recent_starts=starts)
    assert full.count == 0
    assert full.retry_at == T0 + timedelta(seconds=10)  # the oldest turns 60 s old


def test_the_sliding_rate_holds_in_every_span_of_a_simulated_day() -> None:
    """Simulate bursty demand and check, from the start times alone, that no 60 s span
    holds more than the limit and that no more than max_concurrent calls overlap."""
    rng = random.Random(7)
    limit, cap = 30, 5
    now = T0
    starts: list[datetime] = []
    ends: list[datetime] = []
    while now < T0 + timedelta(hours=1):
        active = sum(1 for e in ends if e > now)
        recent = [s for s in starts if s > now - RATE_SPAN]
        grant = allowance(
            now=now, max_concurrent=cap, active=active, calls_per_minute=limit, recent_starts=recent
        )
        for _ in range(grant.count):
            starts.append(now)
            ends.append(now + timedelta(seconds=rng.uniform(0.5, 20)))
        now += timedelta(seconds=rng.uniform(0.05, 3))
    assert len(starts) > 600  # the simulation did run near the limits
    for s in starts:
        assert sum(1 for t in starts if s - RATE_SPAN < t <= s) <= limit
        assert sum(1 for a, e in zip(starts, ends, strict=True) if a <= s < e) <= cap


def test_a_contact_gets_exactly_one_final_outcome() -> None:
    policy = RetryPolicy(
        max_attempts=3, busy=RetryBackoff(delay=60), no_answer=RetryBackoff(delay=60)
    )
    contact = ContactStatus()
    contact = contact.claim()
    assert (contact.state, contact.attempts) == (ContactState.DIALING, 1)
    contact = contact.finish(AttemptOutcome.BUSY, policy, T0)
    assert contact.state is ContactState.PENDING
    assert contact.due_at == T0 + timedelta(seconds=60)
    contact = contact.claim().finish(AttemptOutcome.NO_ANSWER, policy, T0)
    assert (contact.state, contact.attempts) == (ContactState.PENDING, 2)
    contact = contact.claim().finish(AttemptOutcome.BUSY, policy, T0)
    assert (contact.state, contact.attempts, contact.final) == (ContactState.BUSY, 3, True)
    # a final contact takes no second outcome, nor a new claim
    with pytest.raises(InvalidTransition):
        contact.claim()
    with pytest.raises(InvalidTransition):
        contact.finish(AttemptOutcome.COMPLETED, policy, T0)
    with pytest.raises(InvalidTransition):
        contact.cancel()


def test_contact_transitions() -> None:
    policy = RetryPolicy()
    assert ContactStatus().claim().finish(AttemptOutcome.COMPLETED, policy, T0).state is (
        ContactState.COMPLETED
    )
    assert ContactStatus().claim().finish(AttemptOutcome.LOST, policy, T0).state is (
        ContactState.FAILED
    )
    assert ContactStatus().cancel().state is ContactState.CANCELED
    dialing = ContactStatus().claim()
    with pytest.raises(InvalidTransition):
        dialing.cancel()  # a ringing call finishes its attempt first
    with pytest.raises(InvalidTransition):
        dialing.claim()
    assert dialing.finish(AttemptOutcome.CANCELED, policy, T0).state is ContactState.CANCELED
