"""Examples run the way their docstrings say, against the real Asterisk: the command
lines are taken from the docstrings, the example runs as a program where the docstring
runs it so, and it is stopped as a user stops it (Ctrl-C, or SIGTERM from a service
manager)."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shlex
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from voxtra.app import VoxtraApp
from voxtra.ari.client import AriClient
from voxtra.testing.local_caller import place_local_call
from voxtra.testing.pytest_plugin import AsteriskTarget

pytestmark = pytest.mark.asterisk

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _documented_command(example: str, ends: str) -> list[str]:
    """The docstring's command whose last line ends with ``ends`` (the lines it
    continues with a backslash joined), split as a shell would."""
    doc = _load_example(example).__doc__ or ""
    lines = [line.strip() for line in doc.splitlines()]
    last = next((i for i, line in enumerate(lines) if line.endswith(ends)), None)
    assert last is not None, f"examples/{example}.py's docstring has no command {ends!r}"
    first = last
    while first > 0 and lines[first - 1].endswith("\\"):
        first -= 1
    return shlex.split(" ".join(line.removesuffix("\\") for line in lines[first : last + 1]))


def _environ(asterisk: AsteriskTarget, app_name: str) -> dict[str, str]:
    """The test's environment without Voxtra's or AWS's settings, aimed at this Asterisk."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOXTRA_", "AWS_"))}
    return env | {
        "VOXTRA_ARI_URL": asterisk.ari_url,
        "VOXTRA_USERNAME": asterisk.username,
        "VOXTRA_PASSWORD": asterisk.password,
        "VOXTRA_APP_NAME": app_name,
    }


async def _registered(ari: AriClient, app_name: str, proc: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 30
    while app_name not in {a.name for a in await ari.applications.list()}:
        assert proc.returncode is None, "the example exited before it registered"
        assert time.monotonic() < deadline, f"{app_name} did not register"
        await asyncio.sleep(0.1)


async def _start(argv: list[str], env: dict[str, str], cwd: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        # Ctrl-C as in a terminal (a runner may have started this test with it ignored)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


async def _stop(proc: asyncio.subprocess.Process, sig: int) -> tuple[int, str]:
    proc.send_signal(sig)
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace")


@pytest.fixture
async def ivr_app(asterisk: AsteriskTarget, ari: AriClient) -> AsyncIterator[VoxtraApp]:
    # A SIP phone's call reaches the dialplan's default app, "voxtra" (the example's).
    if "voxtra" in {a.name for a in await ari.applications.list()}:
        pytest.skip("the sandbox's default Stasis app 'voxtra' is in use by someone else")
    app: VoxtraApp = _load_example("ivr_menu").app
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


@pytest.mark.sip
async def test_ivr_menu_the_documented_scripted_call_chooses_support(
    ivr_app: VoxtraApp, tmp_path: Path
) -> None:
    pytest.importorskip("pjsua2")
    argv = _documented_command("ivr_menu", "--seconds 8")
    assert argv[:5] == ["python", "-m", "voxtra.testing.sipcaller", "dial", "1000"], argv
    argv = [sys.executable, *argv[1:], "--workdir", str(tmp_path)]
    caller = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    called: set[str] = set()
    deadline = time.monotonic() + 40
    while caller.returncode is None and time.monotonic() < deadline:
        called |= {s.called_number for s in ivr_app.active_sessions.values()}
        await asyncio.sleep(0.1)
    out, _ = await asyncio.wait_for(caller.communicate(), 30)
    assert caller.returncode == 0, out.decode(errors="replace")
    # The key reached the menu: the caller went to the support queue, whose member
    # lands on the example's queue-agent route. (Pressed 0.5 s after the answer, the
    # documented key fell in the greeting, which clear_dtmf() forgets: no choice.)
    assert "queue-agent" in called, (called, out.decode(errors="replace"))


async def test_record_to_s3_the_documented_run_delivers_the_recording(
    asterisk: AsteriskTarget, ari: AriClient, tmp_path: Path
) -> None:
    from aiobotocore.session import get_session

    from voxtra.testing.storage import SeaweedS3Server, StorageServerUnavailable

    argv = _documented_command("record_to_s3", "python examples/record_to_s3.py")
    at = argv.index("python")
    assert argv[at:] == ["python", "examples/record_to_s3.py"], argv
    documented = dict(token.split("=", 1) for token in argv[:at])
    try:
        server = SeaweedS3Server()
    except StorageServerUnavailable as exc:
        pytest.skip(str(exc))
    name = f"voxtra-example-s3-{uuid.uuid4().hex[:8]}"
    env = _environ(asterisk, name) | documented
    env |= {
        "VOXTRA_S3_ENDPOINT": server.endpoint_url,  # the documented 8333, here a free port
        # no credentials but the documented ones (none in files, no instance metadata)
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    with server:
        async with get_session().create_client(
            "s3",
            endpoint_url=server.endpoint_url,
            region_name=server.region,
            aws_access_key_id=server.access_key,
            aws_secret_access_key=server.secret_key,
        ) as s3:
            bucket = env["VOXTRA_S3_BUCKET"]
            await s3.create_bucket(Bucket=bucket)  # the docstring's `weed shell` step
            proc = await _start([sys.executable, str(EXAMPLES / "record_to_s3.py")], env, tmp_path)
            try:
                await _registered(ari, name, proc)
                await place_local_call(
                    ari,
                    "100",
                    behaviour="hangup-after",
                    variables={"VOXTRA_APP": name, "WAIT": "2"},
                )
                keys: list[str] = []
                deadline = time.monotonic() + 30
                while not keys and time.monotonic() < deadline:
                    listed: dict[str, Any] = await s3.list_objects_v2(Bucket=bucket)
                    keys = [o["Key"] for o in listed.get("Contents", [])]
                    await asyncio.sleep(0.2)
            finally:
                code, out = await _stop(proc, signal.SIGINT)
    assert len(keys) == 1 and keys[0].startswith("calls/"), (keys, out[-3000:])
    assert code == 0, out[-3000:]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
async def test_realtime_agent_fake_stops_cleanly_on_a_signal(
    asterisk: AsteriskTarget, ari: AriClient, tmp_path: Path, sig: int
) -> None:
    pytest.importorskip("openai")
    name = f"voxtra-example-rt-{uuid.uuid4().hex[:8]}"
    argv = [sys.executable, str(EXAMPLES / "realtime_agent.py"), "--fake"]
    proc = await _start(argv, _environ(asterisk, name), tmp_path)
    try:
        await _registered(ari, name, proc)
    finally:
        code, out = await _stop(proc, sig)
    # Ctrl-C ended in a KeyboardInterrupt traceback; SIGTERM killed the process without
    # stopping the app.
    assert code == 0 and "Traceback" not in out, out[-3000:]
    assert name not in {a.name for a in await ari.applications.list()}
