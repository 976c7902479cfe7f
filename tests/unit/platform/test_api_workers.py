"""Two workers on one store and one Asterisk: a call live on one is hung up through the
other's API (the owner records its end)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from platform_helpers import WRITE, auth


async def test_a_call_live_on_another_worker_is_hung_up_through_this_one(
    running: Callable[..., Any],
) -> None:
    first = await running(app_name="worker-a", instance_id="a")
    second = await running(app_name="worker-b", instance_id="b")
    placed = await first.client.post(
        "/v1/calls", json={"to": "PJSIP/alice", "route": "hello"}, headers=auth(WRITE)
    )
    call_id = placed.json()["call_id"]
    await first.wait_status(call_id, "in_progress")
    response = await second.client.post(f"/v1/calls/{call_id}/hangup", headers=auth(WRITE))
    assert response.status_code == 200, response.text
    ended = await first.wait_status(call_id, "completed")
    assert ended.hangup_cause is not None
    again = await second.client.post(f"/v1/calls/{call_id}/hangup", headers=auth(WRITE))
    assert again.status_code == 409
