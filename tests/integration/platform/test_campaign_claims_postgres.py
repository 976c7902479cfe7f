"""The claims on a real Postgres, step by step: a worker holding a campaign's row makes
another skip it (SKIP LOCKED: no wait), the limits count what every worker started, a
second insert of one (contact, attempt) is refused by the store, and an expired lease's
attempts are reaped as lost and retried by policy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from voxtra.platform.engine import claims
from voxtra.platform.engine.admin import ContactSpec, create_campaign
from voxtra.platform.scheduling import AttemptOutcome, RetryBackoff, RetryPolicy
from voxtra.platform.store.campaigns import Campaign, CampaignAttempt, CampaignContact
from voxtra.platform.store.db import Database

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


@pytest.fixture
async def db(postgres_url: str) -> AsyncIterator[Database]:
    database = Database(postgres_url)
    await database.migrate()
    yield database
    await database.close()


async def test_a_locked_campaign_is_skipped_and_limits_count_every_worker(db: Database) -> None:
    async with db.session() as session:
        campaign = await create_campaign(
            session,
            contacts=[ContactSpec(f"PJSIP/c{i}") for i in range(10)],
            now=T0,
            max_concurrent=6,
            calls_per_minute=100,
        )
    async with db.sessions() as a, a.begin():
        got_a, _ = await claims.claim_campaign(a, campaign.id, "wa", lambda: T0)
        assert len(got_a) == 6
        # while A holds the row, B skips the campaign at once instead of waiting
        async with db.sessions() as b, b.begin():
            got_b, finished = await asyncio.wait_for(
                claims.claim_campaign(b, campaign.id, "wb", lambda: T0), timeout=5
            )
            assert got_b == [] and finished is None
    # A committed: B counts A's six calls against max_concurrent
    async with db.session() as b:
        got_b, _ = await claims.claim_campaign(b, campaign.id, "wb", lambda: T0)
    assert got_b == []
    async with db.session() as session:
        await claims.finish_attempt(session, got_a[0].attempt_id, AttemptOutcome.COMPLETED, T0)
    async with db.session() as b:
        got_b, _ = await claims.claim_campaign(b, campaign.id, "wb", lambda: T0)
    assert len(got_b) == 1


async def test_one_contact_attempt_is_inserted_once(db: Database) -> None:
    async with db.session() as session:
        campaign = await create_campaign(session, contacts=[ContactSpec("PJSIP/x")], now=T0)
        contact = (await session.scalars(select(CampaignContact))).one()
        session.add(
            CampaignAttempt(
                campaign_id=campaign.id, contact_id=contact.id, attempt=1, worker_id="wa",
                started_at=T0,
            )
        )  # fmt: skip
    with pytest.raises(IntegrityError):
        async with db.session() as session:
            session.add(
                CampaignAttempt(
                    campaign_id=campaign.id, contact_id=contact.id, attempt=1, worker_id="wb",
                    started_at=T0,
                )
            )  # fmt: skip


async def test_an_expired_lease_makes_its_attempts_lost_and_retried(db: Database) -> None:
    async with db.session() as session:
        campaign = await create_campaign(
            session,
            contacts=[ContactSpec("PJSIP/x")],
            now=T0,
            retry=RetryPolicy(failed=RetryBackoff(delay=30, factor=1)),
        )
        await claims.heartbeat(session, "wa", T0, ttl=30)
    async with db.session() as session:
        (claim,), _ = await claims.claim_campaign(session, campaign.id, "wa", lambda: T0)
    later = T0 + timedelta(seconds=20)
    async with db.session() as session:  # wa's lease still runs
        assert await claims.reap_lost(session, later, "wb") == 0
    later = T0 + timedelta(seconds=31)
    async with db.session() as session:
        assert await claims.reap_lost(session, later, "wb") == 1
    async with db.session() as session:
        attempt = await session.get(CampaignAttempt, claim.attempt_id)
        contact = await session.get(CampaignContact, claim.contact_id)
        assert attempt is not None and contact is not None
        assert attempt.outcome == "lost" and attempt.ended_at == later
        assert (contact.state, contact.attempts) == ("pending", 1)
        assert contact.due_at == later + timedelta(seconds=30)
        # wa's own late outcome changes nothing: an attempt keeps its first outcome
        assert (
            await claims.finish_attempt(session, claim.attempt_id, AttemptOutcome.COMPLETED, later)
            is None
        )


async def test_a_stored_policy_that_cannot_be_applied_does_not_stop_the_reaper(
    db: Database,
) -> None:
    # A policy stored before its figures were bounded: a retry after the year 9999.
    # Writing any outcome under it raised, so the reaper (the first step of every
    # worker's round) failed on it every round, and no worker claimed anything again.
    async with db.session() as session:
        campaign = await create_campaign(
            session,
            contacts=[ContactSpec("PJSIP/x"), ContactSpec("PJSIP/y")],
            now=T0,
            retry=RetryPolicy(failed=RetryBackoff(delay=30, factor=1)),
        )
        await claims.heartbeat(session, "wa", T0, ttl=30)
    async with db.session() as session:
        stored = await session.get(Campaign, campaign.id)
        assert stored is not None
        stored.retry = {**stored.retry, "failed": {"delay": 1e12, "max_delay": 1e12}}
    async with db.session() as session:
        claimed, _ = await claims.claim_campaign(session, campaign.id, "wa", lambda: T0)
    assert len(claimed) == 2
    later = T0 + timedelta(seconds=31)
    async with db.session() as session:
        assert await claims.reap_lost(session, later, "wb") == 2
    async with db.session() as session:
        contacts = (await session.scalars(select(CampaignContact))).all()
        attempts = (await session.scalars(select(CampaignAttempt))).all()
    # lost, and final: the policy's retry cannot be had
    assert sorted(c.state for c in contacts) == ["failed", "failed"]
    assert [a.outcome for a in attempts] == ["lost", "lost"]
