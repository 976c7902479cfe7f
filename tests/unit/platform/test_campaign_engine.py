"""The campaign and schedule engine through a whole app on FakeAsterisk and a SQLite
store, with an accelerated clock: limits measured from the store's timestamps, retries
as configured, exactly one final outcome per contact, windows, pause/resume/cancel,
schedules once and by cron."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from voxtra import CallSession, VoxtraApp
from voxtra.errors import AppNotRunning
from voxtra.platform.engine import ScaledClock, SchedulingWorker, claims
from voxtra.platform.engine.admin import (
    CampaignConflict,
    ContactSpec,
    campaign_progress,
    cancel_schedule,
    create_campaign,
    create_schedule,
    steer_campaign,
)
from voxtra.platform.scheduling import CallingWindow, RetryBackoff, RetryPolicy
from voxtra.platform.store.campaigns import (
    Campaign,
    CampaignAttempt,
    CampaignContact,
    Schedule,
    ScheduleRun,
    WorkerLease,
)
from voxtra.platform.store.db import Database
from voxtra.testing import FakeAsterisk

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


async def agent(call: CallSession) -> None:
    await asyncio.sleep(0.02)
    await call.hangup()


@dataclass
class Rig:
    app: VoxtraApp
    fake: FakeAsterisk
    db: Database
    clock: ScaledClock
    events: list[tuple[str, dict[str, Any], list[str]]] = field(default_factory=list)

    def worker(self, **options: Any) -> SchedulingWorker:
        options.setdefault("poll_interval", 5.0)
        options.setdefault("lease", 600.0)
        return SchedulingWorker(
            self.app,
            self.db,
            routes=lambda name: agent if name == "agent" else None,
            clock=self.clock,
            notify=lambda event, data, urls: self.events.append((event, data, urls)),
            **options,
        )

    async def wait_finished(self, campaign_id: str, timeout: float = 20.0) -> Campaign:
        async with asyncio.timeout(timeout):
            while True:
                async with self.db.session() as session:
                    campaign = await session.get(Campaign, campaign_id)
                    assert campaign is not None
                    if campaign.status == "finished":
                        return campaign
                await asyncio.sleep(0.05)


@pytest.fixture
async def rig(tmp_path: Path, fake_asterisk: FakeAsterisk) -> AsyncIterator[Rig]:
    app = VoxtraApp(
        "http://asterisk.invalid:8088",
        "user",
        "secret",
        app_name="campaign-tests",
        instance_id="unit",
        spool_dir=str(tmp_path / "spool"),
        recordings_dir=str(tmp_path / "recordings"),
    )
    db = Database(f"sqlite:///{tmp_path}/platform.db")
    await db.migrate()
    # 120x: a minute of the campaign's time passes in half a second
    clock = ScaledClock(120, start=datetime(2026, 11, 30, 9, 0, tzinfo=UTC))
    try:
        async with fake_asterisk.serve(app):
            yield Rig(app, fake_asterisk, db, clock)
    finally:
        await db.close()


def contacts(fake: FakeAsterisk, n: int) -> list[ContactSpec]:
    """n contacts cycling answer / busy / no answer (the fake's endpoints say so)."""
    out = []
    for i in range(n):
        kind = ("answer", "busy", "noanswer")[i % 3]
        endpoint = f"PJSIP/{kind}-{i:03d}"
        fake.endpoint_outcomes[endpoint] = kind
        out.append(ContactSpec(endpoint, variables={"name": f"c{i}"}))
    return out


def max_overlap(attempts: list[CampaignAttempt]) -> int:
    worst = 0
    for a in attempts:
        live = sum(
            1
            for b in attempts
            if b.started_at <= a.started_at and (b.ended_at is None or a.started_at < b.ended_at)
        )
        worst = max(worst, live)
    return worst


def max_per_minute(attempts: list[CampaignAttempt]) -> int:
    starts = sorted(a.started_at for a in attempts)
    return max(sum(1 for t in starts if s - timedelta(seconds=60) < t <= s) for s in starts)


async def test_a_campaign_keeps_its_limits_retries_and_ends_each_contact_once(rig: Rig) -> None:
    policy = RetryPolicy(
        max_attempts=3,
        busy=RetryBackoff(delay=20, factor=1),
        no_answer=RetryBackoff(delay=40),
        failed=None,
    )
    async with rig.db.session() as session:
        campaign = await create_campaign(
            session,
            contacts=contacts(rig.fake, 45),
            now=rig.clock.now(),
            route="agent",
            max_concurrent=5,
            calls_per_minute=30,
            retry=policy,
            webhook_url="http://hooks.invalid/c",
        )
    worker = rig.worker()
    await worker.start()
    try:
        await rig.wait_finished(campaign.id)
    finally:
        await worker.stop()

    async with rig.db.session() as session:
        people = (await session.scalars(select(CampaignContact))).all()
        attempts = (await session.scalars(select(CampaignAttempt))).all()
        progress = await campaign_progress(session, campaign.id)
    by_contact: dict[int, list[CampaignAttempt]] = defaultdict(list)
    for a in attempts:
        by_contact[a.contact_id].append(a)
    expected = {"answer": ("completed", 1), "busy": ("busy", 3), "noanswer": ("no_answer", 3)}
    for person in people:
        state, tries = expected[person.to.split("/")[1].split("-")[0]]
        mine = sorted(by_contact[person.id], key=lambda a: a.attempt)
        assert (person.state, person.attempts, len(mine)) == (state, tries, tries), person.to
        assert [a.attempt for a in mine] == list(range(1, tries + 1))
        assert all(a.ended_at is not None for a in mine)
        # the backoff: 20 s after a busy (factor 1), 40 s then 80 s after no answer
        for earlier, later in itertools.pairwise(mine):
            assert earlier.ended_at is not None
            wait = later.started_at - earlier.ended_at
            floor = 20 if state == "busy" else 40 * 2 ** (earlier.attempt - 1)
            assert wait >= timedelta(seconds=floor)
    assert progress["contacts"] == {"completed": 15, "busy": 15, "no_answer": 15}
    assert progress["attempts"] == {"completed": 15, "busy": 45, "no_answer": 45}
    # each attempt dialed once: the fake saw exactly as many originates as attempts
    assert len(rig.fake.originated) == len(attempts) == 105
    assert max_overlap(list(attempts)) <= 5
    assert max_per_minute(list(attempts)) <= 30
    finished = [e for e in rig.events if e[0] == "campaign.finished"]
    assert len(finished) == 1 and finished[0][2] == ["http://hooks.invalid/c"]
    assert finished[0][1]["counts"] == {"completed": 15, "busy": 15, "no_answer": 15}


async def test_contacts_are_called_inside_their_own_windows(rig: Rig) -> None:
    # 09:00 UTC on Monday 2026-11-30: 10:00 in Berlin (open), 18:00 in Tokyo (closed:
    # next 09:00 Tokyo is 00:00 UTC), 04:00 in New York (closed until 14:00 UTC).
    rig.fake.dial_outcome = "answer"
    async with rig.db.session() as session:
        campaign = await create_campaign(
            session,
            contacts=[
                ContactSpec("PJSIP/berlin", "Europe/Berlin"),
                ContactSpec("PJSIP/tokyo", "Asia/Tokyo"),
                ContactSpec("PJSIP/newyork", "America/New_York"),
            ],
            now=rig.clock.now(),
            route="agent",
            windows=[CallingWindow("09:00", "17:00", ("mon", "tue", "wed", "thu", "fri"))],
        )
    worker = rig.worker()
    await worker.run_once()
    await asyncio.sleep(0.2)
    async with rig.db.session() as session:
        people = {
            c.to: c
            for c in (await session.scalars(select(CampaignContact))).all()
            if c.campaign_id == campaign.id
        }
    assert [c.endpoint for c in rig.fake.originated] == ["PJSIP/berlin"]
    assert people["PJSIP/tokyo"].due_at == datetime(2026, 12, 1, 0, 0, tzinfo=UTC)
    assert people["PJSIP/newyork"].due_at == datetime(2026, 11, 30, 14, 0, tzinfo=UTC)
    assert people["PJSIP/tokyo"].state == people["PJSIP/newyork"].state == "pending"
    await worker.stop()


async def test_pause_resume_and_cancel(rig: Rig) -> None:
    rig.fake.dial_outcome = "answer"
    async with rig.db.session() as session:
        campaign = await create_campaign(
            session,
            contacts=[ContactSpec(f"PJSIP/p{i}") for i in range(10)],
            now=rig.clock.now(),
            route="agent",
            max_concurrent=1,
            calls_per_minute=6,  # one call per 10 s of campaign time: 1/12 s real
        )
        await steer_campaign(session, campaign.id, "pause")
    worker = rig.worker()
    await worker.run_once()
    assert rig.fake.originated == []  # paused: nothing claimed
    async with rig.db.session() as session:
        await steer_campaign(session, campaign.id, "resume")
    await worker.start()
    await rig.fake.wait_until(lambda: len(rig.fake.originated) >= 2, timeout=10)
    async with rig.db.session() as session:
        await steer_campaign(session, campaign.id, "cancel")
        with pytest.raises(CampaignConflict):
            await steer_campaign(session, campaign.id, "resume")
    await asyncio.sleep(0.3)
    await worker.stop()
    async with rig.db.session() as session:
        progress = await campaign_progress(session, campaign.id)
        status = (await session.get(Campaign, campaign.id)).status  # type: ignore[union-attr]
    assert status == "canceled"
    states = Counter(progress["contacts"])
    assert states["completed"] >= 2 and states["completed"] + states["canceled"] == 10
    assert len(rig.fake.originated) == states["completed"]


async def test_schedules_once_and_by_cron_each_run_once(rig: Rig) -> None:
    rig.fake.dial_outcome = "answer"
    now = rig.clock.now()
    async with rig.db.session() as session:
        once = await create_schedule(
            session,
            to="PJSIP/once",
            now=now,
            at=datetime(2026, 11, 30, 10, 0, 30),  # wall time in Berlin: 09:00:30 UTC
            tz="Europe/Berlin",
            route="agent",
        )
        every = await create_schedule(
            session, to="PJSIP/cron", now=now, cron="* * * * *", tz="Europe/Berlin", route="agent"
        )
    assert once.next_run_at == datetime(2026, 11, 30, 9, 0, 30, tzinfo=UTC)
    assert every.next_run_at == datetime(2026, 11, 30, 9, 1, tzinfo=UTC)
    worker = rig.worker()
    await worker.start()
    # 3 minutes of schedule time
    await rig.fake.wait_until(
        lambda: sum(c.endpoint == "PJSIP/cron" for c in rig.fake.originated) >= 3, timeout=10
    )
    async with rig.db.session() as session:
        await cancel_schedule(session, every.id)
    await asyncio.sleep(0.3)
    await worker.stop()
    async with rig.db.session() as session:
        runs = (await session.scalars(select(ScheduleRun).order_by(ScheduleRun.id))).all()
        gone = await session.get(Schedule, every.id)
        done = await session.get(Schedule, once.id)
    assert gone is not None and gone.status == "canceled" and gone.next_run_at is None
    assert done is not None and done.status == "done" and done.runs == 1
    cron_runs = [r.due_at for r in runs if r.schedule_id == every.id]
    assert cron_runs[:3] == [datetime(2026, 11, 30, 9, m, tzinfo=UTC) for m in (1, 2, 3)]
    assert len(set(cron_runs)) == len(cron_runs)
    assert sum(c.endpoint == "PJSIP/once" for c in rig.fake.originated) == 1
    assert sum(c.endpoint == "PJSIP/cron" for c in rig.fake.originated) == len(cron_runs)
    assert all(r.outcome == "completed" for r in runs)


async def test_an_unexpected_error_while_dialing_still_ends_the_attempt(rig: Rig) -> None:
    class Broken:
        async def originate(self, endpoint: str, **options: Any) -> Any:
            raise RuntimeError("a bug below the worker")

    async with rig.db.session() as session:
        campaign = await create_campaign(
            session,
            contacts=[ContactSpec("PJSIP/a"), ContactSpec("PJSIP/b")],
            now=rig.clock.now(),
            max_concurrent=1,
            retry=RetryPolicy(failed=None),
        )
    worker = SchedulingWorker(
        Broken(), rig.db, routes=lambda name: None, clock=rig.clock, poll_interval=5.0
    )
    await worker.start()
    try:
        await rig.wait_finished(campaign.id)
    finally:
        await worker.stop()
    async with rig.db.session() as session:
        progress = await campaign_progress(session, campaign.id)
    assert progress["contacts"] == {"failed": 2}
    assert progress["attempts"] == {"failed": 2}


async def test_a_second_worker_on_sqlite_is_warned_about(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = rig.worker(worker_id="first"), rig.worker(worker_id="second")
    await first.start()
    await second.start()
    await second.stop()
    await first.stop()
    warned = [r.getMessage() for r in caplog.records if "SQLite" in r.getMessage()]
    assert warned and "second" in warned[0]


async def test_claims_of_an_app_that_stops_go_back_undialled(rig: Rig) -> None:
    # The round's claims are dialled after the app began to stop: originate() places
    # nothing, so each contact and run goes back as it was (not failed for good, as
    # before: 140 of 300 contacts in 2 s with the default retry policy).
    async with rig.db.session() as session:
        campaign = await create_campaign(
            session,
            contacts=[ContactSpec(f"PJSIP/s{i}") for i in range(4)],
            now=rig.clock.now(),
            route="agent",
            max_concurrent=4,
            retry=RetryPolicy(failed=None),
        )
        once = await create_schedule(
            session, to="PJSIP/once", now=rig.clock.now(), at=rig.clock.now(), route="agent"
        )
    await rig.app.stop()
    worker = rig.worker(app_webhooks=("https://hooks.example/voxtra",))
    assert await worker.run_once() == 5  # claimed, then handed back
    await asyncio.wait_for(asyncio.gather(*worker._calls), 5)
    async with rig.db.session() as session:
        progress = await campaign_progress(session, campaign.id)
        left = (await session.scalars(select(CampaignContact))).all()
        schedule = await session.get(Schedule, once.id)
        runs = (await session.scalars(select(ScheduleRun))).all()
    assert progress["contacts"] == {"pending": 4} and progress["attempts"] == {}
    assert {c.attempts for c in left} == {0}
    assert schedule is not None and schedule.status == "active" and schedule.runs == 0
    assert schedule.next_run_at == once.next_run_at and runs == []
    assert rig.fake.originated == []
    ended = [data for event, data, _ in rig.events if event == "call.ended"]
    assert len(ended) == 5 and {d["outcome"] for d in ended} == {"canceled"}
    assert {d.get("contact_state") for d in ended} == {"pending", None}


async def test_a_claim_handed_back_in_a_canceled_campaign_is_canceled(rig: Rig) -> None:
    async with rig.db.session() as session:
        campaign = await create_campaign(
            session,
            contacts=[ContactSpec("PJSIP/late")],
            now=rig.clock.now(),
            route="agent",
        )

    class Stopping:
        async def originate(self, endpoint: str, **options: Any) -> Any:
            async with rig.db.session() as session:  # canceled while it was dialled
                await steer_campaign(session, campaign.id, "cancel")
            raise AppNotRunning("the app is stopping: it places no new calls")

    worker = SchedulingWorker(
        Stopping(), rig.db, routes=lambda name: agent, clock=rig.clock, poll_interval=5.0
    )
    await worker.run_once()
    await asyncio.wait_for(asyncio.gather(*worker._calls), 5)
    async with rig.db.session() as session:
        progress = await campaign_progress(session, campaign.id)
    assert progress["contacts"] == {"canceled": 1} and progress["attempts"] == {}


async def test_one_campaign_that_cannot_be_claimed_does_not_hold_up_the_others(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig.fake.dial_outcome = "answer"
    async with rig.db.session() as session:
        # a row from before the API checked metadata.variables: passed over
        bad = await create_campaign(
            session,
            contacts=[ContactSpec("PJSIP/bad")],
            now=rig.clock.now(),
            route="agent",
            metadata={"variables": "x"},
        )
        broken = await create_campaign(
            session, contacts=[ContactSpec("PJSIP/broken")], now=rig.clock.now(), route="agent"
        )
        good = await create_campaign(
            session,
            contacts=[ContactSpec("PJSIP/good", variables={"name": "Ada"})],
            now=rig.clock.now(),
            route="agent",
            metadata={"variables": {"team": "blue", "name": "?"}},
        )
    real = claims.claim_campaign

    async def claim(session: Any, campaign_id: str, *args: Any) -> Any:
        if campaign_id == broken.id:
            raise RuntimeError("a row the code cannot read")
        return await real(session, campaign_id, *args)

    monkeypatch.setattr(claims, "claim_campaign", claim)
    seen: list[dict[str, Any]] = []

    async def route(call: CallSession) -> None:
        seen.append(dict(call.metadata["customer_data"]))
        await call.hangup()

    worker = SchedulingWorker(
        rig.app, rig.db, routes=lambda name: route, clock=rig.clock, poll_interval=5.0
    )
    assert await worker.run_once() == 2
    await asyncio.wait_for(asyncio.gather(*worker._calls), 5)
    assert sorted(c.endpoint for c in rig.fake.originated) == ["PJSIP/bad", "PJSIP/good"]
    assert {"team": "blue", "name": "Ada"} in seen and {} in seen
    async with rig.db.session() as session:
        assert (await campaign_progress(session, bad.id))["contacts"] == {"completed": 1}
        assert (await campaign_progress(session, good.id))["contacts"] == {"completed": 1}
        assert (await campaign_progress(session, broken.id))["contacts"] == {"pending": 1}


async def test_the_lease_is_renewed_between_rounds(rig: Rig) -> None:
    # A round every 50 s (6,000 s of campaign time), a lease of 0.5 s (60 s): renewed
    # only by the rounds, it lapsed and the other workers reaped the live calls.
    worker = rig.worker(poll_interval=6000.0, lease=60.0)
    await worker.start()
    try:

        async def expiry() -> datetime:
            async with rig.db.session() as session:
                lease = await session.get(WorkerLease, worker.worker_id)
                assert lease is not None
                return lease.expires_at

        first = await expiry()
        await asyncio.sleep(0.6)
        assert await expiry() > first
    finally:
        await worker.stop()


async def test_a_call_dialling_when_the_worker_stops_is_recorded_canceled(rig: Rig) -> None:
    rig.fake.dial_outcome = "ring"
    outcomes: list[tuple[Any, ...]] = []

    class Log:
        async def dialing(self, *args: Any) -> dict[str, Any]:
            return {"platform_call_id": "call_1"}

        async def refused(self, extra: dict[str, Any], *result: Any) -> None:
            outcomes.append((extra["platform_call_id"], *result))

    async with rig.db.session() as session:
        await create_campaign(
            session, contacts=[ContactSpec("PJSIP/rings")], now=rig.clock.now(), route="agent"
        )
    worker = rig.worker(calls=Log())
    await worker.run_once()
    await rig.fake.wait_until(lambda: len(rig.fake.originated) == 1)
    await worker.stop(timeout=0.1)
    assert outcomes == [("call_1", "canceled", None, "the worker stopped")]
    # app.originate hung the ringing channel up when the worker gave up on it
    await rig.fake.wait_until(lambda: all(c.ended for c in rig.fake.originated))


async def test_a_schedule_whose_zone_this_worker_lacks_does_not_stop_the_campaigns(
    rig: Rig,
) -> None:
    """A time zone the API's host knew but this worker's tzdata lacks (stored here
    straight in the row): computing the next run raised out of the whole round, before
    the campaigns were claimed, so the worker dialled nothing, every round. The schedule
    is left untouched (active, due) to a worker that has the zone, and not selected
    again by this one; the campaign is dialled."""
    rig.fake.dial_outcome = "answer"
    now = rig.clock.now()
    async with rig.db.session() as session:
        every = await create_schedule(
            session, to="PJSIP/cron", now=now, cron="* * * * *", tz="UTC", route="agent"
        )
        row = await session.get(Schedule, every.id)
        assert row is not None
        row.tz = "Mars/Olympus"
        campaign = await create_campaign(
            session, contacts=[ContactSpec("PJSIP/a")], now=now, route="agent"
        )
    worker = rig.worker()
    await worker.start()
    try:
        await rig.wait_finished(campaign.id)
        while rig.clock.now() < every.next_run_at + timedelta(seconds=30):
            await asyncio.sleep(0.05)  # rounds past the schedule's due time (9:01)
    finally:
        await worker.stop()
    async with rig.db.session() as session:
        kept = await session.get(Schedule, every.id)
        runs = (await session.scalars(select(ScheduleRun))).all()
    assert kept is not None and kept.status == "active" and kept.runs == 0
    assert kept.next_run_at == every.next_run_at
    assert runs == []
    assert [c.endpoint for c in rig.fake.originated] == ["PJSIP/a"]


async def test_a_schedule_passed_over_for_its_zone_is_tried_again_later(rig: Rig) -> None:
    """tzdata installed while the worker runs (here: the row's zone made valid): the
    schedule passed over is tried again within ``UNSERVABLE_RETRY`` (10 minutes) and
    runs; it was passed over for the rest of the process's life."""
    rig.fake.dial_outcome = "answer"
    now = rig.clock.now()
    async with rig.db.session() as session:
        every = await create_schedule(
            session, to="PJSIP/cron", now=now, cron="* * * * *", tz="UTC", route="agent"
        )
        row = await session.get(Schedule, every.id)
        assert row is not None
        row.tz = "Mars/Olympus"
    due = datetime(2026, 11, 30, 9, 1, tzinfo=UTC)
    assert every.next_run_at == due
    worker = rig.worker()
    await worker.start()
    try:
        while rig.clock.now() < due + timedelta(seconds=30):
            await asyncio.sleep(0.05)  # due and passed over
        assert rig.fake.originated == []
        async with rig.db.session() as session:
            row = await session.get(Schedule, every.id)
            assert row is not None
            row.tz = "UTC"  # the zone known now
        await rig.fake.wait_until(lambda: len(rig.fake.originated) >= 1, timeout=15)
    finally:
        await worker.stop()
    assert rig.clock.now() < due + timedelta(minutes=12)
    async with rig.db.session() as session:
        runs = (await session.scalars(select(ScheduleRun).order_by(ScheduleRun.id))).all()
    assert runs[0].due_at == due
