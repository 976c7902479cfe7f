"""Storage goes away during delivery; nothing is lost, and it all arrives when it returns."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from voxtra.recording import (
    Backoff,
    CompositeSink,
    GCSSink,
    RecordingDelivery,
    RecordingMetadata,
    S3Sink,
)
from voxtra.testing.storage import FakeGcsServer, SeaweedS3Server

pytestmark = pytest.mark.storage

FAST = Backoff(initial=0.05, multiplier=2.0, cap=0.2, jitter=0.2)


def _s3(server: SeaweedS3Server, bucket: str) -> S3Sink:
    return S3Sink(
        bucket,
        endpoint_url=server.endpoint_url,
        region=server.region,
        access_key=server.access_key,
        secret_key=server.secret_key,
    )


async def test_s3_down_spools_then_resume_delivers_identical_bytes(
    seaweed: SeaweedS3Server,
    s3_client: Any,
    s3_bucket: str,
    make_wav: Callable[..., Path],
    tmp_path: Path,
) -> None:
    src = make_wav(seconds=3.0)
    original_sha = hashlib.sha256(src.read_bytes()).hexdigest()
    spool = tmp_path / "spool"
    failed: list[BaseException] = []
    delivered: list[RecordingMetadata] = []

    seaweed.stop()
    try:
        delivery = RecordingDelivery(
            _s3(seaweed, s3_bucket),
            spool,
            retries=2,
            backoff=FAST,
            on_failed=lambda _m, e: failed.append(e),
            on_delivered=delivered.append,
        )
        meta = RecordingMetadata(name="outage-1", call_id="c-out", caller="300")
        await delivery.submit(src, meta, move=True)
        assert not await delivery.drain(timeout=60)  # waits for a slow retry
        await delivery.aclose()
    finally:
        seaweed.start()

    assert delivered == [] and len(failed) == 1
    assert "Could not connect" in str(failed[0]) or "connect" in str(failed[0]).lower()
    [entry] = await delivery.spooled()
    assert entry.exhausted and entry.attempts == 3 and entry.last_error
    assert entry.metadata.caller == "300" and entry.metadata.sha256 == original_sha
    assert not src.exists()  # moved: the spool holds the only copy now

    async with RecordingDelivery(
        _s3(seaweed, s3_bucket), spool, backoff=FAST, on_delivered=delivered.append
    ) as again:
        assert await again.resume() == 1
        assert await again.drain(timeout=60)
        assert await again.spooled() == []
    [meta] = delivered
    assert isinstance(meta.location, str)
    key = meta.location.removeprefix(f"s3://{s3_bucket}/")
    response = await s3_client.get_object(Bucket=s3_bucket, Key=key)
    async with response["Body"] as body:
        data = await body.read()
    assert hashlib.sha256(data).hexdigest() == original_sha


async def test_composite_s3_and_gcs_with_gcs_down(
    seaweed: SeaweedS3Server,
    s3_client: Any,
    s3_bucket: str,
    fake_gcs: FakeGcsServer,
    gcs_bucket: str,
    make_wav: Callable[..., Path],
    tmp_path: Path,
) -> None:
    src = make_wav(seconds=1.0)
    spool = tmp_path / "spool"

    def composite() -> CompositeSink:
        return CompositeSink(
            _s3(seaweed, s3_bucket), GCSSink(gcs_bucket, emulator_host=fake_gcs.url)
        )

    fake_gcs.stop()
    try:
        delivery = RecordingDelivery(composite(), spool, retries=1, backoff=FAST)
        await delivery.submit(src, RecordingMetadata(name="both-1", call_id="c-both"))
        assert not await delivery.drain(timeout=60)  # waits for a slow retry
        await delivery.aclose()
    finally:
        fake_gcs.start()
    [entry] = await delivery.spooled()
    assert entry.exhausted and set(entry.delivered) == {"s3"}
    assert "gcs" in (entry.last_error or "")

    # S3 already has it: remove it there to prove the retry does not upload it again.
    s3_key = entry.delivered["s3"].removeprefix(f"s3://{s3_bucket}/")
    await s3_client.delete_object(Bucket=s3_bucket, Key=s3_key)

    delivered: list[RecordingMetadata] = []
    async with RecordingDelivery(composite(), spool, on_delivered=delivered.append) as again:
        await again.resume()
        assert await again.drain(timeout=60)
    [meta] = delivered
    assert meta.location == [entry.delivered["s3"], f"gs://{gcs_bucket}/{s3_key}"]
    listing = await s3_client.list_objects_v2(Bucket=s3_bucket)
    assert listing.get("KeyCount", 0) == 0
