"""`voxtra serve` mounts the Twilio webhook and stream socket when Twilio is set up,
beside the platform API, and not otherwise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from twilio_rig import make_app

from voxtra import CallSession, VoxtraApp
from voxtra.platform.serve import PlatformServer
from voxtra.testing import FakeAsterisk
from voxtra.testing.fakes.twilio import FakeTwilio

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


async def test_serve_mounts_twilio_when_configured(
    fake_asterisk: FakeAsterisk, twilio: FakeTwilio, tmp_path: Path
) -> None:
    app = make_app(tmp_path, twilio)
    seen: list[str] = []

    @app.default
    async def handler(call: CallSession) -> None:
        seen.append(call.caller_id)

    app.use_transport(fake_asterisk)
    server = PlatformServer(app, database_url=f"sqlite:///{tmp_path}/p.db", port=0)
    assert server.twilio is not None
    await server.start()
    try:
        server.twilio.public_url = server.url
        phone = await twilio.call_in(server.twilio.voice_url, from_="+15550142")
        await phone.wait_ended(10)
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await client.get("/healthz")).status_code == 200
            unsigned = await client.post("/twilio/voice", data={"CallSid": "CA1"})
    finally:
        await server.stop()
    assert seen == ["+15550142"]
    assert unsigned.status_code == 403
    assert "fake-token" not in repr(app.settings)  # the auth token is never shown


def test_serve_without_twilio_settings_has_no_twilio_routes(tmp_path: Path) -> None:
    app = VoxtraApp("http://asterisk.invalid:8088", "u", "p", environ={}, instance_id="unit")
    server = PlatformServer(app, database_url=f"sqlite:///{tmp_path}/p.db", port=0)
    paths: list[Any] = [getattr(r, "path", "") for r in server.api.router.routes]
    assert server.twilio is None and not any(str(p).startswith("/twilio") for p in paths)
