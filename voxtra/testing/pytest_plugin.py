"""pytest fixtures for testing Voxtra apps against a real Asterisk.

Enable with ``pytest_plugins = ["voxtra.testing.pytest_plugin"]`` in a conftest.

* ``asterisk`` (session): connection facts of a running Asterisk. With ``VOXTRA_ARI_URL``
  set it points at that Asterisk; otherwise it starts the sandbox
  (:mod:`voxtra.testing.asterisk`) and stops it at the end if it started it. When
  Asterisk cannot be had, tests using it are skipped with the reason, or fail when the
  ``CI`` environment variable is set (CI must never skip them silently).
* Tests marked ``@pytest.mark.asterisk`` get the fixture automatically.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from voxtra.testing.asterisk import AsteriskSandbox, SandboxUnavailable


@dataclass(frozen=True)
class AsteriskTarget:
    """Where the Asterisk under test is."""

    ari_url: str
    username: str
    password: str
    sandbox: AsteriskSandbox | None

    def restart(self) -> None:
        """Restart Asterisk (sandbox only): drops every channel and the event socket."""
        if self.sandbox is None:
            pytest.skip("restarting Asterisk needs the sandbox, not an external PBX")
        self.sandbox.restart()


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"Asterisk is required in CI but unavailable: {reason}", pytrace=False)
    pytest.skip(f"Asterisk unavailable: {reason}")


@pytest.fixture(scope="session")
def asterisk() -> Iterator[AsteriskTarget]:
    url = os.environ.get("VOXTRA_ARI_URL")
    if url:
        yield AsteriskTarget(
            url,
            os.environ.get("VOXTRA_ARI_USERNAME", os.environ.get("VOXTRA_USERNAME", "voxtra")),
            os.environ.get("VOXTRA_ARI_PASSWORD", os.environ.get("VOXTRA_PASSWORD", "voxtra")),
            None,
        )
        return
    sandbox = AsteriskSandbox()
    was_running = sandbox.pid() is not None and sandbox.ari_ready()
    try:
        sandbox.up()
    except SandboxUnavailable as exc:
        _unavailable(str(exc))
    yield AsteriskTarget(sandbox.ari_url, sandbox.username, sandbox.password, sandbox)
    if not was_running and not os.environ.get("VOXTRA_KEEP_ASTERISK"):
        sandbox.down()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("asterisk") is not None:
            item.fixturenames.append("asterisk")  # type: ignore[attr-defined]
