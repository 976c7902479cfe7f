"""Helpers for recording tests: real WAV files written with the ``wave`` module."""

from __future__ import annotations

import math
import struct
import wave
from collections.abc import Callable
from pathlib import Path

import pytest

MakeWav = Callable[..., Path]


def write_wav(path: Path, seconds: float, rate: int = 8000, freq: float = 440.0) -> Path:
    """A mono 16-bit PCM sine tone, the format Asterisk's ``wav`` recordings use."""
    frames = int(seconds * rate)
    samples = (int(12000 * math.sin(2 * math.pi * freq * i / rate)) for i in range(frames))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"".join(struct.pack("<h", s) for s in samples))
    return path


@pytest.fixture
def make_wav(tmp_path: Path) -> MakeWav:
    def make(name: str = "rec.wav", seconds: float = 1.0, rate: int = 8000) -> Path:
        return write_wav(tmp_path / name, seconds, rate)

    return make
