"""Recording delivery: names, metadata, sinks (local, S3, GCS, composite) and a durable spool.

``S3Sink`` and ``GCSSink`` live in :mod:`voxtra.recording.s3` / :mod:`voxtra.recording.gcs`
and are imported lazily here, so their optional SDKs are only needed when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from voxtra.recording.delivery import Backoff, DeliveredHook, FailedHook, RecordingDelivery
from voxtra.recording.metadata import (
    FileFacts,
    InvalidRecordingMetadata,
    RecordingMetadata,
    measure_file,
    parse_wav_header,
)
from voxtra.recording.naming import (
    SUPPORTED_FORMATS,
    AudioFormat,
    InvalidRecordingName,
    generate_recording_name,
    validate_format,
    validate_recording_name,
)
from voxtra.recording.sinks import (
    DEFAULT_KEY_TEMPLATE,
    CompositeDeliveryError,
    CompositeSink,
    DeliveryError,
    LocalFileSink,
    RecordingSink,
    render_key,
)
from voxtra.recording.spool import Spool, SpoolEntry

if TYPE_CHECKING:
    from voxtra.recording.gcs import GCSSink
    from voxtra.recording.s3 import S3Sink

__all__ = [
    "DEFAULT_KEY_TEMPLATE",
    "SUPPORTED_FORMATS",
    "AudioFormat",
    "Backoff",
    "CompositeDeliveryError",
    "CompositeSink",
    "DeliveredHook",
    "DeliveryError",
    "FailedHook",
    "FileFacts",
    "GCSSink",
    "InvalidRecordingMetadata",
    "InvalidRecordingName",
    "LocalFileSink",
    "RecordingDelivery",
    "RecordingMetadata",
    "RecordingSink",
    "S3Sink",
    "Spool",
    "SpoolEntry",
    "generate_recording_name",
    "measure_file",
    "parse_wav_header",
    "render_key",
    "validate_format",
    "validate_recording_name",
]


def __getattr__(name: str) -> Any:
    if name == "S3Sink":
        from voxtra.recording.s3 import S3Sink

        return S3Sink
    if name == "GCSSink":
        from voxtra.recording.gcs import GCSSink

        return GCSSink
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
