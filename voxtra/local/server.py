"""A managed llama-server: started, waited on until healthy, stopped; never orphaned.

The process is llama.cpp's OpenAI-compatible server, so the ``openai`` provider talks to
it unchanged (``base_url=server.base_url``). It is ended by :meth:`LlamaServer.stop`
(the app's shutdown, an ``async with`` block, an interrupted demo's ``finally``), by an
``atexit`` hook if the interpreter exits without that, and by the kernel if the Python
process dies outright (``PR_SET_PDEATHSIG``: SIGKILL to the server when the thread
that started it ends, which is why :meth:`start_process` runs on the caller's thread,
never in a worker thread that would end first).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import json
import logging
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from types import TracebackType
from typing import Any

from voxtra.local.runtime import LlamaRuntime, RuntimeUnavailable, cache_dir

__all__ = ["LlamaServer"]

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _in_use(port: int) -> bool:
    """Whether something listens on 127.0.0.1:``port``. Bound as llama-server binds it
    (``SO_REUSEADDR``): a port a dead server left in TIME_WAIT is free, a listening
    one is not."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _end(process: subprocess.Popen[bytes]) -> None:
    _kill(process)


def _kill(process: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class LlamaServer:
    """llama-server for one model on loopback.

    Defaults are the measured ones (2 cores): ``-t 2 -tb 2 -c 4096 -np 1 --jinja``. One
    slot (``-np 1``) keeps one prompt cache, so the warmed system prompt stays a cached
    prefix across turns (a fresh 331-token prompt: 3.8 s to the first token; cached:
    0.25 s). ``ready_timeout`` covers loading the 1.1 GB model (3.6 s measured).
    """

    def __init__(
        self,
        model: Path,
        *,
        runtime: LlamaRuntime | None = None,
        port: int | None = None,
        threads: int = 2,
        context: int = 4096,
        extra_args: tuple[str, ...] = (),
        log_file: Path | None = None,
    ) -> None:
        self.model = model
        self.runtime = runtime or LlamaRuntime()
        self.port = port or _free_port()
        self.threads = threads
        self.context = context
        self.extra_args = extra_args
        self.log_file = log_file or cache_dir() / "run" / f"llama-server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.load_seconds: float | None = None
        """Start to healthy, once :meth:`start` returned."""
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes]], LlamaServer] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """What the ``openai`` provider takes as ``base_url``."""
        return f"{self.url}/v1"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self) -> list[str]:
        model = self.runtime.install_model(self.model)
        return [
            *self.runtime.server_command(),
            *("-m", model, "--host", "127.0.0.1", "--port", str(self.port)),
            *("-t", str(self.threads), "-tb", str(self.threads)),
            *("-c", str(self.context), "-np", "1", "--jinja", "--no-webui"),
            *("--slot-save-path", "/slots"),
            # After the agent trims a long call's history (max_history_chars), the
            # turns it kept sit earlier in the prompt than they were cached: without
            # this the server computed them all again (a trim turn 133 and 173 prompt
            # tokens against 56-91 for the others, max_history_chars=1500); with it it
            # shifts their cached keys and values into place (91 and 57).
            *("--cache-reuse", "32"),
            *self.extra_args,
        ]

    def start_process(self) -> None:
        """Spawn the server (not waiting for it). Call on the thread that will outlive
        it (see the module's docstring)."""
        if self.running:
            return
        if not self.runtime.ready:
            raise RuntimeUnavailable(
                "llama-server is not installed: python -m voxtra.local prepare"
            )
        if not self.model.is_file():
            raise RuntimeUnavailable(f"no model file {self.model}: python -m voxtra.local prepare")
        if _in_use(self.port):
            # Not left to llama-server: it exits when it cannot bind, but the other
            # server's /health answered 200 first, and start() returned "ready" (in
            # 0.02 s, measured with another llama-server on the port) for a server it
            # did not start.
            raise RuntimeUnavailable(
                f"127.0.0.1:{self.port} is in use (another llama-server, or another "
                "program): give LlamaServer another port, or none to have a free one"
            )
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        (self.runtime.root / "slots").mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        self._finalizer = weakref.finalize(self, _end, self.process)
        atexit.register(self._finalizer)

    def _slot_action(self, action: str, filename: str) -> dict[str, Any] | None:
        request = urllib.request.Request(
            f"{self.url}/slots/0?action={action}",
            data=json.dumps({"filename": filename}).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30.0) as response:
                answer = json.load(response)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            logger.info("llama-server slot %s of %s failed: %s", action, filename, exc)
            return None
        return answer if isinstance(answer, dict) else None

    async def save_slot(self, filename: str) -> bool:
        """Save the slot's computed prompt (its KV cache) as ``slots/<filename>`` in the
        runtime (``--slot-save-path``)."""
        answer = await asyncio.to_thread(self._slot_action, "save", filename)
        return bool(answer and answer.get("n_saved"))

    async def restore_slot(self, filename: str) -> bool:
        """Load a saved prompt back into the slot; False if there is none (or it failed)."""
        if not (self.runtime.root / "slots" / filename).is_file():
            return False
        answer = await asyncio.to_thread(self._slot_action, "restore", filename)
        return bool(answer and answer.get("n_restored"))

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=1.0) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    async def start(self, ready_timeout: float = 120.0) -> None:
        """Start the server and return once ``/health`` answers 200 (model loaded)."""
        started = time.monotonic()
        already = self.running and self.load_seconds is not None
        self.start_process()
        process = self.process
        assert process is not None
        deadline = started + ready_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeUnavailable(
                    f"llama-server exited with {process.returncode}:\n{self.log_tail()}"
                )
            if await asyncio.to_thread(self.healthy):
                break
            if time.monotonic() > deadline:
                await self.aclose()
                raise RuntimeUnavailable(
                    f"llama-server not healthy after {ready_timeout:.0f} s:\n{self.log_tail()}"
                )
            await asyncio.sleep(0.1)
        if already:
            return  # started before (load_seconds keeps the real load time)
        self.load_seconds = time.monotonic() - started
        logger.info("llama-server on %s ready in %.1f s", self.url, self.load_seconds)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout``; idempotent."""
        if self.process is not None:
            _kill(self.process, timeout)
        if self._finalizer is not None:
            atexit.unregister(self._finalizer)
            self._finalizer.detach()
            self._finalizer = None

    async def aclose(self) -> None:
        await asyncio.to_thread(self.stop)

    async def __aenter__(self) -> LlamaServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None
