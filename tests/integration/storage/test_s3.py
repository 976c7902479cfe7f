from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import voxtra.recording.s3 as s3_module
from voxtra.errors import ConfigError
from voxtra.recording import DeliveryError, RecordingMetadata, S3Sink
from voxtra.testing.storage import SeaweedS3Server

pytestmark = pytest.mark.storage

MiB = 1024 * 1024


def _sink(server: SeaweedS3Server, bucket: str, **kwargs: Any) -> S3Sink:
    return S3Sink(
        bucket,
        endpoint_url=server.endpoint_url,
        region=server.region,
        access_key=server.access_key,
        secret_key=server.secret_key,
        **kwargs,
    )


async def _download(client: Any, bucket: str, key: str) -> bytes:
    response = await client.get_object(Bucket=bucket, Key=key)
    async with response["Body"] as body:
        data: bytes = await body.read()
    return data


async def test_small_recording_single_put(
    seaweed: SeaweedS3Server, s3_client: Any, s3_bucket: str, make_wav: Callable[..., Path]
) -> None:
    path = make_wav(seconds=2.0)
    meta = RecordingMetadata.for_file(path, name="small-1", call_id="1700.1", caller="+100")
    async with _sink(seaweed, s3_bucket, prefix="voxtra") as sink:
        location = await sink.deliver(path, meta)
    key = sink.key_for(meta)
    assert key.startswith("voxtra/") and key.endswith("/1700.1/small-1.wav")
    assert location == f"s3://{s3_bucket}/{key}"
    data = await _download(s3_client, s3_bucket, key)
    assert hashlib.sha256(data).hexdigest() == meta.sha256
    head = await s3_client.head_object(Bucket=s3_bucket, Key=key)
    assert head["ContentType"] == "audio/wav"
    assert head["Metadata"]["sha256"] == meta.sha256
    assert head["Metadata"]["call-id"] == "1700.1"
    assert "-" not in head["ETag"].strip('"')  # a single PUT, not multipart


@pytest.mark.parametrize("caller", ["a\x01b", "a\nb", "a\rb", "a\tb"])
async def test_a_control_character_in_the_caller_does_not_block_delivery(
    seaweed: SeaweedS3Server,
    s3_client: Any,
    s3_bucket: str,
    make_wav: Callable[..., Path],
    caller: str,
) -> None:
    # The caller goes into a user-metadata header: "\x01", "\n" and "\r" made the HTTP
    # client refuse every attempt, so the recording stayed spooled for ever.
    path = make_wav()
    meta = RecordingMetadata.for_file(path, name="ctl-1", call_id="c-ctl", caller=caller)
    async with _sink(seaweed, s3_bucket) as sink:
        location = await sink.deliver(path, meta)
    key = sink.key_for(meta)
    assert location == f"s3://{s3_bucket}/{key}"
    head = await s3_client.head_object(Bucket=s3_bucket, Key=key)
    assert head["Metadata"]["caller"] == "a?b"
    assert head["Metadata"]["sha256"] == meta.sha256


async def test_large_recording_goes_multipart(
    seaweed: SeaweedS3Server,
    s3_client: Any,
    s3_bucket: str,
    make_big_wav: Callable[[int], Path],
) -> None:
    path = make_big_wav(11 * MiB)
    meta = RecordingMetadata.for_file(path, name="big-1", call_id="c2")
    async with _sink(seaweed, s3_bucket, multipart_threshold=5 * MiB, part_size=5 * MiB) as sink:
        location = await sink.deliver(path, meta)
    key = sink.key_for(meta)
    assert location == f"s3://{s3_bucket}/{key}"
    head = await s3_client.head_object(Bucket=s3_bucket, Key=key)
    assert head["ContentLength"] == 11 * MiB
    assert head["ETag"].strip('"').endswith("-3")  # three parts: 5 + 5 + 1 MiB
    data = await _download(s3_client, s3_bucket, key)
    assert (
        hashlib.sha256(data).hexdigest()
        == meta.sha256
        == hashlib.sha256(path.read_bytes()).hexdigest()
    )
    uploads = await s3_client.list_multipart_uploads(Bucket=s3_bucket)
    assert uploads.get("Uploads", []) == []


async def test_failed_multipart_upload_is_aborted(
    seaweed: SeaweedS3Server,
    s3_client: Any,
    s3_bucket: str,
    make_big_wav: Callable[[int], Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = make_big_wav(11 * MiB)
    meta = RecordingMetadata.for_file(path, name="big-2", call_id="c3")
    reads = 0
    real_read = s3_module._read

    def failing_read(handle: Any, size: int) -> bytes:
        nonlocal reads
        reads += 1
        if reads == 2:
            raise OSError("disk went away")
        return real_read(handle, size)

    monkeypatch.setattr(s3_module, "_read", failing_read)
    async with _sink(seaweed, s3_bucket, multipart_threshold=5 * MiB, part_size=5 * MiB) as sink:
        with pytest.raises(DeliveryError, match="disk went away"):
            await sink.deliver(path, meta)
    uploads = await s3_client.list_multipart_uploads(Bucket=s3_bucket)
    assert uploads.get("Uploads", []) == []
    listing = await s3_client.list_objects_v2(Bucket=s3_bucket)
    assert listing.get("KeyCount", 0) == 0


async def test_missing_bucket_is_a_delivery_error(
    seaweed: SeaweedS3Server, make_wav: Callable[..., Path]
) -> None:
    path = make_wav()
    meta = RecordingMetadata.for_file(path, name="nobucket", call_id="c")
    async with _sink(seaweed, "no-such-bucket-here") as sink:
        with pytest.raises(DeliveryError, match="s3: upload of s3://no-such-bucket-here/"):
            await sink.deliver(path, meta)


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ConfigError, match="5 MiB"):
        S3Sink("b", part_size=MiB)
    with pytest.raises(ConfigError, match="both"):
        S3Sink("b", access_key="x")
    with pytest.raises(ConfigError, match="prefix"):
        S3Sink("b", prefix="a/../b")
