"""The default instance id: distinct between live apps on a host, the same after a restart."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from voxtra.app import VoxtraApp
from voxtra.config import load_settings
from voxtra.errors import ConfigError


@pytest.fixture(autouse=True)
def slots_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    return tmp_path / "voxtra" / "instances"


def app(name: str = "unit", **kwargs: object) -> VoxtraApp:
    return VoxtraApp("http://127.0.0.1:1", "u", "p", name, environ={}, **kwargs)  # type: ignore[arg-type]


async def test_two_live_apps_get_different_ids() -> None:
    a, b = app(), app()
    try:
        assert a.instance_id != b.instance_id
        assert a.instance_id.endswith(".0") and b.instance_id.endswith(".1")
        # another app name has slots of its own, and an id of its own
        c = app("other")
        assert c.instance_id.endswith(".0") and c.instance_id != a.instance_id
        await c.stop()
    finally:
        await a.stop()
        await b.stop()


async def test_an_app_started_after_one_stopped_gets_its_id() -> None:
    first = app()
    ident = first.instance_id
    await first.stop()
    again = app()
    try:
        assert again.instance_id == ident
        # ids fit the instance id alphabet (it lands in channel ids split on '-')
        assert VoxtraApp("http://127.0.0.1:1", "u", "p", "x", environ={}, instance_id=ident)
    finally:
        await again.stop()


def test_a_killed_process_leaves_its_slot_to_the_next() -> None:
    # A process holding slot 0 and SIGKILLed: the kernel drops the lock (no clean-up ran).
    code = (
        "import os, signal, sys\n"
        "from voxtra.app import VoxtraApp\n"
        "a = VoxtraApp('http://127.0.0.1:1', 'u', 'p', 'unit', environ={})\n"
        "print(a.instance_id, flush=True)\n"
        "sys.stdin.readline()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        assert proc.stdout is not None
        dead_id = proc.stdout.readline().strip()
        live = app()  # while it lives: another slot
        assert live.instance_id != dead_id
        proc.kill()
        proc.wait(10)
        restarted = app()
        assert restarted.instance_id == dead_id
        asyncio.run(live.stop())
        asyncio.run(restarted.stop())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_an_explicit_instance_id_takes_no_slot(slots_dir: Path) -> None:
    fixed = app(instance_id="host1.a")
    assert fixed.instance_id == "host1.a"
    assert not slots_dir.exists()
    from_env = VoxtraApp(
        "http://127.0.0.1:1", "u", "p", "unit", environ={"VOXTRA_INSTANCE_ID": "b.2"}
    )
    assert from_env.instance_id == "b.2"
    with pytest.raises(ConfigError):
        load_settings(environ={"VOXTRA_INSTANCE_ID": "has-dash"})
    asyncio.run(fixed.stop())
    asyncio.run(from_env.stop())


async def test_no_usable_slot_directory_falls_back_to_a_random_id(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(blocker))  # not a directory
    monkeypatch.setenv("HOME", str(blocker))  # ~/.cache under a file: cannot be made
    a, b = app(), app()
    assert a.instance_id != b.instance_id
    await a.stop()
    await b.stop()
