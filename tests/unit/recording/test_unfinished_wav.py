"""A WAV whose writer was killed before it closed the file (Asterisk's RIFF and data
sizes are written at close: a SIGKILL leaves zeros, with the audio on disk after them)."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from voxtra.errors import RecordingError
from voxtra.recording.metadata import finalize_wav_header, measure_file


def _unfinished(path: Path, samples: np.ndarray, *, data_size: int = 0, riff: int = 0) -> Path:
    header = b"RIFF" + struct.pack("<I", riff) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16)
    header += b"data" + struct.pack("<I", data_size)
    path.write_bytes(header + samples.astype("<i2").tobytes())
    return path


def test_a_killed_writers_wav_gets_its_sizes(tmp_path: Path) -> None:
    samples = (np.sin(np.arange(16384) * 0.3) * 8000).astype(np.int16)
    path = _unfinished(tmp_path / "killed.wav", samples)
    with pytest.raises(wave.Error), wave.open(str(path), "rb"):
        pass  # what a user's tools make of it as Asterisk left it
    assert finalize_wav_header(path) is True
    with wave.open(str(path), "rb") as w:
        assert w.getnframes() == len(samples)
        assert np.array_equal(np.frombuffer(w.readframes(len(samples)), "<i2"), samples)
    assert measure_file(path, "wav").duration == pytest.approx(len(samples) / 8000)
    assert finalize_wav_header(path) is False  # finished now: left alone


def test_an_odd_byte_at_the_end_is_not_counted_as_a_sample(tmp_path: Path) -> None:
    path = _unfinished(tmp_path / "odd.wav", np.zeros(100, np.int16))
    with path.open("ab") as f:
        f.write(b"\x01")  # half a sample: the write was cut
    assert finalize_wav_header(path) is True
    with wave.open(str(path), "rb") as w:
        assert w.getnframes() == 100


def test_finished_files_and_trailing_chunks_are_left_alone(tmp_path: Path) -> None:
    samples = np.ones(200, np.int16)
    size = 44 + 400 + 12
    path = _unfinished(tmp_path / "ok.wav", samples, data_size=400, riff=size - 8)
    with path.open("ab") as f:
        f.write(b"LIST" + struct.pack("<I", 4) + b"INFO")  # a chunk after the data
    before = path.read_bytes()
    assert finalize_wav_header(path) is False
    assert path.read_bytes() == before


def test_not_a_wav_raises(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    path.write_bytes(b"garbage" * 10)
    with pytest.raises(RecordingError):
        finalize_wav_header(path)


def test_a_finished_empty_recording_is_left_alone(tmp_path: Path) -> None:
    """Stopped as it started: no audio, and both sizes written (RIFF 36, data 0). It is
    finished, not a killed writer's file (it used to be rewritten and logged so)."""
    path = _unfinished(tmp_path / "empty.wav", np.zeros(0, np.int16), data_size=0, riff=36)
    before = path.read_bytes()
    assert finalize_wav_header(path) is False
    assert path.read_bytes() == before
    with wave.open(str(path), "rb") as w:
        assert w.getnframes() == 0


def test_an_empty_file_a_killed_writer_left_gets_its_sizes(tmp_path: Path) -> None:
    path = _unfinished(tmp_path / "killed-empty.wav", np.zeros(0, np.int16))  # RIFF 0
    assert finalize_wav_header(path) is True
    assert struct.unpack_from("<I", path.read_bytes(), 4) == (36,)
