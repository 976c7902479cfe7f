from __future__ import annotations

import hashlib
import struct
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from voxtra.errors import RecordingError
from voxtra.recording import (
    InvalidRecordingMetadata,
    RecordingMetadata,
    measure_file,
    parse_wav_header,
)

from .conftest import MakeWav


def test_metadata_measured_from_a_real_wav(make_wav: MakeWav) -> None:
    path = make_wav(seconds=1.5)
    meta = RecordingMetadata.for_file(path, name="r1", call_id="c1", caller="+15550001")
    data = path.read_bytes()
    assert meta.format == "wav"
    assert meta.size_bytes == len(data) == 44 + 1.5 * 8000 * 2
    assert meta.sha256 == hashlib.sha256(data).hexdigest()
    assert meta.sample_rate == 8000
    assert meta.duration == pytest.approx(1.5)
    assert meta.local_path == path


def test_wav16_and_explicit_format(make_wav: MakeWav) -> None:
    path = make_wav("x.wav", seconds=0.25, rate=16000)
    meta = RecordingMetadata.for_file(path, name="r2", call_id="c", format="wav16")
    assert meta.sample_rate == 16000
    assert meta.duration == pytest.approx(0.25)


def test_unfinalised_wav_is_measured_to_end_of_file(make_wav: MakeWav) -> None:
    path = make_wav(seconds=1.0)
    raw = bytearray(path.read_bytes())
    struct.pack_into("<I", raw, 40, 0)  # data size never written back, as after a crash
    path.write_bytes(bytes(raw))
    assert measure_file(path, "wav").duration == pytest.approx(1.0)
    struct.pack_into("<I", raw, 40, 0xFFFFFFFF)
    path.write_bytes(bytes(raw))
    assert measure_file(path, "wav").duration == pytest.approx(1.0)


def test_raw_formats_from_byte_counts(tmp_path: Path) -> None:
    ulaw = tmp_path / "a.ulaw"
    ulaw.write_bytes(b"\xff" * 4000)
    assert measure_file(ulaw, "ulaw").duration == pytest.approx(0.5)
    sln16 = tmp_path / "a.sln16"
    sln16.write_bytes(b"\x00" * 64000)
    facts = measure_file(sln16, "sln16")
    assert (facts.duration, facts.sample_rate) == (pytest.approx(2.0), 16000)
    gsm = tmp_path / "a.gsm"
    gsm.write_bytes(b"\x00" * 33 * 50)  # fifty 20 ms frames
    assert measure_file(gsm, "gsm").duration == pytest.approx(1.0)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) % 2 else b"")


def test_parse_wav_header_walks_chunks_with_padding() -> None:
    fmt = struct.pack("<HHIIHH", 7, 1, 8000, 8000, 1, 8)  # mu-law WAV
    body = b"WAVE" + _chunk(b"LIST", b"odd") + _chunk(b"fmt ", fmt) + _chunk(b"data", b"\x00" * 80)
    info = parse_wav_header(b"RIFF" + struct.pack("<I", len(body)) + body)
    assert (info.audio_format, info.sample_rate, info.byte_rate, info.data_size) == (
        7,
        8000,
        8000,
        80,
    )
    assert info.data_offset == 12 + 12 + 8 + 16 + 8


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a WAV"),
        (b"OggS" + b"\x00" * 40, "not a WAV"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00", "truncated"),
        (b"RIFF\x00\x00\x00\x00WAVE" + _chunk(b"data", b"ab"), "before its 'fmt '"),
        (b"RIFF\x00\x00\x00\x00WAVE" + _chunk(b"LIST", b"abcd"), "truncated before"),
    ],
)
def test_parse_wav_header_rejects_bad_input(data: bytes, message: str) -> None:
    with pytest.raises(RecordingError, match=message):
        parse_wav_header(data)


def test_measure_rejects_a_non_wav_with_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "x.wav"
    bogus.write_bytes(b"not audio at all" * 10)
    with pytest.raises(RecordingError, match=r"x\.wav: not a WAV"):
        measure_file(bogus, "wav")
    with pytest.raises(RecordingError, match="cannot read"):
        measure_file(tmp_path / "missing.wav", "wav")


def test_json_round_trip_and_utc_times() -> None:
    plus2 = timezone(timedelta(hours=2))
    meta = RecordingMetadata(
        name="r",
        call_id="c",
        started_at=datetime(2024, 1, 1, 12, 0, tzinfo=plus2),
        ended_at=datetime(2024, 1, 1, 10, 5),  # naive: taken as UTC
        sha256="AB" * 32,
        location=["s3://b/k", "gs://b/k"],
    )
    assert meta.started_at == datetime(2024, 1, 1, 10, 0, tzinfo=UTC)
    assert meta.started_at is not None and meta.started_at.tzinfo == UTC
    assert meta.ended_at == datetime(2024, 1, 1, 10, 5, tzinfo=UTC)
    assert meta.sha256 == "ab" * 32
    again = RecordingMetadata.model_validate_json(meta.model_dump_json())
    assert again == meta


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "../x", "call_id": "c"},
        {"name": "ok", "call_id": "c", "format": "mp3"},
        {"name": "ok", "call_id": "c", "sha256": "xyz"},
    ],
)
def test_bad_metadata_raises_a_recording_error(fields: dict[str, str]) -> None:
    with pytest.raises(InvalidRecordingMetadata):
        RecordingMetadata(**fields)


def test_object_metadata_is_ascii() -> None:
    meta = RecordingMetadata(name="r", call_id="c", caller="Zoë ☎", duration=1.23456)
    flat = meta.object_metadata()
    assert flat["caller"] == "Zo? ?"
    assert flat["duration"] == "1.235"
    assert "sha256" not in flat
    assert all(v.isascii() for v in flat.values())


@pytest.mark.parametrize("caller", ["a\x01b", "a\nb", "a\rb", "a\tb", "a\x7fb", "a\x00b"])
def test_object_metadata_replaces_control_characters(caller: str) -> None:
    # S3 sends these values as HTTP headers: a control character in a caller ID made
    # the HTTP client refuse every upload of the recording (it was never delivered).
    meta = RecordingMetadata(name="r", call_id="c\n1", caller=caller, called_number="\r\n200")
    flat = meta.object_metadata()
    assert flat["caller"] == "a?b"
    assert flat["call-id"] == "c?1" and flat["called-number"] == "??200"
    assert all(" " <= c <= "~" for value in flat.values() for c in value)
