"""examples/twilio_agent.py runs as written: a Twilio-only app (no Asterisk) answering
a call from a phone on a Media Stream, its key menu transferring with <Dial>."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from voxtra.testing.fakes.twilio import FakeTwilio, serve_asgi
from voxtra.twilio import NoAsterisk, TwilioBackend

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "twilio_agent.py"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


async def test_the_example_menu_transfers_on_zero(
    twilio: FakeTwilio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the app's spool and recordings directories
    for name, value in {
        "ACCOUNT_SID": twilio.account_sid,
        "AUTH_TOKEN": twilio.auth_token,
        "PUBLIC_URL": "http://127.0.0.1:1",
        "API_BASE_URL": twilio.url,
    }.items():
        monkeypatch.setenv(f"VOXTRA_TWILIO__{name}", value)
    example = _load("voxtra_example_twilio_agent")
    app = example.app
    app.use_transport(NoAsterisk())
    backend = TwilioBackend(app)
    await app.start(timeout=10)
    try:
        async with serve_asgi(backend.asgi()) as url:
            backend.public_url = url
            phone = await twilio.call_in(backend.voice_url, to="+10000000000")
            for _ in range(500):  # the prompt starts playing, then the key
                if any(frame != b"\xff" * 160 for frame in phone.heard):
                    break
                await asyncio.sleep(0.02)
            await phone.press("0")
            await phone.wait_ended(10)
    finally:
        await app.stop(deadline=1)
        await backend.aclose()
    assert (
        phone.call.twiml_updates
        and "<Number>+10000000001</Number>" in (phone.call.twiml_updates[0])
    )
