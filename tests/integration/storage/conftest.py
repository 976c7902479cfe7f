"""Session-wide real storage servers on loopback (started once, stopped at the end)."""

from __future__ import annotations

import math
import os
import struct
import uuid
import wave
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from voxtra.testing.storage import FakeGcsServer, SeaweedS3Server, StorageServerUnavailable


@pytest.fixture(scope="session")
def seaweed() -> Iterator[SeaweedS3Server]:
    try:
        server = SeaweedS3Server()
    except StorageServerUnavailable as exc:
        pytest.skip(str(exc))
    with server:
        yield server


@pytest.fixture(scope="session")
def fake_gcs() -> Iterator[FakeGcsServer]:
    try:
        server = FakeGcsServer()
    except StorageServerUnavailable as exc:
        pytest.skip(str(exc))
    with server:
        yield server


@pytest.fixture
def gcs_bucket(fake_gcs: FakeGcsServer) -> str:
    name = f"rec-{uuid.uuid4().hex[:12]}"
    fake_gcs.create_bucket(name)
    return name


def write_wav(path: Path, seconds: float, rate: int = 8000) -> Path:
    frames = int(seconds * rate)
    pcm = b"".join(
        struct.pack("<h", int(9000 * math.sin(2 * math.pi * 300 * i / rate))) for i in range(frames)
    )
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm)
    return path


@pytest.fixture
def make_wav(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str = "rec.wav", seconds: float = 1.0) -> Path:
        return write_wav(tmp_path / name, seconds)

    return make


@pytest.fixture
def make_big_wav(tmp_path: Path) -> Callable[[int], Path]:
    """A WAV of about ``size`` bytes of noise (noise: no chance of accidental equality)."""

    def make(size: int) -> Path:
        path = tmp_path / f"big-{size}.wav"
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(8000)
            out.writeframes(os.urandom(size - 44))
        return path

    return make
