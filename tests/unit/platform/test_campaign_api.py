"""``/v1/campaigns`` and ``/v1/schedules`` over the platform's API on FakeAsterisk and
SQLite: create (JSON and CSV), progress, pause/resume/cancel, schedules, and the error
codes (401, 403, 404, 409, 422 naming the field)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from platform_helpers import ADMIN, READ, WRITE, Running, auth

from voxtra.app import VoxtraApp
from voxtra.calls.session import CallSession
from voxtra.platform.engine import ScaledClock, service

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


def with_agent(app: VoxtraApp, handled: list[CallSession]) -> None:
    @app.route("2000", name="agent")
    async def agent(call: CallSession) -> None:
        handled.append(call)
        await asyncio.sleep(0.01)
        await call.hangup()


async def start(running: Callable[..., Any]) -> Running:
    rig: Running = await running(configure=with_agent)
    worker = service.worker_of(rig.platform)
    worker.clock = ScaledClock(60, start=datetime(2026, 11, 30, 9, 0, tzinfo=UTC))
    worker.poll_interval = 2.0  # of the clock's time: 1/30 s
    worker.wake()
    return rig


async def progress(rig: Running, campaign_id: str, until: str, timeout: float = 10) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            got = await rig.client.get(f"/v1/campaigns/{campaign_id}", headers=auth(READ))
            assert got.status_code == 200, got.text
            if got.json()["status"] == until:
                return got.json()
            await asyncio.sleep(0.05)


async def test_a_json_campaign_runs_to_its_end(running: Callable[..., Any]) -> None:
    rig = await start(running)
    rig.fake.endpoint_outcomes.update({"PJSIP/b1": "busy", "PJSIP/n1": "noanswer"})
    body = {
        "name": "renewals",
        "route": "agent",
        "max_concurrent": 2,
        "calls_per_minute": 60,
        "retry": {"max_attempts": 2, "busy": {"delay": 5}, "no_answer": None},
        "contacts": [
            {"to": "PJSIP/a1", "variables": {"name": "Ann"}},
            {"to": "PJSIP/a2", "tz": "Europe/Berlin"},
            {"to": "PJSIP/b1"},
            {"to": "PJSIP/n1"},
        ],
    }
    made = await rig.client.post("/v1/campaigns", json=body, headers=auth(WRITE))
    assert made.status_code == 201, made.text
    assert made.json()["total"] == 4
    done = await progress(rig, made.json()["campaign_id"], "finished")
    assert done["contacts"] == {"completed": 2, "busy": 1, "no_answer": 1}
    assert done["attempts"] == {"completed": 2, "busy": 2, "no_answer": 1}
    ann = next(c for c in rig.handled if c.metadata["customer_data"].get("name") == "Ann")
    assert ann.metadata["campaign_id"] == made.json()["campaign_id"]
    listed = await rig.client.get("/v1/campaigns", headers=auth(READ))
    assert [c["campaign_id"] for c in listed.json()] == [made.json()["campaign_id"]]
    # every attempt is a call of the store, busy and unanswered ones too
    await rig.settle()
    calls = await rig.client.get(
        "/v1/calls", params={"campaign_id": made.json()["campaign_id"]}, headers=auth(READ)
    )
    assert calls.status_code == 200, calls.text
    items = calls.json()["calls"]
    assert sorted(c["status"] for c in items) == [
        "busy",
        "busy",
        "completed",
        "completed",
        "no_answer",
    ]
    assert [c["to"] for c in items if c["status"] == "busy"] == ["PJSIP/b1", "PJSIP/b1"]


async def test_a_csv_campaign_with_per_contact_variables_and_zones(
    running: Callable[..., Any],
) -> None:
    rig = await start(running)
    csv_text = "to,tz,name,plan\nPJSIP/c1,Europe/Berlin,Ann,gold\nPJSIP/c2,,Bob,basic\n"
    made = await rig.client.post(
        "/v1/campaigns",
        files={"contacts": ("contacts.csv", csv_text.encode(), "text/csv")},
        data={"campaign": '{"route": "agent", "tz": "America/New_York"}'},
        headers=auth(WRITE),
    )
    assert made.status_code == 201, made.text
    await progress(rig, made.json()["campaign_id"], "finished")
    seen = sorted(
        (c.metadata["customer_data"]["name"], c.metadata["customer_data"]["plan"])
        for c in rig.handled
    )
    assert seen == [("Ann", "gold"), ("Bob", "basic")]


async def test_a_start_at_without_an_offset_is_a_wall_time_in_the_campaigns_zone(
    running: Callable[..., Any],
) -> None:
    # Before, "2026-11-30T10:00:00" with tz Europe/Paris was read as 10:00 UTC, silently:
    # 11:00 in Paris, an hour after the operator's 10:00 (the clock says 09:00 UTC).
    rig = await start(running)
    made = await rig.client.post(
        "/v1/campaigns",
        json={
            "route": "agent",
            "tz": "Europe/Paris",
            "start_at": "2026-11-30T10:00:00",
            "contacts": [{"to": "PJSIP/s1"}],
        },
        headers=auth(WRITE),
    )
    assert made.status_code == 201, made.text
    assert made.json()["start_at"] == "2026-11-30T09:00:00Z"
    done = await progress(rig, made.json()["campaign_id"], "finished")
    assert done["contacts"] == {"completed": 1}
    for start_at, tz, instant in (
        ("2026-12-01T09:00:00", "America/New_York", "2026-12-01T14:00:00Z"),
        ("2026-12-01T09:00:00", None, "2026-12-01T09:00:00Z"),  # tz's default: UTC
        ("2026-12-01T09:00:00+01:00", "America/New_York", "2026-12-01T08:00:00Z"),
        ("2026-12-01T09:00:00Z", "Europe/Paris", "2026-12-01T09:00:00Z"),
        # the spring gap: 02:30 never happens in Paris that night; the clocks' jump
        ("2027-03-28T02:30:00", "Europe/Paris", "2027-03-28T01:00:00Z"),
    ):
        later = await rig.client.post(
            "/v1/campaigns",
            json={
                "route": "agent",
                "start_at": start_at,
                "contacts": [{"to": "PJSIP/s2"}],
                **({"tz": tz} if tz else {}),
            },
            headers=auth(WRITE),
        )
        assert later.status_code == 201, later.text
        assert (start_at, later.json()["start_at"]) == (start_at, instant)
        assert later.json()["contacts"] == {"pending": 1}


async def test_pause_resume_cancel_and_their_conflicts(running: Callable[..., Any]) -> None:
    rig = await start(running)
    made = await rig.client.post(
        "/v1/campaigns",
        json={
            "route": "agent",
            "max_concurrent": 1,
            "calls_per_minute": 1,  # one a minute of the clock's: 1 s of the test's
            "contacts": [{"to": f"PJSIP/p{i}"} for i in range(5)],
        },
        headers=auth(WRITE),
    )
    cid = made.json()["campaign_id"]
    paused = await rig.client.post(f"/v1/campaigns/{cid}/pause", headers=auth(WRITE))
    assert paused.status_code == 200 and paused.json()["status"] == "paused"
    resumed = await rig.client.post(f"/v1/campaigns/{cid}/resume", headers=auth(WRITE))
    assert resumed.json()["status"] == "running"
    canceled = await rig.client.post(f"/v1/campaigns/{cid}/cancel", headers=auth(WRITE))
    assert canceled.json()["status"] == "canceled"
    again = await rig.client.post(f"/v1/campaigns/{cid}/resume", headers=auth(WRITE))
    assert again.status_code == 409
    assert again.headers["content-type"].startswith("application/problem+json")
    await asyncio.sleep(0.3)
    final = (await rig.client.get(f"/v1/campaigns/{cid}", headers=auth(READ))).json()
    assert sum(final["contacts"].values()) == 5
    assert set(final["contacts"]) <= {"completed", "canceled"}
    assert final["contacts"].get("completed", 0) == len(rig.fake.originated) <= 1
    missing = await rig.client.post("/v1/campaigns/camp_nope/pause", headers=auth(WRITE))
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"tz": "Mars/Base"}, "tz"),
        ({"windows": [{"start": "18:00", "end": "09:00"}]}, "windows"),
        ({"contacts": [{"to": "Local/1@forbidden"}]}, "contacts.0.to"),
        ({"contacts": []}, "contacts"),
        ({"max_concurrent": 0}, "max_concurrent"),
        ({"route": "nosuch"}, "route"),
        ({"retry": {"busy": {"delay": -1}}}, "retry.busy.delay"),
        # every contact's variables: an object (a string stopped every later campaign's
        # claims on every worker)
        ({"metadata": {"variables": "x"}}, "metadata"),
        ({"metadata": {"blob": "x" * 20_000}}, "metadata"),
        (
            {"contacts": [{"to": "PJSIP/x", "variables": {"blob": "x" * 20_000}}]},
            "contacts.0.variables",
        ),
        # the store's column holds 2,000 characters (Postgres refused it: a 500)
        ({"webhook_url": "https://hooks.example/" + "a" * 2000}, "webhook_url"),
        ({"webhook_url": "http://[::1/x"}, "webhook_url"),
        # past the year 9999 in UTC, or before the year 1: the conversion was a 500
        ({"start_at": "9999-12-31T23:00:00-05:00"}, "start_at"),
        ({"start_at": "9999-12-31T23:00:00", "tz": "America/New_York"}, "start_at"),
        ({"start_at": "0001-01-01T00:30:00", "tz": "Europe/Berlin"}, "start_at"),
        # a retry after the year 9999: stored, then every outcome written under it failed
        ({"retry": {"failed": {"delay": 60, "max_delay": 1e12}}}, "retry.failed.max_delay"),
    ],
)
async def test_invalid_campaigns_are_422_naming_the_field(
    running: Callable[..., Any], change: dict[str, Any], field: str
) -> None:
    rig = await start(running)
    body = {"route": "agent", "contacts": [{"to": "PJSIP/x"}], **change}
    got = await rig.client.post("/v1/campaigns", json=body, headers=auth(WRITE))
    assert got.status_code == 422, got.text
    assert field in [e["field"] for e in got.json()["errors"]]


async def test_a_backoff_factor_of_json_infinity_is_422(running: Callable[..., Any]) -> None:
    rig = await start(running)
    # JSON's 1e999 is read as infinity; the factor then made every retry's time NaN
    raw = (
        '{"route": "agent", "contacts": [{"to": "PJSIP/x"}], '
        '"retry": {"failed": {"delay": 0, "factor": 1e999}}}'
    )
    got = await rig.client.post(
        "/v1/campaigns",
        content=raw,
        headers={**auth(WRITE), "content-type": "application/json"},
    )
    assert got.status_code == 422, got.text
    assert [e["field"] for e in got.json()["errors"]] == ["retry.failed.factor"]


async def test_a_nul_character_is_refused_before_postgres_sees_it(
    running: Callable[..., Any], postgres_url: str
) -> None:
    # Postgres' text holds no NUL: a campaign named with one, or a path naming one, was
    # a 500 (asyncpg: invalid byte sequence for encoding "UTF8": 0x00)
    rig: Running = await running(configure=with_agent, database_url=postgres_url)
    body = {"route": "agent", "name": "renewals\x00", "contacts": [{"to": "PJSIP/x"}]}
    got = await rig.client.post("/v1/campaigns", json=body, headers=auth(WRITE))
    assert got.status_code == 422, got.text
    assert [e["field"] for e in got.json()["errors"]] == ["name"]
    assert (await rig.client.get("/v1/campaigns/camp_%00", headers=auth(READ))).status_code == 404
    for action in ("pause", "resume", "cancel"):
        steered = await rig.client.post(f"/v1/campaigns/camp_%00/{action}", headers=auth(WRITE))
        assert steered.status_code == 404, steered.text


async def test_campaigns_and_schedules_need_their_scopes(running: Callable[..., Any]) -> None:
    rig = await start(running)
    body = {"route": "agent", "contacts": [{"to": "PJSIP/x"}]}
    assert (await rig.client.post("/v1/campaigns", json=body)).status_code == 401
    assert (
        await rig.client.post("/v1/campaigns", json=body, headers=auth(READ))
    ).status_code == 403
    sched = {"to": "PJSIP/x", "route": "agent", "cron": "0 9 * * MON"}
    assert (await rig.client.post("/v1/schedules", json=sched)).status_code == 401
    assert (
        await rig.client.post("/v1/schedules", json=sched, headers=auth(READ))
    ).status_code == 403
    assert (await rig.client.get("/v1/schedules/sched_x", headers=auth(ADMIN))).status_code == 404


async def test_schedules_once_and_by_cron_through_the_api(running: Callable[..., Any]) -> None:
    rig = await start(running)
    weekly = await rig.client.post(
        "/v1/schedules",
        json={"to": "PJSIP/w", "route": "agent", "cron": "0 9 * * MON", "tz": "Europe/Berlin"},
        headers=auth(WRITE),
    )
    assert weekly.status_code == 201, weekly.text
    # the clock says Monday 2026-11-30 09:00 UTC: next Monday 09:00 Berlin is 08:00 UTC
    assert weekly.json()["next_run_at"].startswith("2026-12-07T08:00:00")
    once = await rig.client.post(
        "/v1/schedules",
        json={
            "to": "PJSIP/o",
            "route": "agent",
            "at": "2026-11-30T10:00:30",
            "tz": "Europe/Berlin",
        },
        headers=auth(WRITE),
    )
    assert once.json()["next_run_at"].startswith("2026-11-30T09:00:30")
    sid = once.json()["schedule_id"]
    async with asyncio.timeout(10):
        while True:
            got = (await rig.client.get(f"/v1/schedules/{sid}", headers=auth(READ))).json()
            if got["status"] == "done" and got["recent_runs"] and got["recent_runs"][0]["outcome"]:
                break
            await asyncio.sleep(0.05)
    assert got["recent_runs"][0]["outcome"] == "completed"
    assert [c.endpoint for c in rig.fake.originated] == ["PJSIP/o"]
    gone = await rig.client.delete(
        f"/v1/schedules/{weekly.json()['schedule_id']}", headers=auth(WRITE)
    )
    assert gone.status_code == 200 and gone.json()["status"] == "canceled"
    listed = await rig.client.get("/v1/schedules", headers=auth(READ))
    assert {s["status"] for s in listed.json()["items"]} == {"canceled", "done"}
    for bad, field in (
        ({"cron": "99 * * * *"}, "cron"),
        ({"cron": "* * * * *", "tz": "X/Y"}, "tz"),
    ):
        got_bad = await rig.client.post(
            "/v1/schedules", json={"to": "PJSIP/x", "route": "agent", **bad}, headers=auth(WRITE)
        )
        assert got_bad.status_code == 422 and got_bad.json()["errors"][0]["field"] == field
    too_long = await rig.client.post(
        "/v1/schedules",
        json={
            "to": "PJSIP/x",
            "cron": "* * * * *",
            "webhook_url": "https://hooks.example/" + "a" * 2000,
            "metadata": {"blob": "x" * 20_000},
        },
        headers=auth(WRITE),
    )
    assert too_long.status_code == 422
    assert {e["field"] for e in too_long.json()["errors"]} == {"webhook_url", "metadata"}
    both = await rig.client.post(
        "/v1/schedules",
        json={"to": "PJSIP/x", "cron": "* * * * *", "at": "2026-12-01T09:00"},
        headers=auth(WRITE),
    )
    assert both.status_code == 422


async def test_a_campaign_is_checked_without_starting_and_documented(
    running: Callable[..., Any],
) -> None:
    rig = await start(running)
    body = {"route": "agent", "contacts": [{"to": "PJSIP/x"}, {"to": "PJSIP/y", "tz": "UTC"}]}
    ok = await rig.client.post("/v1/campaigns/check", json=body, headers=auth(WRITE))
    assert ok.status_code == 200 and ok.json() == {"valid": True, "contacts": 2}
    bad = {"route": "agent", "contacts": [{"to": "PJSIP/x", "tz": "Nowhere/Town"}]}
    got = await rig.client.post("/v1/campaigns/check", json=bad, headers=auth(WRITE))
    assert got.status_code == 422 and got.json()["errors"][0]["field"] == "contacts.0.tz"
    listed = await rig.client.get("/v1/campaigns", headers=auth(READ))
    assert listed.json() == []  # nothing was started
    no_header = await rig.client.post(
        "/v1/campaigns",
        files={"contacts": ("c.csv", b"number\nPJSIP/x\n", "text/csv")},
        data={"campaign": '{"route": "agent"}'},
        headers=auth(WRITE),
    )
    assert no_header.status_code == 422
    assert no_header.json()["errors"][0]["field"] == "contacts"
    # a field over the csv module's 128 KiB limit, inside the 20 MB a file may have
    huge = await rig.client.post(
        "/v1/campaigns",
        files={"contacts": ("c.csv", b"to,note\nPJSIP/x," + b"n" * 140_000 + b"\n", "text/csv")},
        data={"campaign": '{"route": "agent"}'},
        headers=auth(WRITE),
    )
    assert huge.status_code == 422 and "cannot be read" in huge.json()["errors"][0]["message"]
    # every schema the campaign and schedule paths name is in the document
    doc = (await rig.client.get("/openapi.json")).json()
    text = str({p: v for p, v in doc["paths"].items() if "campaign" in p or "schedule" in p})
    refs = {part.split("'")[0] for part in text.split("#/components/schemas/")[1:]}
    assert refs and refs <= set(doc["components"]["schemas"])
    assert "multipart/form-data" in doc["paths"]["/v1/campaigns"]["post"]["requestBody"]["content"]


async def test_nothing_is_claimed_while_asterisk_is_out_of_reach(
    running: Callable[..., Any],
) -> None:
    rig = await start(running)
    rig.fake.reachable = False
    rig.fake.disconnect_events()
    await rig.fake.wait_until(lambda: not rig.app.ari_connected, timeout=5)
    made = await rig.client.post(
        "/v1/campaigns",
        json={"route": "agent", "contacts": [{"to": "PJSIP/a"}, {"to": "PJSIP/b"}]},
        headers=auth(WRITE),
    )
    cid = made.json()["campaign_id"]
    await asyncio.sleep(0.3)  # several rounds of the worker
    waiting = (await rig.client.get(f"/v1/campaigns/{cid}", headers=auth(READ))).json()
    assert waiting["contacts"] == {"pending": 2} and waiting["attempts"] == {}
    rig.fake.reachable = True
    done = await progress(rig, cid, "finished", timeout=20)
    assert done["contacts"] == {"completed": 2}


async def test_the_workers_timing_comes_from_the_settings(running: Callable[..., Any]) -> None:
    rig: Running = await running(platform={"worker_lease": 12, "worker_poll_interval": 0.5})
    worker = service.worker_of(rig.platform)
    assert (worker.lease, worker.poll_interval) == (12.0, 0.5)


async def test_a_schedule_at_the_calendars_end_is_a_422_on_at(running: Callable[..., Any]) -> None:
    rig = await start(running)
    for body in (
        {"at": "9999-12-31T23:00:00-05:00"},
        {"at": "9999-12-31T23:00:00", "tz": "America/New_York"},
        {"cron": "0 9 * * MON", "tz": "Mars/Olympus"},
        {"cron": "not a cron"},
    ):
        made = await rig.client.post(
            "/v1/schedules", json={"to": "PJSIP/o", "route": "agent", **body}, headers=auth(WRITE)
        )
        assert made.status_code == 422, (body, made.text)
        (error,) = made.json()["errors"]
        expected = "at" if "at" in body else "tz" if "Mars" in str(body) else "cron"
        assert error["field"] == expected, (body, made.json())
