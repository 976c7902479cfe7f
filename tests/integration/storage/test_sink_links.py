"""Reading a delivered recording back from an object store, as the platform's recording
download does: S3 by a presigned URL (fetched here over plain HTTP, no credentials),
GCS through the sink; only locations in the sink's own bucket are ever read."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from voxtra.platform.api.calls import _remote
from voxtra.recording import RecordingMetadata, S3Sink
from voxtra.recording.gcs import GCSSink
from voxtra.testing.storage import SeaweedS3Server

pytestmark = pytest.mark.storage


async def test_s3_presigned_link_reads_the_object_and_nothing_else(
    seaweed: SeaweedS3Server, s3_bucket: str, make_wav: Callable[..., Path]
) -> None:
    path = make_wav(seconds=1.0)
    meta = RecordingMetadata.for_file(path, name="link-1", call_id="1700.9")
    async with S3Sink(
        s3_bucket,
        endpoint_url=seaweed.endpoint_url,
        region=seaweed.region,
        access_key=seaweed.access_key,
        secret_key=seaweed.secret_key,
    ) as sink:
        location = await sink.deliver(path, meta)
        url = await sink.link(location, expires=60)
        assert url is not None and "Signature=" in url  # signed, no credentials needed
        async with httpx.AsyncClient() as client:
            assert (await client.get(url)).content == path.read_bytes()
        assert await sink.link(f"s3://other-{s3_bucket}/x.wav") is None
        assert await sink.link("file:///etc/passwd") is None
        platform: Any = SimpleNamespace(app=SimpleNamespace(recording_sink=sink))
        response = await _remote(platform, [location], "wav")
        assert response is not None and response.status_code == 307
        assert response.headers["location"].startswith(seaweed.endpoint_url)


async def test_gcs_read_returns_the_object_and_nothing_else(
    fake_gcs: Any, gcs_bucket: str, make_wav: Callable[..., Path]
) -> None:
    path = make_wav(seconds=1.0)
    meta = RecordingMetadata.for_file(path, name="link-2", call_id="1700.10")
    async with GCSSink(gcs_bucket, emulator_host=fake_gcs.url) as sink:
        location = await sink.deliver(path, meta)
        assert await sink.read(location) == path.read_bytes()
        assert await sink.read(f"gs://other-{gcs_bucket}/x.wav") is None
        platform: Any = SimpleNamespace(app=SimpleNamespace(recording_sink=sink))
        response = await _remote(platform, location, "wav")
        assert response is not None and response.body == path.read_bytes()
