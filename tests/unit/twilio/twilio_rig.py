"""A VoxtraApp (on FakeAsterisk) with its Twilio backend served on loopback, and a
local Twilio (REST and phones) the real SDK talks to."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxtra import VoxtraApp
from voxtra.testing import FakeAsterisk
from voxtra.testing.fakes.twilio import FakeTwilio, serve_asgi
from voxtra.twilio import TwilioBackend


@dataclass
class TwilioRig:
    app: VoxtraApp
    backend: TwilioBackend
    twilio: FakeTwilio


def make_app(tmp_path: Path, twilio: FakeTwilio, **options: Any) -> VoxtraApp:
    return VoxtraApp(
        "http://asterisk.invalid:8088",
        "user",
        "secret",
        app_name="twilio-tests",
        instance_id="unit",
        environ={},
        spool_dir=str(tmp_path / "spool"),
        recordings_dir=str(tmp_path / "recordings"),
        handler_deadline=2.0,
        twilio={
            "account_sid": twilio.account_sid,
            "auth_token": twilio.auth_token,
            "public_url": "http://127.0.0.1:1",  # replaced once the server listens
            "api_base_url": twilio.url,
            "from_number": "+15550001",
        },
        **options,
    )


@contextlib.asynccontextmanager
async def running(
    app: VoxtraApp, fake_asterisk: FakeAsterisk, twilio: FakeTwilio
) -> AsyncIterator[TwilioRig]:
    """The app started (on FakeAsterisk) and its Twilio endpoints listening."""
    backend = TwilioBackend(app)
    async with fake_asterisk.serve(app), serve_asgi(backend.asgi()) as url:
        backend.public_url = url
        try:
            yield TwilioRig(app, backend, twilio)
        finally:
            for phone_call in list(twilio.calls.values()):
                if phone_call.phone is not None:
                    await phone_call.phone.close()
            await backend.aclose()
