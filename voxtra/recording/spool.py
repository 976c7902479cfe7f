"""A durable on-disk queue of recordings waiting for delivery.

Each entry is a directory holding the audio file and ``entry.json`` (the
recording's metadata plus delivery state: attempts, last error, per-sink
successes). Entries are built in a hidden temporary directory and renamed into
place, so after a crash an entry is either complete or absent; state updates are
written to a temporary file and renamed too. An entry is removed only after the
sink confirmed the upload. Blocking file I/O: call it from a worker thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from voxtra.errors import RecordingError
from voxtra.recording.metadata import RecordingMetadata
from voxtra.recording.naming import validate_format

__all__ = ["Spool", "SpoolEntry"]

logger = logging.getLogger(__name__)

_ENTRY_FILE = "entry.json"
_TMP_PREFIX = ".tmp-"


def _now() -> datetime:
    return datetime.now(UTC)


class SpoolEntry(BaseModel):
    """One spooled recording and its delivery state, as stored in ``entry.json``."""

    id: str
    metadata: RecordingMetadata
    audio_file: str
    attempts: int = 0
    last_error: str | None = None
    #: sink name -> location, for sinks that confirmed (CompositeSink tracking)
    delivered: dict[str, str] = Field(default_factory=dict)
    #: the sink confirmed the whole delivery; only the hook and removal are left
    confirmed: bool = False
    #: retries ran out; stays until the next resume() or manual action
    exhausted: bool = False
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)


class Spool:
    """The spool directory: add, list, update and remove entries."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def ensure(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def entry_dir(self, entry_id: str) -> Path:
        return self.directory / entry_id

    def audio_path(self, entry: SpoolEntry) -> Path:
        return self.entry_dir(entry.id) / entry.audio_file

    def add(self, source: str | Path, meta: RecordingMetadata, *, move: bool = False) -> SpoolEntry:
        """Put a copy of ``source`` and its metadata in the spool, durably (fsynced).

        With ``move`` the source is removed once the entry is committed (a hard
        link on the same filesystem, a copy otherwise); on any failure it stays.
        """
        self.ensure()
        source = Path(source)
        if not source.is_file():
            raise RecordingError(f"cannot spool {source}: not a file")
        entry_id = f"{meta.name}.{uuid.uuid4().hex[:8]}"
        audio_file = f"{meta.name}.{validate_format(meta.format).extension}"
        entry = SpoolEntry(id=entry_id, metadata=meta, audio_file=audio_file)
        staging = self.directory / f"{_TMP_PREFIX}{entry_id}"
        staging.mkdir()
        try:
            target = staging / audio_file
            if move:
                try:  # same filesystem: a hard link, no copy; the source stays until commit
                    os.link(source, target)
                except OSError:
                    shutil.copyfile(source, target)
            else:
                shutil.copyfile(source, target)
            _fsync_file(target)
            # Measure the spooled bytes themselves: they are what will be delivered.
            entry.metadata = meta.measured(target)
            _write_json(staging / _ENTRY_FILE, entry.model_dump_json(indent=2))
            _fsync_dir(staging)
            os.rename(staging, self.entry_dir(entry_id))
            _fsync_dir(self.directory)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        if move:
            with contextlib.suppress(FileNotFoundError):
                source.unlink()
        return entry

    def save(self, entry: SpoolEntry) -> None:
        """Persist an entry's changed delivery state atomically."""
        entry.updated_at = _now()
        self.write_entry(entry.id, entry.model_dump_json(indent=2))

    def write_entry(self, entry_id: str, text: str) -> None:
        """Atomically replace an entry's ``entry.json`` with already serialised text."""
        _write_json(self.entry_dir(entry_id) / _ENTRY_FILE, text)

    def load(self, entry_id: str) -> SpoolEntry:
        path = self.entry_dir(entry_id) / _ENTRY_FILE
        try:
            return SpoolEntry.model_validate_json(path.read_bytes())
        except (OSError, ValidationError) as exc:
            raise RecordingError(f"spool entry {path} is unreadable: {exc}") from exc

    def entries(self) -> list[SpoolEntry]:
        """All complete entries, oldest first. Unreadable ones are logged and skipped."""
        if not self.directory.is_dir():
            return []
        found: list[SpoolEntry] = []
        for child in self.directory.iterdir():
            if child.name.startswith(".") or not child.is_dir():
                continue
            try:
                found.append(self.load(child.name))
            except RecordingError as exc:
                logger.error("%s", exc)
        found.sort(key=lambda e: (e.created_at, e.id))
        return found

    def remove(self, entry: SpoolEntry) -> None:
        """Delete an entry; only after its delivery was confirmed."""
        shutil.rmtree(self.entry_dir(entry.id), ignore_errors=True)
        with contextlib.suppress(OSError):
            _fsync_dir(self.directory)

    def discard_incomplete(self) -> int:
        """Remove staging directories a crash left behind (their source was never released)."""
        if not self.directory.is_dir():
            return 0
        count = 0
        for child in self.directory.iterdir():
            if child.name.startswith(_TMP_PREFIX) and child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
                count += 1
        return count


def _write_json(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _fsync_file(path: Path) -> None:
    with path.open("rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
