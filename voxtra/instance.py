"""A default instance id that is stable across restarts yet distinct between live processes.

Reconcile hangs up (or adopts) only the calls tagged with the app's own instance id. A
random id per process kept two processes serving one Stasis app name apart, but a
process restarted after a crash had a new id, so its predecessor's calls stayed parked in
the app for ever. So the default id is ``<host>.<digest>.<slot>``: the digest covers the
host name, the user and the Stasis app name, and the slot is the lowest ``N`` for which
this process gets an exclusive ``flock`` on ``<dir>/<app>.slot-N.lock``. The kernel
drops the lock when the process dies (SIGKILL included), so a restarted process takes the
same slot, hence the same id, and reconciles what the dead one left; a second live
process finds slot 0 locked and takes slot 1.

``<dir>`` is ``$XDG_RUNTIME_DIR/voxtra/instances`` (per user, on tmpfs: nothing stale
survives a reboot) or, without it, ``~/.cache/voxtra/instances``. Locks are per host, so
processes on different hosts differ by the host part instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import logging
import os
import re
import socket
from pathlib import Path

__all__ = ["InstanceSlot", "instance_dir"]

logger = logging.getLogger(__name__)

MAX_SLOTS = 1024


def instance_dir() -> Path:
    """Where the slot lock files live (see the module doc)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "voxtra" / "instances"
    return Path.home() / ".cache" / "voxtra" / "instances"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


class InstanceSlot:
    """An exclusive slot for ``app_name`` on this host, held until :meth:`release`."""

    def __init__(self, app_name: str, slot: int, fd: int, path: Path) -> None:
        self.app_name = app_name
        self.slot = slot
        self.path = path
        self._fd: int | None = fd
        host = socket.gethostname() or "host"
        digest = hashlib.sha256(f"{host}\0{_user()}\0{app_name}".encode()).hexdigest()[:8]
        readable = re.sub(r"[^A-Za-z0-9_]", "_", host.split(".", 1)[0])[:16] or "host"
        self.instance_id = f"{readable}.{digest}.{slot}"
        """At most 16 + 1 + 8 + 1 + 4 characters, within the 32 an instance id may have."""

    @classmethod
    def acquire(cls, app_name: str, directory: Path | None = None) -> InstanceSlot:
        """Lock the lowest free slot. Raises OSError if the directory is unusable."""
        directory = instance_dir() if directory is None else directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        for slot in range(MAX_SLOTS):
            path = directory / f"{app_name}.slot-{slot}.lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                # flock, not fcntl's POSIX locks: those are per process, so two apps in
                # one process would both "get" slot 0; flock is per open file.
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            except BaseException:
                os.close(fd)
                raise
            with contextlib.suppress(OSError):  # for whoever looks: which process holds it
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            return cls(app_name, slot, fd, path)
        raise OSError(f"all {MAX_SLOTS} instance slots for {app_name!r} in {directory} are held")

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)  # closing the last descriptor drops the flock

    def __del__(self) -> None:
        self.release()
