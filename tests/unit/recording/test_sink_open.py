"""Storage clients are made when a sink is added (app start, add_sink), not by the
first upload: S3's stalled the event loop 109-141 ms, under every live call's audio
(figures in voxtra/recording/s3.py). Structural checks only: which calls, in which order.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

from voxtra.ari.client import AriClient
from voxtra.recording import (
    CompositeSink,
    GCSSink,
    LocalFileSink,
    RecordingDelivery,
    RecordingMetadata,
    S3Sink,
)
from voxtra.recording.app_recordings import AppRecordings


class OpeningSink:
    """Records the order of open() and deliver() calls."""

    def __init__(self, directory: Path, name: str) -> None:
        self.inner = LocalFileSink(directory, name=name)
        self.calls: list[str] = []

    @property
    def name(self) -> str:
        return self.inner.name

    async def open(self) -> None:
        self.calls.append("open")

    async def deliver(self, path: Path, meta: RecordingMetadata) -> str:
        self.calls.append("deliver")
        return await self.inner.deliver(path, meta)


def _s3() -> S3Sink:
    # Nothing listens there: making the client must not need the network.
    return S3Sink(
        "bucket",
        endpoint_url="http://127.0.0.1:9",
        region="us-east-1",
        access_key="key",
        secret_key="secret",
    )


def _no_ari() -> AriClient:
    # With nothing journaled or marked, resume() and add_sink() do not ask Asterisk.
    return cast(AriClient, object())


async def test_app_start_opens_the_default_sink_before_any_upload(tmp_path: Path) -> None:
    sink = OpeningSink(tmp_path / "out", "default")
    recordings = AppRecordings(_no_ari(), sink, tmp_path / "spool")
    assert sink.calls == []
    await recordings.resume()  # what VoxtraApp.start() calls
    assert sink.calls == ["open"]
    await recordings.resume()
    assert sink.calls == ["open"]  # once
    await recordings.aclose()


async def test_add_sink_opens_it_before_any_upload(tmp_path: Path) -> None:
    default = OpeningSink(tmp_path / "out", "default")
    extra = OpeningSink(tmp_path / "extra", "extra")
    recordings = AppRecordings(_no_ari(), default, tmp_path / "spool")
    await recordings.resume()
    await recordings.add_sink(extra)
    assert extra.calls == ["open"]
    await recordings.aclose()


async def test_s3_and_gcs_clients_are_made_when_the_delivery_resumes(tmp_path: Path) -> None:
    s3 = _s3()
    gcs = GCSSink("bucket", emulator_host="http://127.0.0.1:9")
    delivery = RecordingDelivery(CompositeSink(s3, gcs), tmp_path / "spool")
    assert s3._client is None and gcs._storage is None
    await delivery.resume()
    assert s3._client is not None and gcs._storage is not None
    await delivery.aclose()
    assert s3._client is None and gcs._storage is None  # closed with the delivery


async def test_s3_sink_in_the_app_has_its_client_before_calls(tmp_path: Path) -> None:
    s3 = _s3()
    recordings = AppRecordings(_no_ari(), s3, tmp_path / "spool")
    await recordings.resume()
    assert s3._client is not None
    await recordings.aclose()
