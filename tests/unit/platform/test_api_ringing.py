"""An API call whose far end rings before it answers shows ``ringing`` in between."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from platform_helpers import READ, WRITE, auth


async def test_a_ringing_far_end_is_ringing_then_in_progress(running: Callable[..., Any]) -> None:
    r = await running()
    r.fake.endpoint_outcomes["PJSIP/slow"] = "ring"
    response = await r.client.post(
        "/v1/calls", json={"to": "PJSIP/slow", "route": "hello"}, headers=auth(WRITE)
    )
    call_id = response.json()["call_id"]
    await r.wait_status(call_id, "ringing")
    detail = (await r.client.get(f"/v1/calls/{call_id}", headers=auth(READ))).json()
    assert detail["status"] == "ringing"
    await r.fake.originated[0].answer()
    await r.wait_status(call_id, "in_progress")
    await r.fake.call(r.handled[0].id).hang_up()
    await r.wait_status(call_id, "completed")
    events = [(e.kind, e.data.get("status")) for e in await r.platform.store.events_after(call_id)]
    assert events == [
        ("status", "queued"),
        ("status", "dialing"),
        ("status", "ringing"),
        ("status", "in_progress"),
        ("status", "completed"),
    ]
