"""examples/twilio_agent.py runs as written: a Twilio-only app (no Asterisk) answering
a call from a phone on a Media Stream, its key menu transferring with <Dial>; run as a
program, Ctrl-C stops it cleanly."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import sys
from pathlib import Path
from types import ModuleType

import pytest

from voxtra.testing.fakes.twilio import FakeTwilio, serve_asgi
from voxtra.testing.storage import free_port
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


async def test_ctrl_c_stops_the_program_once_the_app_has_stopped(
    twilio: FakeTwilio, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXTRA_")}
    env |= {
        "VOXTRA_TWILIO__ACCOUNT_SID": twilio.account_sid,
        "VOXTRA_TWILIO__AUTH_TOKEN": twilio.auth_token,
        "VOXTRA_TWILIO__PUBLIC_URL": "http://127.0.0.1:1",
        "VOXTRA_TWILIO__API_BASE_URL": twilio.url,
    }
    # main() as `python examples/twilio_agent.py` runs it, on a free port (not 8000)
    code = (
        "from voxtra.testing.modules import import_file; "
        f"import_file({str(EXAMPLE)!r}, 'voxtra_example_twilio_agent').main({free_port()})"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        # Ctrl-C as in a terminal (a runner may have started this test with it ignored)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    assert proc.stdout is not None
    seen: list[str] = []
    while not any("Uvicorn running" in line for line in seen):
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
        assert line, "".join(seen)
        seen.append(line.decode(errors="replace"))
    proc.send_signal(signal.SIGINT)
    rest, _ = await asyncio.wait_for(proc.communicate(), 30)
    out = "".join(seen) + rest.decode(errors="replace")
    # uvicorn raises the signal again once it has shut down: stopping the app after
    # `await server.serve()` got a KeyboardInterrupt in the middle of app.stop().
    assert proc.returncode == 0 and "Traceback" not in out, out[-3000:]
    assert "Application shutdown complete" in out, out[-3000:]  # the app stopped in it
