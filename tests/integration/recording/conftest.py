"""Fixtures for call-recording tests: a tone the Local caller plays, and a private S3.

The S3 server is this directory's own (module scope): the outage test stops it, which
must not disturb the storage tests' shared server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from voxtra.testing.audio import tone, write_wav
from voxtra.testing.pytest_plugin import AsteriskTarget
from voxtra.testing.storage import SeaweedS3Server, StorageServerUnavailable

TONE_HZ = 1000.0
# Inside the sandbox's chroot: Playback() takes an absolute path without extension.
TONE_DIR = "var/lib/asterisk/sounds/voxtra-recording-test"


@pytest.fixture(scope="session")
def tone_files(asterisk: AsteriskTarget) -> dict[float, str]:
    """1 kHz tones (8 kHz 16-bit mono) of 2 s and 6 s, as Playback() names.

    They are written into the sandbox's file system; against an external Asterisk
    (``VOXTRA_ARI_URL``) there is no portable way to add sounds, so these tests skip.
    """
    if asterisk.sandbox is None:
        pytest.skip("needs the Asterisk sandbox to put a test tone into its sounds")
    directory = asterisk.sandbox.root / TONE_DIR
    directory.mkdir(parents=True, exist_ok=True)
    names: dict[float, str] = {}
    for seconds in (2.0, 6.0):
        stem = f"tone-1k-{seconds:.0f}s"
        write_wav(directory / f"{stem}.wav", tone(TONE_HZ, seconds), 8000)
        names[seconds] = f"/{TONE_DIR}/{stem}"
    return names


@pytest.fixture(scope="module")
def seaweed() -> Iterator[SeaweedS3Server]:
    try:
        server = SeaweedS3Server()
    except StorageServerUnavailable as exc:
        pytest.skip(str(exc))
    with server:
        yield server


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """(recordings directory, spool directory) of one test."""
    return tmp_path / "recordings", tmp_path / "spool"
