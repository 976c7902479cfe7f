"""S3Sink when the store goes away in the middle of a multipart upload, on a private
SeaweedFS (module scope): stopping it must not disturb the session's shared server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import voxtra.recording.s3 as s3_module
from voxtra.recording import DeliveryError, RecordingMetadata, S3Sink
from voxtra.testing.storage import SeaweedS3Server, StorageServerUnavailable

pytestmark = pytest.mark.storage

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def own_seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3Server]:
    try:
        server = SeaweedS3Server(tmp_path_factory.mktemp("seaweed"))
    except StorageServerUnavailable as exc:
        pytest.skip(str(exc))
    with server:
        yield server


@pytest.fixture
async def own_client(own_seaweed: SeaweedS3Server) -> AsyncIterator[Any]:
    from aiobotocore.session import get_session

    async with get_session().create_client(
        "s3",
        endpoint_url=own_seaweed.endpoint_url,
        region_name=own_seaweed.region,
        aws_access_key_id=own_seaweed.access_key,
        aws_secret_access_key=own_seaweed.secret_key,
    ) as client:
        yield client


async def test_parts_left_by_an_upload_the_outage_cut_short_are_aborted_once_delivered(
    own_seaweed: SeaweedS3Server,
    own_client: Any,
    make_big_wav: Callable[[int], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The store goes down after the first part: the upload fails, and so does its abort
    # (the store is down), which left the upload open, its parts billed, for good.
    bucket = "outage-parts"
    await own_client.create_bucket(Bucket=bucket)
    path = make_big_wav(11 * MiB)
    meta = RecordingMetadata.for_file(path, name="big-outage", call_id="c-outage")
    real_read = s3_module._read
    reads = 0

    def read_then_stop_the_store(handle: Any, size: int) -> bytes:
        nonlocal reads
        reads += 1
        if reads == 2:
            own_seaweed.stop()
        return real_read(handle, size)

    monkeypatch.setattr(s3_module, "_read", read_then_stop_the_store)
    sink = S3Sink(
        bucket,
        endpoint_url=own_seaweed.endpoint_url,
        region=own_seaweed.region,
        access_key=own_seaweed.access_key,
        secret_key=own_seaweed.secret_key,
        multipart_threshold=5 * MiB,
        part_size=5 * MiB,
    )
    async with sink:
        try:
            with pytest.raises(DeliveryError, match="upload of s3://outage-parts/"):
                await sink.deliver(path, meta)
        finally:
            own_seaweed.start()
        left = await own_client.list_multipart_uploads(Bucket=bucket)
        assert [u["Key"] for u in left.get("Uploads", [])] == [sink.key_for(meta)]
        monkeypatch.setattr(s3_module, "_read", real_read)
        location = await sink.deliver(path, meta)  # the delivery's retry, the store back
    assert location == f"s3://{bucket}/{sink.key_for(meta)}"
    uploads = await own_client.list_multipart_uploads(Bucket=bucket)
    assert uploads.get("Uploads", []) == []
    head = await own_client.head_object(Bucket=bucket, Key=sink.key_for(meta))
    assert head["ContentLength"] == 11 * MiB and head["Metadata"]["sha256"] == meta.sha256
