"""A durable on-disk queue of recordings waiting for delivery.

Each entry is a directory holding the audio file and ``entry.json`` (the
recording's metadata plus delivery state: attempts, last error, per-sink
successes). Entries are built in a hidden temporary directory and renamed into
place, so after a crash an entry is either complete or absent; state updates are
written to a temporary file and renamed too. An entry is removed only after the
sink confirmed the upload. Blocking file I/O: call it from a worker thread.

Nothing read back from disk is trusted as a path: an entry's ``id`` must be the name
of its own directory and follow the rule it was created by, and its ``audio_file``
must be the name ``add`` gives it. An entry that breaks either rule (a hand-edited or
hostile ``entry.json`` saying ``"id": "../victim"``) is moved to ``.quarantine/`` with
a warning, never followed: removing it once deleted a directory outside the spool.
A directory without ``entry.json`` is no entry (``add`` renames an entry into place
with it) and is left where it is: recordings a sink stored inside the spool were once
moved into the quarantine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from voxtra.errors import RecordingError
from voxtra.recording.metadata import RecordingMetadata
from voxtra.recording.naming import (
    InvalidRecordingName,
    validate_format,
    validate_recording_name,
)
from voxtra.recording.sinks import mkdir_durable

__all__ = ["InvalidSpoolEntry", "Spool", "SpoolEntry", "validate_entry_id", "write_text_durably"]

logger = logging.getLogger(__name__)

_ENTRY_FILE = "entry.json"
_TMP_PREFIX = ".tmp-"
#: Where entries that break the naming rules are moved (hidden: never listed).
QUARANTINE_DIR = ".quarantine"
# An entry id is "<recording name>.<8 hex digits>" (see Spool.add).
_ENTRY_ID = re.compile(r"(?P<name>.+)\.[0-9a-f]{8}")


class InvalidSpoolEntry(InvalidRecordingName):
    """A spool entry's id or audio file name breaks the rules it was created by."""


def validate_entry_id(entry_id: str) -> str:
    """Return ``entry_id`` if it is ``<valid recording name>.<8 hex digits>``, else raise.

    The same rule :meth:`Spool.add` creates ids by, so an id can never be ``..``, hold
    a path separator, or start with a dot (the spool's own hidden directories).
    """
    match = _ENTRY_ID.fullmatch(entry_id) if isinstance(entry_id, str) else None
    if match is None:
        raise InvalidSpoolEntry(f"spool entry id {entry_id!r} is not '<name>.<8 hex digits>'")
    try:
        validate_recording_name(match["name"])
    except InvalidRecordingName as exc:
        raise InvalidSpoolEntry(f"spool entry id {entry_id!r}: {exc}") from None
    return entry_id


def _audio_file_for(meta: RecordingMetadata) -> str:
    # Re-validate the name: metadata can be changed after it was validated.
    name = validate_recording_name(meta.name)
    return f"{name}.{validate_format(meta.format).extension}"


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
        #: directories here that are no entry, already warned about
        self._foreign: set[str] = set()

    def ensure(self) -> None:
        mkdir_durable(self.directory)  # its entry in the parent must survive a power cut

    def entry_dir(self, entry_id: str) -> Path:
        """The entry's directory; raises :class:`InvalidSpoolEntry` for a bad id."""
        return self.directory / validate_entry_id(entry_id)

    def audio_path(self, entry: SpoolEntry) -> Path:
        """The entry's audio file; raises :class:`InvalidSpoolEntry` for bad names."""
        if entry.audio_file != _audio_file_for(entry.metadata):
            raise InvalidSpoolEntry(
                f"spool entry {entry.id!r}: audio file {entry.audio_file!r} does not match "
                f"its recording name {entry.metadata.name!r}"
            )
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
        audio_file = _audio_file_for(meta)
        entry_id = validate_entry_id(f"{meta.name}.{uuid.uuid4().hex[:8]}")
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
            write_text_durably(staging / _ENTRY_FILE, entry.model_dump_json(indent=2))
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
        write_text_durably(self.entry_dir(entry_id) / _ENTRY_FILE, text)

    def load(self, entry_id: str) -> SpoolEntry:
        """Read one entry. Raises :class:`InvalidSpoolEntry` if its id or file name
        breaks the rules (or is not the directory it was read from), RecordingError if
        it is unreadable."""
        path = self.entry_dir(entry_id) / _ENTRY_FILE
        try:
            entry = SpoolEntry.model_validate_json(path.read_bytes())
        except (OSError, ValidationError) as exc:
            raise RecordingError(f"spool entry {path} is unreadable: {exc}") from exc
        if entry.id != entry_id:
            raise InvalidSpoolEntry(
                f"spool entry {path} names itself {entry.id!r}, not its directory {entry_id!r}"
            )
        self.audio_path(entry)  # validates the id and the audio file name
        return entry

    def entries(self) -> list[SpoolEntry]:
        """All complete entries, oldest first. Unreadable ones are logged and skipped."""
        if not self.directory.is_dir():
            return []
        found: list[SpoolEntry] = []
        for child in self.directory.iterdir():
            if child.name.startswith(".") or not child.is_dir():
                continue
            if not (child / _ENTRY_FILE).is_file():
                self._skip_foreign(child)
                continue
            try:
                found.append(self.load(child.name))
            except InvalidSpoolEntry as exc:
                self._quarantine(child, exc)
            except RecordingError as exc:
                logger.error("%s", exc)
        found.sort(key=lambda e: (e.created_at, e.id))
        return found

    def _skip_foreign(self, child: Path) -> None:
        """Leave a directory that holds no entry alone (it may be anything: recordings
        a sink stores here, a person's files); say so once."""
        if child.name not in self._foreign:
            self._foreign.add(child.name)
            logger.warning(
                "%s in the spool %s is no spool entry (no %s); left alone",
                child.name,
                self.directory,
                _ENTRY_FILE,
            )

    def _quarantine(self, child: Path, problem: Exception) -> None:
        """Move a rule-breaking entry out of the way, for a person to look at."""
        target = self.directory / QUARANTINE_DIR / f"{child.name}.{uuid.uuid4().hex[:8]}"
        try:
            target.parent.mkdir(exist_ok=True)
            os.rename(child, target)
        except OSError as exc:
            logger.warning(
                "skipping bad spool entry %s (%s); cannot quarantine: %s", child, problem, exc
            )
            return
        logger.warning("quarantined bad spool entry %s as %s: %s", child, target, problem)

    def remove(self, entry: SpoolEntry) -> None:
        """Delete an entry; only after its delivery was confirmed."""
        # entry_dir validates the id: a bad one raises instead of deleting elsewhere.
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


def write_text_durably(path: Path, text: str) -> None:
    """``text`` in ``path`` whole or not at all: a temporary file of its own (no two
    writers share one), fsynced, renamed over ``path``; removed if the write fails (a
    full disk must not keep the partial copy). The directory is not fsynced here."""
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
