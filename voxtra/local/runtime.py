"""llama-server without compiling: Debian sid's ``llama.cpp-tools`` in a chroot.

Debian stable has no llama.cpp and its glibc is too old for sid's binaries, so the
server runs from a sid chroot, built the way the Asterisk sandbox's is
(:mod:`voxtra.testing.asterisk`) and cached under ``~/.cache/voxtra`` by a key of its
own recipe. Measured on a fresh build here (2 cores, shared box): starting from the
sandbox's cached chroot tarball (unpack 1.5 s, ``apt-get update`` 2.4 s, install
1.5 s) takes ~5.5 s; ``debootstrap`` from nothing takes ~28 s (25 s of debootstrap).
So :meth:`LlamaRuntime.build` copies a sid chroot tarball it is given (the demo and
``scripts/bootstrap`` pass the sandbox's) and falls back to debootstrap. The Asterisk
chroot itself is never touched: its recipe and cache key stay its own.

Needs root (chroot), as the sandbox does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from voxtra.errors import VoxtraError

__all__ = ["LLAMA_PACKAGES", "LlamaRuntime", "RuntimeUnavailable", "cache_dir"]

logger = logging.getLogger(__name__)

SUITE = "sid"
LLAMA_PACKAGES = ("llama.cpp-tools",)
"""1:0.7.0+dfsg-2 when measured (llama-server build 11669)."""
APT_CONF = 'Acquire::Check-Valid-Until "false";\nAPT::Install-Recommends "false";\n'
RECIPE_VERSION = "1"
_ENV = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


class RuntimeUnavailable(VoxtraError, RuntimeError):
    """llama-server cannot be made ready here; the message says why."""


def cache_dir() -> Path:
    """``$VOXTRA_CACHE_DIR``, else ``$XDG_CACHE_HOME/voxtra`` (~/.cache/voxtra)."""
    env = os.environ.get("VOXTRA_CACHE_DIR")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "voxtra"


def recipe_key() -> str:
    text = json.dumps([RECIPE_VERSION, SUITE, LLAMA_PACKAGES, APT_CONF, os.uname().machine])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-3000:]
        raise RuntimeUnavailable(f"{' '.join(cmd[:4])} ... failed ({result.returncode}):\n{tail}")


class LlamaRuntime:
    """A sid chroot holding ``/usr/bin/llama-server``; :meth:`build` is idempotent."""

    def __init__(self, cache: Path | None = None) -> None:
        self.cache = cache or cache_dir()

    @property
    def root(self) -> Path:
        return self.cache / f"llama-chroot-{recipe_key()}"

    @property
    def ready(self) -> bool:
        return (self.root / ".voxtra-ready").is_file()

    def server_command(self) -> list[str]:
        """The argv prefix that runs llama-server (paths after it are the chroot's)."""
        return ["chroot", str(self.root), "/usr/bin/llama-server"]

    def build(
        self, base_tarball: Path | None = None, log: Callable[[str], None] | None = None
    ) -> Path:
        """Make the chroot ready: reuse it, or build it from ``base_tarball`` (a sid
        chroot as ``tar.zst``) or, without one, with debootstrap."""
        say = log or logger.info
        if self.ready:
            return self.root
        if os.geteuid() != 0:
            raise RuntimeUnavailable("llama-server runs in a chroot: this needs root")
        started = time.monotonic()
        tmp = self.root.with_name(self.root.name + ".build")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            if base_tarball is not None and base_tarball.is_file():
                say(f"llama-server: a sid chroot from {base_tarball.name}")
                _run(["tar", "-I", "zstd -T0", "-xpf", str(base_tarball), "-C", str(tmp)])
            else:
                if shutil.which("debootstrap") is None:
                    raise RuntimeUnavailable(
                        "debootstrap is not installed (apt-get install -y debootstrap)"
                    )
                say(f"llama-server: debootstrap --variant=minbase {SUITE} (about 30 s)")
                _run(["debootstrap", "--variant=minbase", SUITE, str(tmp)])
            (tmp / "etc/apt/apt.conf.d/99voxtra").write_text(APT_CONF)
            policy = tmp / "usr/sbin/policy-rc.d"
            policy.write_text("#!/bin/sh\nexit 101\n")
            policy.chmod(0o755)
            say("llama-server: apt-get install " + " ".join(LLAMA_PACKAGES))
            _run(["chroot", str(tmp), "apt-get", "update", "-qq"], env=_ENV)
            _run(["chroot", str(tmp), "apt-get", "install", "-y", "-qq", *LLAMA_PACKAGES], env=_ENV)
            _run(["chroot", str(tmp), "apt-get", "clean"], env=_ENV)
            shutil.rmtree(tmp / "var/lib/apt/lists", ignore_errors=True)
            (tmp / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
            (tmp / "models").mkdir(exist_ok=True)
            (tmp / ".voxtra-ready").write_text(recipe_key() + "\n")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        shutil.rmtree(self.root, ignore_errors=True)
        tmp.rename(self.root)
        say(f"llama-server ready in {time.monotonic() - started:.1f} s")
        return self.root

    def install_model(self, model: Path) -> str:
        """Make ``model`` visible inside the chroot; return its path there.

        A hard link when the cache shares the file system (instant, no second 1.1 GB),
        else a copy."""
        inside = Path("/models") / model.name
        target = self.root / "models" / model.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_file() and target.stat().st_size == model.stat().st_size:
            return str(inside)
        target.unlink(missing_ok=True)
        try:
            os.link(model, target)
        except OSError:
            shutil.copyfile(model, target)
        return str(inside)
