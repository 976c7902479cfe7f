"""Bad input to ``/v1/calls``, ``/v1/campaigns`` and ``/v1/schedules`` is a 4xx problem
naming the field, never a 500: each case here was one (on Postgres, or on both stores)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from platform_helpers import READ, WRITE, Running, auth

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

NESTED = b"[" * 100_000
"""JSON nested past what ``json.loads`` recurses through (it raised RecursionError)."""


async def test_a_schedule_id_or_status_with_a_nul_character_is_refused_on_postgres(
    running: Callable[..., Any], postgres_url: str
) -> None:
    # Postgres refuses a NUL character in text: each was a 500 (asyncpg: invalid byte
    # sequence for encoding "UTF8": 0x00), as calls' and campaigns' ids were.
    r: Running = await running(database_url=postgres_url)
    got = await r.client.get("/v1/schedules/sched_%00", headers=auth(READ))
    assert got.status_code == 404, got.text
    deleted = await r.client.delete("/v1/schedules/sched_%00", headers=auth(WRITE))
    assert deleted.status_code == 404, deleted.text
    listed = await r.client.get("/v1/schedules?status=active%00", headers=auth(READ))
    assert listed.status_code == 422, listed.text
    assert [e["field"] for e in listed.json()["errors"]] == ["status"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("created_after", "0001-01-01T00:00:00+05:00"),
        ("created_before", "9999-12-31T23:00:00-05:00"),
    ],
)
async def test_a_created_bound_past_the_calendar_in_utc_is_422(
    running: Callable[..., Any], name: str, value: str
) -> None:
    # Past the year 1 or 9999 once in UTC: the store's conversion raised OverflowError.
    r: Running = await running()
    got = await r.client.get("/v1/calls", params={name: value}, headers=auth(READ))
    assert got.status_code == 422, got.text
    assert [e["field"] for e in got.json()["errors"]] == [name]


async def test_a_last_event_id_past_the_event_ids_is_422_on_postgres(
    running: Callable[..., Any], postgres_url: str
) -> None:
    # It reached Postgres inside the stream, after the 200: "value out of int32 range".
    r: Running = await running(database_url=postgres_url)
    made = await r.client.post(
        "/v1/calls", json={"to": "PJSIP/alice", "route": "hello"}, headers=auth(WRITE)
    )
    assert made.status_code == 201, made.text
    got = await r.client.get(
        f"/v1/calls/{made.json()['call_id']}/events",
        headers={**auth(READ), "Last-Event-ID": str(2**31)},
    )
    assert got.status_code == 422, got.text
    assert [e["field"] for e in got.json()["errors"]] == ["Last-Event-ID"]


async def test_a_campaign_body_nested_too_deep_is_422(running: Callable[..., Any]) -> None:
    r: Running = await running()
    json_body = {**auth(WRITE), "content-type": "application/json"}
    for path in ("/v1/campaigns", "/v1/campaigns/check"):
        got = await r.client.post(path, content=NESTED, headers=json_body)
        assert got.status_code == 422, (path, got.text)
        assert [e["field"] for e in got.json()["errors"]] == ["body"]
    uploaded = await r.client.post(
        "/v1/campaigns",
        files={"contacts": ("contacts.csv", b"to\nPJSIP/alice\n")},
        data={"campaign": NESTED.decode()},
        headers=auth(WRITE),
    )
    assert uploaded.status_code == 422, uploaded.text
    assert [e["field"] for e in uploaded.json()["errors"]] == ["campaign"]


@pytest.mark.parametrize("start", ["²:00", "9" * 5000 + ":00"])
async def test_a_window_time_int_cannot_read_is_422_on_windows(
    running: Callable[..., Any], start: str
) -> None:
    # "²" is a digit to str.isdigit and not to int(); 5,000 digits are past int()'s limit.
    r: Running = await running()
    body = {"route": "hello", "contacts": [{"to": "PJSIP/alice"}], "windows": [{"start": start}]}
    got = await r.client.post("/v1/campaigns", json=body, headers=auth(WRITE))
    assert got.status_code == 422, got.text
    assert [e["field"] for e in got.json()["errors"]] == ["windows"]


@pytest.mark.parametrize(
    "forged",
    [
        ["0001-01-01T00:00:00+05:00", "call_x"],  # past the calendar once in UTC
        ["2026-11-30T10:00:00+00:00", "call_\x00"],  # a NUL Postgres refuses
    ],
)
async def test_a_forged_cursor_is_422_on_postgres(
    running: Callable[..., Any], postgres_url: str, forged: list[str]
) -> None:
    # Both were 500s: OverflowError in the query, asyncpg's "invalid byte sequence".
    cursor = base64.urlsafe_b64encode(json.dumps(forged).encode()).decode().rstrip("=")
    r: Running = await running(database_url=postgres_url)
    got = await r.client.get("/v1/calls", params={"cursor": cursor}, headers=auth(READ))
    assert got.status_code == 422, got.text
    assert [e["field"] for e in got.json()["errors"]] == ["cursor"]
