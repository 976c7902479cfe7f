from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voxtra.errors import RecordingError
from voxtra.recording import (
    SUPPORTED_FORMATS,
    InvalidRecordingName,
    generate_recording_name,
    validate_format,
    validate_recording_name,
)


@pytest.mark.parametrize("name", ["a", "call-1700000000.42", "A_b.c-D", "x" * 128, "rec.v2"])
def test_valid_names_pass_unchanged(name: str) -> None:
    assert validate_recording_name(name) == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "empty"),
        ("x" * 129, "129 characters"),
        ("a/b", "path separator"),
        ("a\\b", "path separator"),
        ("../etc/passwd", "path separator"),
        ("a..b", "'..'"),
        ("..", "'..'"),
        (".hidden", "start with '.'"),
        ("a\x00b", "control"),
        ("line\nbreak", "control"),
        ("tab\there", "control"),
        ("has space", "outside"),
        ("héllo", "outside"),
        ("semi;colon", "outside"),
    ],
)
def test_bad_names_are_rejected_with_the_rule(name: str, why: str) -> None:
    with pytest.raises(InvalidRecordingName, match=why):
        validate_recording_name(name)


def test_name_error_is_a_recording_error_and_non_strings_rejected() -> None:
    with pytest.raises(RecordingError, match="must be a string"):
        validate_recording_name(42)  # type: ignore[arg-type]


@given(st.text(max_size=200))
def test_any_text_is_accepted_unchanged_or_rejected_cleanly(text: str) -> None:
    safe = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
    expected_ok = 0 < len(text) <= 128 and set(text) <= safe and ".." not in text and text[0] != "."
    if expected_ok:
        assert validate_recording_name(text) == text
    else:
        with pytest.raises(InvalidRecordingName):
            validate_recording_name(text)


@given(st.text(max_size=300))
def test_generated_names_are_always_valid(call_id: str) -> None:
    name = generate_recording_name(call_id)
    assert validate_recording_name(name) == name


def test_generated_names_are_unique_and_readable() -> None:
    when = datetime(2024, 3, 5, 12, 30, 1, tzinfo=UTC)
    names = {generate_recording_name("1700000000.42", now=when) for _ in range(2000)}
    assert len(names) == 2000
    sample = names.pop()
    assert sample.startswith("1700000000.42-20240305T123001Z-")
    weird = generate_recording_name("../../chan/../x y")
    assert "/" not in weird and ".." not in weird and " " not in weird


def test_formats() -> None:
    assert validate_format("wav").sample_rate == 8000
    assert validate_format("sln16").bytes_per_second == 32000
    assert {"wav", "wav16", "gsm", "ulaw", "alaw", "sln", "sln16", "g722"} <= set(SUPPORTED_FORMATS)
    with pytest.raises(InvalidRecordingName, match="supported: wav, wav16"):
        validate_format("mp3")
