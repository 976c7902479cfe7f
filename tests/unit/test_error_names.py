"""Every error a user can see derives from ``VoxtraError`` and follows one naming rule.

The rule is written in :mod:`voxtra.errors`. These tests read every class in ``voxtra/``
with ``ast`` (no optional dependency needs to be installed to check a module), follow
each class's bases by name to a built-in exception, and check the two parts of the rule
that a machine can: the base, and "never both an outcome and ``Error``".
"""

from __future__ import annotations

import ast
import builtins
import re
from pathlib import Path

import pytest

from voxtra.errors import ConfigError, MediaError, VoxtraError

PACKAGE = Path(__file__).resolve().parents[2] / "voxtra"

BUILTIN_EXCEPTIONS = {
    name
    for name, obj in vars(builtins).items()
    if isinstance(obj, type) and issubclass(obj, BaseException)
}

OUTCOME_WITH_SUFFIX = re.compile(
    r"(Failed|Timeout|Unavailable|NotFound|NotConfigured|Ended|Busy|NoAnswer)Error$"
    r"|^Invalid\w*Error$"
)
"""Names that say the outcome and then add ``Error`` (``RecordingFailedError``)."""

PENDING_RENAMES: dict[str, str] = {
    # class name -> where it is and the name it should take (none left)
}
"""Known breaches of the naming rule awaiting their owner's rename (remove on rename)."""


def _classes() -> dict[str, tuple[Path, list[str]]]:
    """Every class in the package: name -> (file, the last part of each base's name)."""
    found: dict[str, tuple[Path, list[str]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(b).rpartition(".")[2] for b in node.bases]
                previous = found.get(node.name, (path, []))[1]
                found[node.name] = (path, previous + bases)
    return found


CLASSES = _classes()


def _ancestors(name: str, seen: frozenset[str] = frozenset()) -> set[str]:
    if name in seen or name not in CLASSES:
        return set()
    out: set[str] = set()
    for base in CLASSES[name][1]:
        out |= {base} | _ancestors(base, seen | {name})
    return out


EXCEPTIONS = sorted(
    name
    for name in CLASSES
    if not name.startswith("_") and _ancestors(name) & (BUILTIN_EXCEPTIONS | {"VoxtraError"})
)


def test_the_scan_finds_the_known_errors() -> None:
    for name in ("VoxtraError", "AriNotFound", "CallEnded", "RtpParseError", "SipCallerError"):
        assert name in EXCEPTIONS
    assert "AudioChunk" not in EXCEPTIONS and "CallSession" not in EXCEPTIONS


@pytest.mark.parametrize("name", [n for n in EXCEPTIONS if n != "VoxtraError"])
def test_every_public_error_derives_from_voxtra_error(name: str) -> None:
    where = CLASSES[name][0].relative_to(PACKAGE.parent)
    assert "VoxtraError" in _ancestors(name), f"{name} ({where}) is not a VoxtraError"


def test_no_error_name_says_its_outcome_and_error_both() -> None:
    offenders = {n for n in EXCEPTIONS if OUTCOME_WITH_SUFFIX.search(n)}
    assert offenders <= set(PENDING_RENAMES), sorted(offenders - set(PENDING_RENAMES))


def test_an_unreadable_audio_chunk_is_a_media_error_and_still_a_value_error() -> None:
    from voxtra.media.frames import AudioChunk, Codec, InvalidAudioChunk

    with pytest.raises(InvalidAudioChunk) as caught:
        AudioChunk(b"\x00\x00\x00", 8000, Codec.PCM16)
    assert isinstance(caught.value, MediaError) and isinstance(caught.value, ValueError)
    with pytest.raises(VoxtraError, match="8 kHz"):
        AudioChunk(b"\x00", 16000, Codec.ULAW)


def test_a_negative_jitter_depth_is_a_config_error() -> None:
    from voxtra.media.jitter import JitterBuffer

    with pytest.raises(ConfigError, match="negative"):
        JitterBuffer(depth=-1)


def test_test_tooling_unavailable_errors_are_voxtra_errors() -> None:
    from voxtra.testing.asterisk import SandboxUnavailable
    from voxtra.testing.storage import StorageServerUnavailable

    for cls in (SandboxUnavailable, StorageServerUnavailable):
        assert issubclass(cls, VoxtraError) and issubclass(cls, RuntimeError)
