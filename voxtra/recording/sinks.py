"""Where finished recordings go: the sink protocol, object-key layout, local and composite sinks.

A sink's only job is to store one file durably and say where: ``deliver`` returns
a location URI once the storage has confirmed it, and raises otherwise. Retrying,
spooling and hooks belong to :class:`~voxtra.recording.delivery.RecordingDelivery`,
so every sink gets them for free and stays small.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import string
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

from voxtra.errors import ConfigError, RecordingError
from voxtra.recording.metadata import RecordingMetadata
from voxtra.recording.naming import (
    sanitize_component,
    validate_format,
    validate_recording_name,
)

__all__ = [
    "DEFAULT_KEY_TEMPLATE",
    "KEY_FIELDS",
    "CompositeDeliveryError",
    "CompositeSink",
    "DeliveryError",
    "LocalFileSink",
    "RecordingSink",
    "close_sink",
    "ensure_measured",
    "open_sink",
    "render_key",
    "validate_key_template",
]

logger = logging.getLogger(__name__)

DEFAULT_KEY_TEMPLATE = "{date}/{call_id}/{name}.{fmt}"
#: Placeholders a key template may use. Values are sanitised to ``[A-Za-z0-9_.-]``
#: (``date`` is ``YYYY/MM/DD`` of the recording's start, UTC).
KEY_FIELDS = frozenset({"date", "call_id", "name", "fmt", "caller", "called_number"})


class DeliveryError(RecordingError):
    """A sink could not store a recording (the delivery will be retried)."""

    def __init__(self, sink: str, message: str) -> None:
        super().__init__(f"{sink}: {message}")
        self.sink = sink


class CompositeDeliveryError(DeliveryError):
    """Some sinks of a CompositeSink failed; ``delivered`` lists those that did not."""

    def __init__(
        self, sink: str, failures: dict[str, BaseException], delivered: dict[str, str]
    ) -> None:
        detail = "; ".join(f"{name}: {exc}" for name, exc in failures.items())
        super().__init__(sink, f"{len(failures)} sink(s) failed: {detail}")
        self.failures = failures
        self.delivered = delivered


@runtime_checkable
class RecordingSink(Protocol):
    """Stores a recording file durably.

    ``deliver`` returns the stored object's location (``file://``, ``s3://``,
    ``gs://`` ...) only after the storage confirmed it, raises otherwise, and must be
    safe to call again for the same recording (a retry overwrites the same key).
    Sinks holding connections may also offer ``async aclose()``, and ``async open()``
    to make their client before the first upload (the delivery calls it when the sink
    is added, before calls, so the first upload does not stall live audio).
    """

    @property
    def name(self) -> str: ...

    async def deliver(self, path: Path, meta: RecordingMetadata) -> str: ...


async def close_sink(sink: RecordingSink) -> None:
    """Call the sink's ``aclose()`` if it has one."""
    aclose = getattr(sink, "aclose", None)
    if aclose is not None:
        await aclose()


async def open_sink(sink: RecordingSink) -> None:
    """Call the sink's ``open()`` if it has one. A failure is logged, not raised: the
    first upload makes the client again (and retries) instead."""
    opener = getattr(sink, "open", None)
    if opener is None:
        return
    try:
        await opener()
    except Exception as exc:
        logger.warning("recording sink %s could not make its client yet: %s", sink.name, exc)


async def ensure_measured(path: Path, meta: RecordingMetadata) -> RecordingMetadata:
    """``meta`` with size and SHA-256 filled in from ``path`` if they are missing."""
    if meta.sha256 is not None and meta.size_bytes is not None:
        return meta
    return await asyncio.to_thread(meta.measured, path)


def validate_key_template(template: str) -> str:
    """Return ``template`` if it only uses known placeholders and yields a relative key."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"key template {template!r} is malformed: {exc}") from exc
    for _literal, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in KEY_FIELDS:
            known = ", ".join(sorted(KEY_FIELDS))
            raise ConfigError(
                f"key template {template!r} uses unknown field {{{field}}}; known: {known}"
            )
        if spec or conversion:
            raise ConfigError(f"key template {template!r}: no format specs or conversions")
    if "{name}" not in template:
        raise ConfigError(f"key template {template!r} must contain {{name}} to keep keys unique")
    segments = template.split("/")
    if template.startswith("/") or any(s in (".", "..") for s in segments):
        raise ConfigError(f"key template {template!r} must be a relative path without '..'")
    return template


def _clean_prefix(prefix: str) -> str:
    segments = [s for s in prefix.split("/") if s]
    if any(s in (".", "..") for s in segments):
        raise ConfigError(f"key prefix {prefix!r} must not contain '.' or '..' segments")
    return "/".join(segments)


def render_key(template: str, meta: RecordingMetadata, prefix: str = "") -> str:
    """The object key (relative path) for a recording, from a validated template.

    The template and the name are checked again here, where they become a key or a
    path: either may have been changed since it was validated (pydantic does not
    validate attribute assignment on the metadata).
    """
    validate_key_template(template)
    when = meta.started_at or meta.ended_at or datetime.now(UTC)
    values = {
        "date": when.astimezone(UTC).strftime("%Y/%m/%d"),
        "call_id": sanitize_component(meta.call_id, limit=96),
        "name": validate_recording_name(meta.name),
        "fmt": validate_format(meta.format).extension,
        "caller": sanitize_component(meta.caller),
        "called_number": sanitize_component(meta.called_number),
    }
    key = "/".join(s for s in template.format_map(values).split("/") if s)
    clean = _clean_prefix(prefix)
    return f"{clean}/{key}" if clean else key


class LocalFileSink:
    """Copies recordings into a directory tree, atomically and durably.

    The copy goes to a temporary file in the target directory, is fsynced, then
    renamed into place, and the directory is fsynced: a reader never sees half a
    recording and a power cut never leaves one claimed as stored.
    """

    def __init__(
        self,
        directory: str | Path,
        key_template: str = DEFAULT_KEY_TEMPLATE,
        *,
        name: str = "local",
    ) -> None:
        self.directory = Path(directory)
        self.key_template = validate_key_template(key_template)
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    def target_for(self, meta: RecordingMetadata) -> Path:
        return self.directory / render_key(self.key_template, meta)

    async def deliver(self, path: Path, meta: RecordingMetadata) -> str:
        meta = await ensure_measured(path, meta)
        target = self.target_for(meta)
        try:
            await asyncio.to_thread(self._copy, Path(path), target, meta.size_bytes)
        except OSError as exc:
            raise DeliveryError(self.name, f"cannot write {target}: {exc}") from exc
        return target.resolve().as_uri()

    def _copy(self, source: Path, target: Path, expected_size: int | None) -> None:
        mkdir_durable(target.parent)  # the date/call directories are new most of the time
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with source.open("rb") as src, tmp.open("wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
                dst.flush()
                os.fsync(dst.fileno())
                written = dst.tell()
            if expected_size is not None and written != expected_size:
                raise DeliveryError(
                    self.name, f"copied {written} bytes of {source}, expected {expected_size}"
                )
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        fsync_dir(target.parent)


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` (new files, renames) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def mkdir_durable(path: Path) -> None:
    """``mkdir -p`` whose result survives a power cut (blocking I/O).

    A new directory's own entry lives in its parent, so fsyncing the directory a file
    was renamed into is not enough when that directory was just created: each
    directory created here gets its parent fsynced.
    """
    missing: list[Path] = []
    probe = path
    while not probe.is_dir():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile: still sync its parent
            directory.mkdir()
        fsync_dir(directory.parent)


SinkDone = Callable[[str, str], Awaitable[None]]


class CompositeSink:
    """Delivers every recording to several sinks; it counts as stored only when all did.

    :meth:`deliver_tracked` takes a ``done`` map (sink name -> location) that the
    caller persists: a retry after a partial failure goes only to the sinks that
    have not confirmed yet, so nothing is uploaded twice.
    """

    def __init__(self, *sinks: RecordingSink, name: str | None = None) -> None:
        if not sinks:
            raise ConfigError("CompositeSink needs at least one sink")
        names = [s.name for s in sinks]
        if len(set(names)) != len(names):
            raise ConfigError(f"CompositeSink sink names must be unique, got {names}")
        self.sinks = tuple(sinks)
        self._name = name or "composite(" + ",".join(names) + ")"

    @property
    def name(self) -> str:
        return self._name

    async def deliver(self, path: Path, meta: RecordingMetadata) -> str:
        """Deliver to all sinks; returns the first sink's location (all are in the list form)."""
        return (await self.deliver_tracked(path, meta, {}))[0]

    async def deliver_tracked(
        self,
        path: Path,
        meta: RecordingMetadata,
        done: MutableMapping[str, str],
        on_sink_done: SinkDone | None = None,
    ) -> list[str]:
        """Deliver to the sinks missing from ``done``, concurrently; return all locations.

        Each success is recorded in ``done`` (and reported to ``on_sink_done``) as
        it happens. If any sink fails, raises CompositeDeliveryError after the
        others finished.
        """
        meta = await ensure_measured(path, meta)
        pending = [s for s in self.sinks if s.name not in done]

        async def one(sink: RecordingSink) -> None:
            location = await sink.deliver(path, meta)
            done[sink.name] = location
            if on_sink_done is not None:
                await on_sink_done(sink.name, location)

        results = await asyncio.gather(*(one(s) for s in pending), return_exceptions=True)
        failures: dict[str, BaseException] = {}
        for sink, result in zip(pending, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result  # cancellation and the like are not delivery failures
                failures[sink.name] = result
        if failures:
            raise CompositeDeliveryError(self.name, failures, dict(done))
        return [done[s.name] for s in self.sinks]

    async def open(self) -> None:
        for sink in self.sinks:
            await open_sink(sink)

    async def aclose(self) -> None:
        for sink in self.sinks:
            try:
                await close_sink(sink)
            except Exception:
                logger.exception("closing sink %s failed", sink.name)
