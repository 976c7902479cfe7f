"""A throw-away PostgreSQL cluster for tests: ``initdb`` + ``pg_ctl`` in a temp directory.

The platform's store runs on Postgres when several workers share it (issue 10); its
tests need a real one, started by the tests themselves like the Asterisk sandbox.
Debian's ``postgresql`` package provides the binaries (``scripts/bootstrap`` installs
it); they are found in ``$VOXTRA_PG_BINDIR``, ``/usr/lib/postgresql/*/bin`` or on
``PATH``.

The cluster listens on a free TCP port of 127.0.0.1 only, trusts local connections (it
holds nothing but test data) and is stopped and deleted at the end of the session.
``initdb`` refuses to run as root: as root, the cluster runs as the ``postgres`` user.

Fixtures (load the plugin with ``pytest_plugins = ["voxtra.testing.postgres"]``):

* ``postgres`` (session): the :class:`PostgresCluster`, started once;
* ``postgres_url`` (function): a fresh, empty database's SQLAlchemy URL
  (``postgresql://postgres@127.0.0.1:PORT/test_...``).

When Postgres cannot be had, tests using them are skipped with the reason, or fail
when the ``CI`` environment variable is set (CI must never skip them silently).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from voxtra.errors import VoxtraError

__all__ = ["PostgresCluster", "PostgresUnavailable", "find_bindir", "postgres", "postgres_url"]


class PostgresUnavailable(VoxtraError):
    """The PostgreSQL binaries are missing or the cluster did not start."""


def find_bindir() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``; :class:`PostgresUnavailable` if none."""
    candidates: list[str] = []
    if os.environ.get("VOXTRA_PG_BINDIR"):
        candidates.append(os.environ["VOXTRA_PG_BINDIR"])
    # Newest major version first.
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    found = shutil.which("initdb")
    if found:
        candidates.append(str(Path(found).parent))
    for candidate in candidates:
        path = Path(candidate)
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file():
            return path
    raise PostgresUnavailable(
        "no PostgreSQL binaries (initdb, pg_ctl): install Debian's postgresql "
        "(scripts/bootstrap does) or set VOXTRA_PG_BINDIR"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    """One cluster in a temporary directory; :meth:`start`, :meth:`stop`, :meth:`url`."""

    def __init__(self, bindir: Path | None = None) -> None:
        self.bindir = bindir or find_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="voxtra-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = _free_port()
        self.host = "127.0.0.1"
        self._as_user: str | None = "postgres" if os.geteuid() == 0 else None
        self.running = False

    def _run(self, *args: str, timeout: float = 60.0) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._as_user is not None:
            user = pwd.getpwnam(self._as_user)
            preexec = _drop_to(user.pw_uid, user.pw_gid)
        else:
            preexec = None
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            preexec_fn=preexec,  # drop root for initdb/pg_ctl only (they refuse root)
            check=False,
        )
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise PostgresUnavailable(
                f"{args[0]} failed ({result.returncode}): {result.stderr.strip()[-1000:]}"
                + (f"\nserver log:\n{log}" if log else "")
            )

    def start(self) -> PostgresCluster:
        if self._as_user is not None:
            try:
                user = pwd.getpwnam(self._as_user)
            except KeyError:
                raise PostgresUnavailable(
                    "running as root and there is no 'postgres' user for initdb"
                ) from None
            os.chown(self.root, user.pw_uid, user.pw_gid)
        # fsync off and no sync at initdb: a test cluster is thrown away, and syncing
        # made a start take seconds on a loaded box.
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--no-sync", "--no-instructions",
        )  # fmt: skip
        options = (
            f"-h {self.host} -p {self.port} -k {self.root} -F "
            "-c max_connections=200 -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start")
        self.running = True
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@{self.host}:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; its URL."""
        name = name or f"test_{uuid.uuid4().hex[:12]}"
        self._run("createdb", "-h", self.host, "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)

    def stop(self) -> None:
        if self.running:
            with contextlib.suppress(PostgresUnavailable, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            self.running = False
        shutil.rmtree(self.root, ignore_errors=True)


def _drop_to(uid: int, gid: int) -> Callable[[], None]:
    def preexec() -> None:
        os.setgid(gid)
        os.setuid(uid)

    return preexec


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required in CI but unavailable: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL unavailable: {reason}")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster for the whole session (see the module doc)."""
    try:
        cluster = PostgresCluster().start()
    except (PostgresUnavailable, OSError, subprocess.TimeoutExpired) as exc:
        _unavailable(str(exc))
        raise AssertionError("unreachable") from None
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def postgres_url(postgres: PostgresCluster) -> str:
    """A fresh, empty database on the session's cluster: its URL."""
    return postgres.create_database()
