"""`voxtra serve`'s server with Twilio set up, stopping (or failing to start): what
still goes to Twilio then (a call still ringing cancelled as the platform stops, a
startup hook's request) goes through the app's Twilio client, and that client is
closed once nothing will use it, its connections to Twilio with it."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx
import pytest
from twilio_rig import make_app

from voxtra import CallSession, VoxtraApp
from voxtra.platform.serve import PlatformServer
from voxtra.testing import FakeAsterisk
from voxtra.testing.fakes.twilio import FakeTwilio, TwilioCall

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

WRITE = "write-token-0123456789abcdef"


def platform_app(tmp_path: Path, twilio: FakeTwilio, fake_asterisk: FakeAsterisk) -> VoxtraApp:
    tokens = [{"name": "writer", "token": WRITE, "scopes": ["calls:read", "calls:write"]}]
    app = make_app(tmp_path, twilio, platform={"tokens": tokens})

    @app.route("1000", name="hold")
    async def hold(call: CallSession) -> None:
        await call.wait_ended()

    app.use_transport(fake_asterisk)
    return app


async def open_after_close(twilio: FakeTwilio, timeout: float = 5.0) -> int:
    """The REST connections to ``twilio`` still open once those of closed clients have
    closed (a closed client's go within milliseconds; polled up to ``timeout``)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while twilio.open_rest_connections:
                await asyncio.sleep(0.02)
    return twilio.open_rest_connections


async def test_a_call_ringing_at_stop_is_cancelled_and_the_twilio_client_closed_after(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path
) -> None:
    # The platform's stop cancels the dialling still going on, and a call cancelled
    # while it rings is cancelled at Twilio. Before, the server closed the Twilio client
    # before the platform's stop: that cancel opened a new client, which nobody closed
    # (its connection to Twilio open after the stop, "Unclosed client session" logged
    # once the object was collected).
    twilio.script("+15550140", "answer")
    twilio.ring_s = 30.0  # rings through the stop
    server = PlatformServer(
        platform_app(tmp_path, twilio, fake_asterisk),
        database_url=f"sqlite:///{tmp_path}/p.db",
        port=0,
    )
    assert server.twilio is not None
    await server.start()
    try:
        server.twilio.public_url = server.url
        async with httpx.AsyncClient(base_url=server.url) as client:
            placed = await client.post(
                "/v1/calls",
                json={"to": "+15550140", "route": "hold", "backend": "twilio"},
                headers={"Authorization": f"Bearer {WRITE}"},
            )
        assert placed.status_code == 201, placed.text
        async with asyncio.timeout(5):
            while not any(c.status == "ringing" for c in twilio.calls.values()):
                await asyncio.sleep(0.01)
    finally:
        await server.stop()
    (call,) = twilio.calls.values()
    assert call.statuses == ["canceled"] and call.status == "canceled"
    assert await open_after_close(twilio) == 0


async def test_a_failed_start_closes_the_twilio_client_its_hooks_used(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path
) -> None:
    # A start that fails in a startup hook closes what it opened: before, the platform
    # and the database, but not the Twilio client an earlier hook had used.
    left = TwilioCall("CA" + "1" * 32, "+15550141", "+15550001", "outbound-api")
    left.status = "in-progress"
    twilio.calls[left.sid] = left
    app = platform_app(tmp_path, twilio, fake_asterisk)
    server = PlatformServer(app, database_url=f"sqlite:///{tmp_path}/p.db", port=0)
    twilio_backend = server.twilio
    assert twilio_backend is not None

    @app.on_startup
    async def hang_up_the_last_runs_call() -> None:
        await twilio_backend.update_call(left.sid, status="completed")

    @app.on_startup
    async def fail() -> None:
        raise RuntimeError("a startup hook failed")

    with pytest.raises(RuntimeError, match="a startup hook failed"):
        await server.start()
    assert left.statuses == ["completed"]
    assert await open_after_close(twilio) == 0
