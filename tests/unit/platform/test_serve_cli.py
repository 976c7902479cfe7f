"""``voxtra serve module:app`` as a user runs it: a process serving the API, ready once
its app is connected, stopping cleanly on SIGTERM (the app's calls drained first)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
from platform_helpers import READ, auth, platform_settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_voxtra_serve_runs_the_app_and_the_api_until_sigterm(tmp_path: Path) -> None:
    (tmp_path / "served.py").write_text(
        textwrap.dedent(
            f"""
            from voxtra.app import VoxtraApp
            from voxtra.testing import FakeAsterisk

            def app():
                # A factory: the fake Asterisk needs no server, so the process is alone.
                return VoxtraApp(
                    "http://asterisk.invalid:8088", "user", "secret",
                    app_name="served", instance_id="cli", spool_dir="spool",
                    transport=FakeAsterisk(), platform={platform_settings()!r},
                )
            """
        )
    )
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXTRA_")}
    process = subprocess.Popen(
        [
            sys.executable, "-m", "voxtra", "serve", "served:app",
            "--port", str(port), "--database-url", f"sqlite:///{tmp_path}/store.db",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        ready = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and process.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        assert ready is not None and ready.status_code == 200, process.poll()
        listed = httpx.get(f"http://127.0.0.1:{port}/v1/calls", headers=auth(READ), timeout=5)
        assert listed.json() == {"calls": [], "next_cursor": None}
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output
    assert (tmp_path / "store.db").is_file()
    assert READ not in output  # the token never reaches the log
    assert "GET /v1/calls" in output  # the access log does
