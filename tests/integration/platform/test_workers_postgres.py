"""Two worker processes on one Postgres, one killed with SIGKILL mid-campaign: every
contact still reaches exactly one final outcome, no attempt is dialed twice, and the
campaign's limits hold across both workers (measured from the store's timestamps).

Each worker runs a VoxtraApp on its own FakeAsterisk (endpoints named ``answer-``,
``busy-``, ``noanswer-``); the campaign's clock runs 20x (shared origin), so 200 contacts
at 300 calls a minute take seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from voxtra.platform.engine.admin import ContactSpec, create_campaign, create_schedule
from voxtra.platform.scheduling import FINAL_STATES, RetryBackoff, RetryPolicy
from voxtra.platform.store.campaigns import (
    Campaign,
    CampaignAttempt,
    CampaignContact,
    ScheduleRun,
)
from voxtra.platform.store.db import Database

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

SCRIPT = Path(__file__).with_name("campaign_worker.py")
FACTOR = 20.0
START = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def campaign_now(origin: float) -> datetime:
    return START + timedelta(seconds=(time.time() - origin) * FACTOR)


async def read_lines(process: asyncio.subprocess.Process, into: list[str]) -> None:
    assert process.stdout is not None
    async for raw in process.stdout:
        into.append(raw.decode().strip())


def max_overlap(spans: list[tuple[datetime, datetime | None]]) -> int:
    worst = 0
    for start, _ in spans:
        live = sum(1 for s, e in spans if s <= start and (e is None or start < e))
        worst = max(worst, live)
    return worst


def max_per_minute(starts: list[datetime]) -> int:
    ordered = sorted(starts)
    return max(sum(1 for t in ordered if s - timedelta(seconds=60) < t <= s) for s in ordered)


async def test_two_workers_one_killed_every_contact_ends_once(
    postgres_url: str, tmp_path: Path
) -> None:
    db = Database(postgres_url)
    await db.migrate()
    origin = time.time()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs: list[asyncio.subprocess.Process] = []
    output: dict[str, list[str]] = {"w1": [], "w2": []}
    readers: list[asyncio.Task[None]] = []
    try:
        for name in ("w1", "w2"):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(SCRIPT),
                postgres_url,
                name,
                str(origin),
                str(FACTOR),
                START.isoformat(),
                str(tmp_path),
                stdout=subprocess.PIPE,
                env=env,
            )
            procs.append(proc)
            readers.append(asyncio.create_task(read_lines(proc, output[name])))
        async with asyncio.timeout(30):
            while not all("ready" in lines for lines in output.values()):
                assert all(p.returncode is None for p in procs), output
                await asyncio.sleep(0.05)

        kinds = ("answer", "busy", "noanswer")
        async with db.session() as session:
            # and a schedule every minute of the campaign's clock (3 s here), which both
            # workers see due at once
            await create_schedule(
                session,
                to="PJSIP/answer-sched",
                now=campaign_now(origin),
                cron="* * * * *",
                tz="Europe/Berlin",
                route="agent",
            )
            campaign = await create_campaign(
                session,
                contacts=[ContactSpec(f"PJSIP/{kinds[i % 3]}-{i:03d}") for i in range(200)],
                now=campaign_now(origin),
                route="agent",
                max_concurrent=20,
                calls_per_minute=300,
                retry=RetryPolicy(
                    max_attempts=2,
                    busy=RetryBackoff(delay=10, factor=1),
                    no_answer=RetryBackoff(delay=10, factor=1),
                    failed=RetryBackoff(delay=5, factor=1),  # a lost attempt is tried again
                ),
            )

        # Kill w1 with calls in flight (its attempts not ended), a fair way in.
        async with asyncio.timeout(60):
            while True:
                async with db.session() as session:
                    open_w1 = await session.scalar(
                        select(func.count())
                        .select_from(CampaignAttempt)
                        .where(CampaignAttempt.worker_id == "w1")
                        .where(CampaignAttempt.ended_at.is_(None))
                    )
                    done = await session.scalar(
                        select(func.count())
                        .select_from(CampaignAttempt)
                        .where(CampaignAttempt.ended_at.is_not(None))
                    )
                if (done or 0) >= 60 and (open_w1 or 0) >= 3:
                    break
                await asyncio.sleep(0.02)
        procs[0].send_signal(signal.SIGKILL)
        await procs[0].wait()

        async with asyncio.timeout(90):
            while True:
                async with db.session() as session:
                    status = (await session.get(Campaign, campaign.id)).status  # type: ignore[union-attr]
                if status == "finished":
                    break
                assert procs[1].returncode is None, "the surviving worker died"
                await asyncio.sleep(0.1)

        async with db.session() as session:
            contacts = (await session.scalars(select(CampaignContact))).all()
            attempts = (await session.scalars(select(CampaignAttempt))).all()
            runs = (await session.scalars(select(ScheduleRun))).all()
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        for reader in readers:
            reader.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        await db.close()

    # 200 of 200 reach a final outcome, exactly one each
    assert len(contacts) == 200
    assert all(c.state in FINAL_STATES for c in contacts), Counter(c.state for c in contacts)
    # none dialed twice for one attempt: what both workers printed before each dial
    dials = Counter(
        int(line.split()[1])
        for lines in output.values()
        for line in lines
        if line.startswith("dial ")
    )
    assert dials and max(dials.values()) == 1
    # every attempt that ended with a real outcome was dialed (once); lost ones were
    # w1's, found by w2 after w1's lease ran out
    lost = [a for a in attempts if a.outcome == "lost"]
    assert lost and {a.worker_id for a in lost} == {"w1"}
    assert all(dials[a.id] == 1 for a in attempts if a.outcome != "lost")
    assert {a.worker_id for a in attempts} == {"w1", "w2"}
    # the answered ones: by kind of endpoint
    for contact in contacts:
        kind = contact.to.split("/")[1].split("-")[0]
        expected = {"answer": {"completed", "failed"}, "busy": {"busy"}, "noanswer": {"no_answer"}}
        assert contact.state in expected[kind] | {"failed"}, (contact.to, contact.state)
    # the schedule: one run per due minute, each dialed once by one worker
    run_dials = Counter(
        int(line.split()[1])
        for lines in output.values()
        for line in lines
        if line.startswith("run ")
    )
    assert runs and len({r.due_at for r in runs}) == len(runs)
    assert all(run_dials[r.id] == 1 for r in runs if r.outcome != "lost")
    assert max(run_dials.values()) == 1
    # the limits, across both workers, from the store's timestamps
    overlap = max_overlap([(a.started_at, a.ended_at) for a in attempts])
    per_minute = max_per_minute([a.started_at for a in attempts])
    print(
        f"attempts {len(attempts)} (lost {len(lost)}), by worker "
        f"{Counter(a.worker_id for a in attempts)}, states {Counter(c.state for c in contacts)}, "
        f"most at once {overlap}, most in a minute {per_minute}"
    )
    assert overlap <= 20
    assert per_minute <= 300
