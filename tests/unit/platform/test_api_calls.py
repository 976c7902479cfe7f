"""The calls API over HTTP (httpx's ASGI transport) on an app run by FakeAsterisk."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from platform_helpers import ADMIN, READ, WRITE, auth

from voxtra.calls.session import CallSession
from voxtra.pipeline.events import BargeInEvent
from voxtra.pipeline.pipeline import VoicePipeline
from voxtra.platform.api.auth import RateLimiter
from voxtra.platform.backends import AsteriskCallBackend, OriginateRequest
from voxtra.platform.schemas import CallRequest


async def test_a_call_is_placed_answered_and_recorded_in_the_store(
    running: Callable[..., Any],
) -> None:
    r = await running()
    response = await r.client.post(
        "/v1/calls",
        json={
            "to": "PJSIP/alice",
            "from": "+4930123",
            "route": "hello",
            "variables": {"name": "Ada"},
            "metadata": {"crm": 7},
        },
        headers=auth(WRITE),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["status"] == "queued" and body["call_id"].startswith("call_")
    call_id = body["call_id"]
    await r.wait_status(call_id, "in_progress")
    assert len(r.handled) == 1
    session = r.handled[0]
    assert session.metadata["customer_data"] == {"name": "Ada"}
    assert r.fake.originated[0].caller == "+4930123"
    await r.fake.call(session.id).hang_up()
    call = await r.wait_status(call_id, "completed")
    detail = (await r.client.get(f"/v1/calls/{call_id}", headers=auth(READ))).json()
    assert detail["status"] == "completed"
    assert detail["direction"] == "outbound"
    assert detail["to"] == "PJSIP/alice" and detail["from"] == "+4930123"
    assert detail["endpoint"] == "PJSIP/alice"
    assert detail["metadata"] == {"crm": 7} and detail["variables"] == {"name": "Ada"}
    assert detail["channel_id"] == session.id
    assert detail["answered_at"] is not None and detail["ended_at"] is not None
    assert detail["hangup_cause"] == 16 and detail["end_reason"] == "remote"
    assert detail["metrics"]["turns"] == 0
    assert call.duration is not None and call.duration >= 0
    events = [(e.kind, e.data.get("status")) for e in await r.platform.store.events_after(call_id)]
    assert events == [
        ("status", "queued"),
        ("status", "dialing"),
        ("status", "in_progress"),
        ("status", "completed"),
    ]


async def test_the_same_idempotency_key_gives_the_same_call_and_dials_once(
    running: Callable[..., Any],
) -> None:
    r = await running()
    body = {"to": "PJSIP/alice", "route": "hello"}
    headers = {**auth(WRITE), "Idempotency-Key": "order-42"}
    first, second = await asyncio.gather(
        r.client.post("/v1/calls", json=body, headers=headers),
        r.client.post("/v1/calls", json=body, headers=headers),
    )
    third = await r.client.post("/v1/calls", json=body, headers=headers)
    assert {first.status_code, second.status_code, third.status_code} == {201}
    ids = {first.json()["call_id"], second.json()["call_id"], third.json()["call_id"]}
    assert len(ids) == 1
    await r.wait_status(ids.pop(), "in_progress")
    await asyncio.sleep(0.1)
    assert len(r.fake.originated) == 1
    reused = await r.client.post("/v1/calls", json={**body, "to": "PJSIP/bob"}, headers=headers)
    assert reused.status_code == 422
    assert reused.json()["errors"] == [
        {"field": "Idempotency-Key", "message": "used with a different body"}
    ]
    other = await r.client.post(
        "/v1/calls", json=body, headers={**auth(ADMIN), "Idempotency-Key": "order-42"}
    )
    assert other.status_code == 201 and other.json()["call_id"] not in ids


async def test_busy_and_unanswered_calls_end_with_their_status_and_cause(
    running: Callable[..., Any],
) -> None:
    r = await running()
    r.fake.endpoint_outcomes = {"PJSIP/busy": "busy", "PJSIP/away": "noanswer"}
    busy = (
        await r.client.post(
            "/v1/calls", json={"to": "PJSIP/busy", "route": "hello"}, headers=auth(WRITE)
        )
    ).json()["call_id"]
    away = (
        await r.client.post(
            "/v1/calls", json={"to": "PJSIP/away", "route": "hello"}, headers=auth(WRITE)
        )
    ).json()["call_id"]
    busy_call = await r.wait_status(busy, "busy")
    away_call = await r.wait_status(away, "no_answer")
    assert busy_call.hangup_cause == 17
    assert away_call.hangup_cause in (18, 19)
    assert r.handled == []


async def test_a_backend_failing_unexpectedly_ends_the_call_failed_not_dialing(
    running: Callable[..., Any],
) -> None:
    # Before, only VoxtraErrors were caught: anything else escaped the dialling task
    # and the call stayed "dialing" for ever (as the worker's attempts already do not).
    r = await running()

    class Broken(AsteriskCallBackend):
        async def originate(self, request: OriginateRequest) -> CallSession:
            raise RuntimeError("a bug in a backend")

    r.platform.calls.add_backend(Broken(r.app, r.platform.settings))
    call_id = (
        await r.client.post(
            "/v1/calls", json={"to": "PJSIP/alice", "route": "hello"}, headers=auth(WRITE)
        )
    ).json()["call_id"]
    call = await r.wait_status(call_id, "failed")
    assert call.error == "RuntimeError" and call.ended_at is not None
    assert not r.platform.calls.dialing


async def test_a_call_cancelled_before_its_dialling_began_still_ends_canceled(
    running: Callable[..., Any],
) -> None:
    # A dialling task cancelled before its first step never ran _dial's handler: a call
    # hung up right after it was placed, or placed as the platform stopped, stayed
    # "queued" for ever (its event stream never ending), and nothing was dialled.
    r = await running()
    request = CallRequest(to="PJSIP/alice", route="hello")
    hung_up, _ = await r.platform.calls.place(request)
    await r.platform.calls.hangup(hung_up)
    stopped, _ = await r.platform.calls.place(request)
    await r.platform.calls.stop()
    for call_id in (hung_up.id, stopped.id):
        call = await r.platform.store.get(call_id)
        assert call is not None and call.status == "canceled", call_id
        assert call.ended_at is not None and call.error == "canceled while dialling"
        async with asyncio.timeout(10):
            got = await r.client.get(f"/v1/calls/{call_id}/events", headers=auth(READ))
        statuses = [
            json.loads(line[6:])["status"]
            for line in got.text.splitlines()
            if line.startswith("data: ")
        ]
        assert statuses == ["queued", "canceled"], call_id
    assert r.fake.originated == []
    metrics = (await r.client.get("/metrics")).text
    assert 'voxtra_calls_total{direction="outbound",status="canceled"} 2.0' in metrics


async def test_a_call_cancelled_while_ringing_is_counted_once(
    running: Callable[..., Any],
) -> None:
    # _dial's handler and the hang-up both end the call: only the write that ended it
    # counts it.
    r = await running()
    r.fake.dial_outcome = "ring"
    call_id = (
        await r.client.post(
            "/v1/calls", json={"to": "PJSIP/slow", "route": "hello"}, headers=auth(WRITE)
        )
    ).json()["call_id"]
    await r.wait_status(call_id, "ringing")
    hung_up = await r.client.post(f"/v1/calls/{call_id}/hangup", headers=auth(WRITE))
    assert hung_up.json()["status"] == "canceled"
    metrics = (await r.client.get("/metrics")).text
    assert 'voxtra_calls_total{direction="outbound",status="canceled"} 1.0' in metrics


async def test_errors_are_problem_documents_with_the_right_codes(
    running: Callable[..., Any],
) -> None:
    r = await running()
    client = r.client
    missing = await client.get("/v1/calls")
    assert missing.status_code == 401
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    problem = missing.json()
    assert problem["status"] == 401 and problem["title"] == "Unauthorized" and problem["type"]
    assert (await client.get("/v1/calls", headers=auth("not-a-token"))).status_code == 401
    forbidden = await client.post("/v1/calls", json={"to": "PJSIP/a"}, headers=auth(READ))
    assert forbidden.status_code == 403 and "calls:write" in forbidden.json()["detail"]
    unknown = await client.get("/v1/calls/call_nope", headers=auth(READ))
    assert unknown.status_code == 404 and unknown.json()["type"].endswith("/not-found")

    async def invalid(body: dict[str, Any]) -> list[str]:
        response = await client.post("/v1/calls", json=body, headers=auth(WRITE))
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        return [e["field"] for e in response.json()["errors"]]

    assert await invalid({"route": "hello"}) == ["to"]
    assert await invalid({"to": "PJSIP/a", "route": "hello", "ring_timeout": 0}) == ["ring_timeout"]
    assert await invalid({"to": "PJSIP/a", "route": "nope"}) == ["route"]
    assert await invalid({"to": "PJSIP/a", "route": "hello", "from": "1; drop"}) == ["from"]
    assert await invalid({"to": "PJSIP/a", "route": "hello", "colour": "red"}) == ["colour"]
    huge = {"to": "PJSIP/a", "route": "hello", "metadata": {"blob": "x" * 20_000}}
    assert await invalid(huge) == ["metadata"]
    # `to`: nothing reaches the dialplan unchecked
    for to in (
        "PJSIP/alice,t",  # Dial options
        "Local/100@default",  # a context not allowed
        "IAX2/peer",  # a technology not allowed
        "PJSIP/../../etc",
        "sip:bob@example.com",  # no sip_uri_endpoint set
        "0049301234",  # not E.164
        "PJSIP/a&PJSIP/b",
    ):
        assert await invalid({"to": to, "route": "hello"}) == ["to"], to
    assert r.fake.originated == []
    r.fake.endpoint_outcomes = {"PJSIP/busy": "busy"}
    ended = (
        await client.post(
            "/v1/calls", json={"to": "PJSIP/busy", "route": "hello"}, headers=auth(WRITE)
        )
    ).json()["call_id"]
    await r.wait_status(ended, "busy")
    conflict = await client.post(f"/v1/calls/{ended}/hangup", headers=auth(WRITE))
    assert conflict.status_code == 409 and conflict.json()["type"].endswith("/call-ended")
    transfer = await client.post(
        f"/v1/calls/{ended}/transfer", json={"target": "PJSIP/bob"}, headers=auth(WRITE)
    )
    assert transfer.status_code == 409


async def test_to_kinds_are_mapped_to_their_endpoint(running: Callable[..., Any]) -> None:
    r = await running(platform={"sip_uri_endpoint": "trunk"})
    expected = {
        "PJSIP/alice": "PJSIP/alice",
        "pjsip/bob": "PJSIP/bob",
        "Local/100@sandbox": "Local/100@sandbox",
        "+4930123456": "PJSIP/+4930123456@trunk",
        "sip:carol@example.com": "PJSIP/trunk/sip:carol@example.com",
    }
    for to, endpoint in expected.items():
        response = await r.client.post(
            "/v1/calls", json={"to": to, "route": "hello"}, headers=auth(WRITE)
        )
        assert response.status_code == 201, response.text
        detail = (
            await r.client.get(f"/v1/calls/{response.json()['call_id']}", headers=auth(READ))
        ).json()
        assert detail["endpoint"] == endpoint


async def test_hangup_ends_a_live_call_and_cancels_one_still_ringing(
    running: Callable[..., Any],
) -> None:
    r = await running()
    live = (
        await r.client.post(
            "/v1/calls", json={"to": "PJSIP/alice", "route": "hello"}, headers=auth(WRITE)
        )
    ).json()["call_id"]
    await r.wait_status(live, "in_progress")
    response = await r.client.post(f"/v1/calls/{live}/hangup", headers=auth(WRITE))
    assert response.status_code == 200
    call = await r.wait_status(live, "completed")
    assert call.end_reason == "hangup"

    r.fake.dial_outcome = "ring"
    ringing = (
        await r.client.post(
            "/v1/calls", json={"to": "PJSIP/slow", "route": "hello"}, headers=auth(WRITE)
        )
    ).json()["call_id"]
    await r.wait_status(ringing, "ringing")  # its far end rings: 180 seen
    await r.fake.wait_until(lambda: len(r.fake.originated) == 2)
    response = await r.client.post(f"/v1/calls/{ringing}/hangup", headers=auth(WRITE))
    assert response.status_code == 200
    assert response.json()["status"] == "canceled"
    await r.fake.wait_until(lambda: r.fake.originated[1].ended)


async def test_transfer_validates_the_target_and_moves_a_live_call(
    running: Callable[..., Any],
) -> None:
    r = await running()
    call_id = (
        await r.client.post(
            "/v1/calls", json={"to": "PJSIP/alice", "route": "hello"}, headers=auth(WRITE)
        )
    ).json()["call_id"]
    await r.wait_status(call_id, "in_progress")
    bad = await r.client.post(
        f"/v1/calls/{call_id}/transfer", json={"target": "100@secret"}, headers=auth(WRITE)
    )
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "target"
    # Allowed by the platform, missing from Asterisk's dialplan: a 422 too (was a 500),
    # the caller still on the line.
    r.fake.dialplan = {"sandbox": {"200": 1}}
    missing = await r.client.post(
        f"/v1/calls/{call_id}/transfer", json={"target": "201@sandbox"}, headers=auth(WRITE)
    )
    assert missing.status_code == 422, missing.text
    assert missing.json()["errors"][0]["field"] == "target"
    assert "no extension '201'" in missing.json()["errors"][0]["message"]
    assert (await r.platform.store.get(call_id)).status == "in_progress"  # type: ignore[union-attr]
    good = await r.client.post(
        f"/v1/calls/{call_id}/transfer", json={"target": "200@sandbox"}, headers=auth(WRITE)
    )
    assert good.status_code == 200, good.text
    call = await r.wait_status(call_id, "completed")
    assert call.end_reason == "transferred"
    kinds = [e.kind for e in await r.platform.store.events_after(call_id)]
    assert "transfer" in kinds


async def test_inbound_calls_are_listed_and_pages_follow_the_cursor(
    running: Callable[..., Any],
) -> None:
    r = await running()
    for n in range(5):
        call = await r.fake.incoming(extension="1000", caller=f"+49301{n}")
        await call.wait_answered()
        await call.hang_up()
        await call.wait_ended()
    await r.settle()
    await asyncio.sleep(0.05)
    await r.settle()
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 2, "direction": "inbound"}
        if cursor:
            params["cursor"] = cursor
        page = (await r.client.get("/v1/calls", params=params, headers=auth(READ))).json()
        pages += 1
        seen += [c["from"] for c in page["calls"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == [f"+49301{n}" for n in reversed(range(5))]
    listed = (
        await r.client.get("/v1/calls", params={"status": "completed"}, headers=auth(READ))
    ).json()["calls"]
    assert len(listed) == 5 and {c["direction"] for c in listed} == {"inbound"}
    assert {c["to"] for c in listed} == {"1000"}
    none = await r.client.get("/v1/calls", params={"status": "busy"}, headers=auth(READ))
    assert none.json() == {"calls": [], "next_cursor": None}
    bad = await r.client.get("/v1/calls", params={"cursor": "garbage"}, headers=auth(READ))
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "cursor"
    bad = await r.client.get("/v1/calls", params={"status": "lost"}, headers=auth(READ))
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "status"


async def test_a_token_over_its_rate_gets_429(running: Callable[..., Any]) -> None:
    r = await running(platform={"rate_limit": 1.0, "rate_burst": 3})
    codes = [(await r.client.get("/v1/calls", headers=auth(READ))).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    limited = await r.client.get("/v1/calls", headers=auth(READ))
    assert int(limited.headers["retry-after"]) >= 1
    # another token has its own bucket
    assert (await r.client.get("/v1/calls", headers=auth(WRITE))).status_code == 200


def test_the_rate_limiter_forgets_buckets_that_have_refilled() -> None:
    # One bucket per client address for failed sign-ins: kept for ever, it grew with
    # every address ever seen (~206 bytes each).
    now = [0.0]
    limiter = RateLimiter(rate=1.0, burst=2, clock=lambda: now[0])
    for n in range(3000):
        limiter.take(f"10.0.{n // 256}.{n % 256}")
    assert len(limiter) == 3000  # none refilled yet: each still counts
    now[0] = 5.0  # every bucket full again
    for _ in range(1024):
        limiter.take("busy")
    assert len(limiter) <= 1
    assert limiter.take("10.0.0.1") == 0.0  # a forgotten bucket starts full


async def test_metrics_count_unknown_methods_as_other(running: Callable[..., Any]) -> None:
    # Counted before any auth: each method as sent was a new series, for anyone.
    r = await running()
    for n in range(5):
        await r.client.request(f"M{n:04d}XYZ", "/v1/calls")
    text = (await r.client.get("/metrics")).text
    assert "M0000XYZ" not in text
    assert 'method="other",route="/v1/calls"' in text


async def test_health_readiness_metrics_and_openapi(running: Callable[..., Any]) -> None:
    r = await running()
    assert (await r.client.get("/healthz")).json() == {"status": "ok"}
    ready = await r.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ari"] and ready.json()["database"]
    call_id = (
        await r.client.post(
            "/v1/calls", json={"to": "PJSIP/alice", "route": "hello"}, headers=auth(WRITE)
        )
    ).json()["call_id"]
    await r.wait_status(call_id, "in_progress")
    text = (await r.client.get("/metrics")).text
    assert "voxtra_active_calls 1.0" in text
    await r.fake.call(r.handled[0].id).hang_up()
    await r.wait_status(call_id, "completed")
    text = (await r.client.get("/metrics")).text
    assert 'voxtra_calls_total{direction="outbound",status="completed"} 1.0' in text
    assert "voxtra_active_calls 0.0" in text
    assert "voxtra_turn_latency_seconds" in text
    schema = (await r.client.get("/openapi.json")).json()
    assert "/v1/calls" in schema["paths"] and "/v1/calls/{call_id}/events" in schema["paths"]
    assert "CallRequest" in schema["components"]["schemas"]
    assert (await r.client.get("/docs")).status_code == 200
    r.fake.reachable = False
    r.fake.disconnect_events()
    await asyncio.sleep(0.05)
    assert (await r.client.get("/readyz")).status_code == 503


async def test_an_inbound_call_goes_ringing_in_progress_completed(
    running: Callable[..., Any],
) -> None:
    r = await running()
    far_end = await r.fake.incoming(extension="1000", caller="+4930777")
    await far_end.wait_answered()
    await r.settle()
    listed = (await r.client.get("/v1/calls", headers=auth(READ))).json()["calls"]
    assert len(listed) == 1 and listed[0]["direction"] == "inbound"
    call_id = listed[0]["call_id"]
    await r.wait_status(call_id, "in_progress")
    await far_end.hang_up()
    call = await r.wait_status(call_id, "completed")
    assert call.answered_at is not None and call.from_ == "+4930777" and call.to == "1000"
    statuses = [
        e.data["status"] for e in await r.platform.store.events_after(call_id) if e.kind == "status"
    ]
    assert statuses == ["ringing", "in_progress", "completed"]


async def test_max_duration_hangs_up_an_api_call(running: Callable[..., Any]) -> None:
    r = await running()
    call_id = (
        await r.client.post(
            "/v1/calls",
            json={"to": "PJSIP/alice", "route": "hello", "max_duration": 0.3},
            headers=auth(WRITE),
        )
    ).json()["call_id"]
    call = await r.wait_status(call_id, "completed", timeout=10)
    assert call.end_reason == "hangup"
    assert r.fake.originated[0].ended


async def test_the_api_on_postgres(running: Callable[..., Any], postgres_url: str) -> None:
    """The same calls, idempotency and listing with the store on a real Postgres."""
    r = await running(database_url=postgres_url)
    headers = {**auth(WRITE), "Idempotency-Key": "pg-1"}
    body = {"to": "PJSIP/alice", "route": "hello", "variables": {"n": 1}}
    first, second = await asyncio.gather(
        r.client.post("/v1/calls", json=body, headers=headers),
        r.client.post("/v1/calls", json=body, headers=headers),
    )
    assert first.status_code == second.status_code == 201
    call_id = first.json()["call_id"]
    assert second.json()["call_id"] == call_id
    await r.wait_status(call_id, "in_progress")
    await r.fake.call(r.handled[0].id).hang_up()
    await r.wait_status(call_id, "completed")
    detail = (await r.client.get(f"/v1/calls/{call_id}", headers=auth(READ))).json()
    assert detail["variables"] == {"n": 1} and detail["hangup_cause"] == 16
    page = (await r.client.get("/v1/calls", headers=auth(READ))).json()
    assert [c["call_id"] for c in page["calls"]] == [call_id]
    assert len(r.fake.originated) == 1


async def test_an_id_with_a_nul_character_is_404_on_postgres(
    running: Callable[..., Any], postgres_url: str
) -> None:
    # Postgres refuses a NUL character in text: looking such an id up was a 500.
    r = await running(database_url=postgres_url)
    for method, path in (
        ("GET", "/v1/calls/call_%00"),
        ("GET", "/v1/calls/call_%00/transcript"),
        ("GET", "/v1/calls/call_%00/recording"),
        ("GET", "/v1/calls/call_%00/events"),
        ("POST", "/v1/calls/call_%00/hangup"),
    ):
        response = await r.client.request(method, path, headers=auth(WRITE))
        assert response.status_code == 404, (path, response.text)
    transfer = await r.client.post(
        "/v1/calls/call_%00/transfer", json={"target": "PJSIP/bob"}, headers=auth(WRITE)
    )
    assert transfer.status_code == 404
    listed = await r.client.get("/v1/calls?campaign_id=camp_%00", headers=auth(READ))
    assert listed.status_code == 422
    assert listed.json()["errors"][0]["field"] == "campaign_id"


async def test_the_event_stream_ends_with_the_calls_final_status(
    running: Callable[..., Any],
) -> None:
    # The final status and its event are one write: committed between the stream's
    # empty read and its status check, the stream ended without it (57 of 100 streams
    # when the recorder wrote a turn and the end back to back).
    r = await running()
    made = await r.client.post(
        "/v1/calls", json={"to": "PJSIP/alice", "route": "hello"}, headers=auth(WRITE)
    )
    call_id = made.json()["call_id"]
    await r.wait_status(call_id, "in_progress")
    store = r.platform.store
    read = store.events_after
    empty = [0]

    async def events_after(*args: Any, **kwargs: Any) -> Any:
        found = await read(*args, **kwargs)
        if not found:
            empty[0] += 1
            if empty[0] == 2:  # the call ends right after an empty read
                await r.fake.call(r.handled[0].id).hang_up()
                await r.wait_status(call_id, "completed")
        return found

    store.events_after = events_after  # type: ignore[method-assign]
    got = await r.client.get(f"/v1/calls/{call_id}/events", headers=auth(READ))
    statuses = [
        json.loads(line[6:]).get("status")
        for line in got.text.splitlines()
        if line.startswith("data: ")
    ]
    assert empty[0] >= 2 and statuses[-1] == "completed"


async def test_a_call_without_transcripts_keeps_no_words_of_a_barge_in(
    running: Callable[..., Any],
) -> None:
    # "transcribe": false stores no turns; the barge-in event still stored the agent's
    # words the caller heard before cutting it off.
    r = await running()
    ids = {}
    for transcribe in (False, True):
        made = await r.client.post(
            "/v1/calls",
            json={"to": "PJSIP/alice", "route": "hello", "transcribe": transcribe},
            headers=auth(WRITE),
        )
        ids[transcribe] = made.json()["call_id"]
        await r.wait_status(ids[transcribe], "in_progress")
        pipeline = VoicePipeline()
        r.platform.recorder.watch_pipeline(r.handled[-1], pipeline)
        pipeline._emit(BargeInEvent("our prices went up", 1200.0))
    await r.settle()
    kept = {}
    for transcribe, call_id in ids.items():
        events = await r.platform.store.events_after(call_id, 0)
        kept[transcribe] = [e.data for e in events if e.kind == "barge_in"]
    assert kept[False] == [{"played_ms": 1200.0}]
    assert kept[True] == [{"played_ms": 1200.0, "heard_text": "our prices went up"}]
