"""A real Asterisk 22 for tests, CI and development, on a Linux host without Docker.

Asterisk runs from a Debian sid chroot built with debootstrap (Debian stable has no
asterisk package). The chroot is built once and cached as a tarball under
``~/.cache/voxtra`` keyed by a hash of its recipe, so later runs start in seconds.
The project's ``asterisk-conf/`` is copied into the chroot's ``/etc/asterisk`` at
every start: docker-compose mounts the very same files.

Command line::

    python -m voxtra.testing.asterisk up|down|status|restart|build|cli "core show channels"

Needs root (chroot, mount). The chroot shares the host's network, so ARI answers on
http://127.0.0.1:8088 and SIP on 127.0.0.1:5060.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from voxtra.errors import VoxtraError

__all__ = [
    "AsteriskSandbox",
    "SandboxUnavailable",
    "default_conf_dir",
]

# Everything that decides what the chroot holds. Changing any of it changes the
# cache key, so a stale chroot is never reused.
SUITE = "sid"
PACKAGES = (
    "asterisk",
    "asterisk-core-sounds-en-wav",
    "asterisk-moh-opsound-wav",
)
APT_CONF = 'Acquire::Check-Valid-Until "false";\nAPT::Install-Recommends "false";\n'
RECIPE_VERSION = "1"

ARI_USER = "voxtra"
ARI_PASSWORD = "voxtra"
ARI_URL = "http://127.0.0.1:8088"


class SandboxUnavailable(VoxtraError, RuntimeError):
    """The sandbox cannot run on this machine; the message says why (a RuntimeError too,
    as it was before every Voxtra error derived from ``VoxtraError``)."""


def default_conf_dir() -> Path:
    """The repository's ``asterisk-conf/`` (next to the package in a source checkout)."""
    env = os.environ.get("VOXTRA_ASTERISK_CONF")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "asterisk-conf"


def recipe_key() -> str:
    text = json.dumps([RECIPE_VERSION, SUITE, PACKAGES, APT_CONF, os.uname().machine])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cache_dir() -> Path:
    env = os.environ.get("VOXTRA_CACHE_DIR")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "voxtra" if not env else base


def _log(message: str) -> None:
    print(f"[asterisk-sandbox] {message}", file=sys.stderr, flush=True)


def _run(cmd: list[str], **kwargs: object) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-3000:]
        raise SandboxUnavailable(f"{' '.join(cmd[:4])} ... failed ({result.returncode}):\n{tail}")


@dataclass
class AsteriskSandbox:
    """Build, start and stop the sandbox Asterisk. Every method is idempotent."""

    conf_dir: Path = field(default_factory=default_conf_dir)
    cache_dir: Path = field(default_factory=_cache_dir)
    ari_url: str = ARI_URL
    username: str = ARI_USER
    password: str = ARI_PASSWORD

    @property
    def key(self) -> str:
        return recipe_key()

    @property
    def root(self) -> Path:
        return self.cache_dir / f"chroot-{self.key}"

    @property
    def tarball(self) -> Path:
        return self.cache_dir / f"asterisk-chroot-{self.key}.tar.zst"

    @property
    def run_dir(self) -> Path:
        return self.cache_dir / "run"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "asterisk.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "asterisk.log"

    @property
    def spool_dir(self) -> Path:
        """Where Asterisk writes recordings, seen from the host."""
        return self.root / "var/spool/asterisk/recording"

    # -- build -------------------------------------------------------------------

    def check_host(self) -> None:
        if sys.platform != "linux":
            raise SandboxUnavailable("the Asterisk sandbox needs Linux (chroot)")
        if os.geteuid() != 0:
            raise SandboxUnavailable("the Asterisk sandbox needs root (chroot and mount)")
        if not (self.conf_dir / "asterisk.conf").is_file():
            raise SandboxUnavailable(f"no asterisk.conf in {self.conf_dir}")

    def build(self) -> Path:
        """Make the chroot ready: reuse it, unpack the cached tarball, or build it."""
        self.check_host()
        marker = self.root / ".voxtra-ready"
        if marker.is_file():
            return self.root
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        if self.tarball.is_file():
            _log(f"unpacking cached chroot {self.tarball.name}")
            self._unpack()
            if marker.is_file():
                return self.root
        self._build_from_scratch()
        return self.root

    def _unpack(self) -> None:
        tmp = self.root.with_name(self.root.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _run(["tar", "-I", "zstd -T0", "-xpf", str(self.tarball), "-C", str(tmp)])
        shutil.rmtree(self.root, ignore_errors=True)
        tmp.rename(self.root)

    def _build_from_scratch(self) -> None:
        if shutil.which("debootstrap") is None:
            raise SandboxUnavailable(
                "debootstrap is not installed (apt-get install -y debootstrap zstd)"
            )
        started = time.monotonic()
        tmp = self.root.with_name(self.root.name + ".build")
        self._umount_all(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        _log(f"debootstrap --variant=minbase {SUITE} (about a minute)")
        _run(["debootstrap", "--variant=minbase", SUITE, str(tmp)])
        (tmp / "etc/apt/apt.conf.d/99voxtra").write_text(APT_CONF)
        policy = tmp / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        _log("installing " + " ".join(PACKAGES))
        _run(["chroot", str(tmp), "apt-get", "update", "-qq"], env=env)
        _run(["chroot", str(tmp), "apt-get", "install", "-y", "-qq", *PACKAGES], env=env)
        _run(["chroot", str(tmp), "apt-get", "clean"], env=env)
        shutil.rmtree(tmp / "var/lib/apt/lists", ignore_errors=True)
        (tmp / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)
        (tmp / ".voxtra-ready").write_text(self.key + "\n")
        if shutil.which("zstd"):
            _log("caching the chroot as " + self.tarball.name)
            part = self.tarball.with_suffix(".part")
            _run(
                [
                    "tar",
                    "-I",
                    "zstd -T0 -3",
                    "--one-file-system",
                    "-cpf",
                    str(part),
                    "-C",
                    str(tmp),
                    ".",
                ]
            )
            part.rename(self.tarball)
        shutil.rmtree(self.root, ignore_errors=True)
        tmp.rename(self.root)
        _log(f"chroot built in {time.monotonic() - started:.0f} s")

    # -- run ---------------------------------------------------------------------

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        return pid

    def ari_ready(self, timeout: float = 2.0) -> bool:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        request = urllib.request.Request(
            f"{self.ari_url}/ari/asterisk/info", headers={"Authorization": f"Basic {token}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def up(self, timeout: float = 60.0) -> None:
        """Start Asterisk (building the chroot if needed) and wait until ARI answers."""
        self.build()
        if self.pid() is not None and self.ari_ready():
            # Already running: reload only if asterisk-conf/ changed (a reload tears
            # down the media of calls in progress, e.g. another test session's).
            if self._conf_changed():
                self.install_conf()
                self.cli("core reload")
            return
        self.down()
        self.install_conf()
        self._mount()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_file.open("ab")
        # setsid: Asterisk and anything it spawns live in their own session and
        # process group, so `down` can end them all and a test runner's signals
        # do not reach them by accident.
        process = subprocess.Popen(
            [
                "chroot",
                str(self.root),
                "/usr/sbin/asterisk",
                "-f",
                "-C",
                "/etc/asterisk/asterisk.conf",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.pid_file.write_text(f"{process.pid}\n")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self._umount_all(self.root)
                raise SandboxUnavailable(
                    f"asterisk exited with {process.returncode}; log tail:\n{self.log_tail()}"
                )
            if self.ari_ready(timeout=1.0) and self._fully_booted():
                return
            time.sleep(0.1)
        self.down()
        raise SandboxUnavailable(f"ARI did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def _fully_booted(self) -> bool:
        try:
            out = self.cli("core waitfullybooted", timeout=10)
        except SandboxUnavailable:
            return False
        return "fully booted" in out.lower()

    def down(self, timeout: float = 10.0) -> None:
        """Stop Asterisk and release the mounts. Safe to call when nothing runs."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(SandboxUnavailable):
                self.cli("core stop now", timeout=5)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self._alive(pid):
                time.sleep(0.05)
            if self._alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                while self._alive(pid):
                    time.sleep(0.05)
        self._kill_strays()
        self.pid_file.unlink(missing_ok=True)
        self._umount_all(self.root)

    def restart(self) -> None:
        self.down()
        self.up()

    def status(self) -> dict[str, object]:
        return {
            "root": str(self.root),
            "built": (self.root / ".voxtra-ready").is_file(),
            "cached_tarball": self.tarball.is_file(),
            "pid": self.pid(),
            "ari_url": self.ari_url,
            "ari_ready": self.ari_ready(timeout=1.0),
        }

    def add_tagging_context(self, context: str) -> None:
        """Add ``context`` to the running dialplan: its ``app-<n>`` extensions copy the
        app's instance tag onto the call (the ``Set()`` line of docs/calls.md, for
        ``app.instance_tag_in_dialplan``) and enter ``Stasis(${VOXTRA_APP}, <n>)``; it
        includes voxtra-test. Added at run time (``dialplan remove context`` undoes
        it): editing asterisk-conf/ would make the next session reload the sandbox."""
        for line in (
            "_app-X.,1,Set(VOXTRA_INSTANCE=${VOXTRA_INSTANCE_${VOXTRA_APP}})",
            "_app-X.,2,Stasis(${VOXTRA_APP},${EXTEN:4})",
        ):
            self.cli(f"dialplan add extension {line} into {context}")
        self.cli(f"dialplan add include voxtra-test into {context}")

    def cli(self, command: str, timeout: float = 10.0) -> str:
        """Run an Asterisk CLI command against the running sandbox."""
        try:
            result = subprocess.run(
                [
                    "chroot",
                    str(self.root),
                    "/usr/sbin/asterisk",
                    "-C",
                    "/etc/asterisk/asterisk.conf",
                    "-rx",
                    command,
                ],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise SandboxUnavailable(f"asterisk -rx {command!r} timed out") from exc
        if result.returncode != 0:
            raise SandboxUnavailable(f"asterisk -rx {command!r}: {result.stderr.strip()}")
        return result.stdout

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _conf_digest(self) -> str:
        digest = hashlib.sha256()
        for path in sorted(self.conf_dir.rglob("*")):
            if path.is_file():
                digest.update(str(path.relative_to(self.conf_dir)).encode())
                digest.update(path.read_bytes())
        return digest.hexdigest()

    def _conf_changed(self) -> bool:
        stamp = self.root / "etc/asterisk/.voxtra-conf-digest"
        try:
            return stamp.read_text().strip() != self._conf_digest()
        except OSError:
            return True

    def install_conf(self) -> None:
        """Copy asterisk-conf/ over the chroot's /etc/asterisk (replacing it whole)."""
        target = self.root / "etc/asterisk"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(self.conf_dir, target)
        (target / ".voxtra-conf-digest").write_text(self._conf_digest() + "\n")
        # The Debian package does not create the recordings directory; ARI's record
        # fails with "No such file or directory" without it.
        self.spool_dir.mkdir(parents=True, exist_ok=True)

    # -- helpers -----------------------------------------------------------------

    @staticmethod
    def _alive(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        try:  # a zombie of ours counts as gone once reaped
            waited, _ = os.waitpid(pid, os.WNOHANG)
            return waited == 0
        except ChildProcessError:
            return Path(f"/proc/{pid}").exists()

    def _kill_strays(self) -> None:
        """End any process whose root is inside the chroot (left by a crash)."""
        root = str(self.root.resolve())
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.readlink(entry / "root") == root:
                    os.kill(int(entry.name), signal.SIGKILL)
            except OSError:
                continue

    def _mount(self) -> None:
        proc, dev = self.root / "proc", self.root / "dev"
        if not os.path.ismount(proc):
            _run(["mount", "-t", "proc", "proc", str(proc)])
        if not os.path.ismount(dev):
            _run(["mount", "--bind", "/dev", str(dev)])

    @staticmethod
    def _umount_all(root: Path) -> None:
        for sub in ("dev", "proc"):
            path = root / sub
            if os.path.ismount(path):
                subprocess.run(["umount", "-l", str(path)], check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m voxtra.testing.asterisk")
    parser.add_argument("action", choices=["up", "down", "status", "restart", "build", "cli"])
    parser.add_argument("command", nargs="*", help="CLI command (for `cli`)")
    args = parser.parse_args(argv)
    sandbox = AsteriskSandbox()
    try:
        if args.action == "up":
            started = time.monotonic()
            running = sandbox.pid() is not None and sandbox.ari_ready()
            sandbox.up()
            where = f"ARI {sandbox.ari_url} (user {sandbox.username}, password {sandbox.password})"
            if running:
                # Not "up in 0.0 s": nothing was started, say so.
                print(f"Asterisk is already running: {where}")
            else:
                print(f"Asterisk is up: {where} in {time.monotonic() - started:.1f} s")
        elif args.action == "down":
            sandbox.down()
            print("Asterisk is down")
        elif args.action == "restart":
            sandbox.restart()
            print("Asterisk restarted")
        elif args.action == "build":
            print(sandbox.build())
        elif args.action == "cli":
            print(sandbox.cli(" ".join(args.command)), end="")
        else:
            print(json.dumps(sandbox.status(), indent=2))
    except SandboxUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
