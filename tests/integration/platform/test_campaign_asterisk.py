"""A small campaign against the real Asterisk sandbox: Local channels to extensions that
answer, are busy or ring unanswered; a worker on SQLite with the real clock. Every
contact ends once with the outcome its extension gives, within the campaign's limits.

About 5 s (measured): the unanswered contacts ring their 2 s ring timeout, five at a time.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from voxtra import CallSession
from voxtra.platform.engine import SchedulingWorker
from voxtra.platform.engine.admin import ContactSpec, create_campaign
from voxtra.platform.scheduling import RetryBackoff, RetryPolicy
from voxtra.platform.store.campaigns import Campaign, CampaignAttempt, CampaignContact
from voxtra.platform.store.db import Database

pytestmark = pytest.mark.asterisk


async def test_a_campaign_on_the_sandbox_ends_each_contact_once(
    make_app: Callable[..., Awaitable[Any]], tmp_path: Path
) -> None:
    app = await make_app(app_name=f"voxtra-campaign-{uuid.uuid4().hex[:8]}")
    answered: list[str] = []

    async def agent(call: CallSession) -> None:
        answered.append(call.metadata["customer_data"]["name"])
        await asyncio.sleep(0.3)
        await call.hangup()

    db = Database(f"sqlite:///{tmp_path}/platform.db")
    await db.migrate()
    worker = SchedulingWorker(app, db, routes=lambda name: agent, poll_interval=0.2, lease=30.0)
    kinds = ["answer"] * 8 + ["busy"] * 6 + ["noanswer"] * 6
    try:
        async with db.session() as session:
            campaign = await create_campaign(
                session,
                contacts=[
                    ContactSpec(f"Local/{kind}@voxtra-test", variables={"name": f"{kind}{i}"})
                    for i, kind in enumerate(kinds)
                ],
                now=worker.clock.now(),
                route="agent",
                max_concurrent=5,
                calls_per_minute=600,
                ring_timeout=2,
                retry=RetryPolicy(
                    max_attempts=2, busy=RetryBackoff(delay=0.5), no_answer=None, failed=None
                ),
            )
        await worker.start()
        async with asyncio.timeout(60):
            while True:
                async with db.session() as session:
                    status = (await session.get(Campaign, campaign.id)).status  # type: ignore[union-attr]
                if status == "finished":
                    break
                await asyncio.sleep(0.2)
    finally:
        await worker.stop()
        async with db.session() as session:
            contacts = (await session.scalars(select(CampaignContact))).all()
            attempts = (await session.scalars(select(CampaignAttempt))).all()
        await db.close()

    states = Counter((c.to.split("/")[1].split("@")[0], c.state) for c in contacts)
    assert states == {("answer", "completed"): 8, ("busy", "busy"): 6, ("noanswer", "no_answer"): 6}
    assert Counter(a.outcome for a in attempts) == {"completed": 8, "busy": 12, "no_answer": 6}
    assert sorted(answered) == sorted(f"answer{i}" for i in range(8))
    starts = sorted((a.started_at, a.ended_at) for a in attempts)
    for start, _ in starts:
        assert sum(1 for s, e in starts if s <= start and (e is None or start < e)) <= 5
