"""Object storage down for the whole of 20 concurrent recorded calls, then back.

The S3 server (SeaweedFS) is this module's own: the test stops it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from voxtra.recording import Backoff, RecordingMetadata, S3Sink
from voxtra.testing.faults import storage_outage
from voxtra.testing.pytest_plugin import AsteriskTarget
from voxtra.testing.storage import SeaweedS3Server, StorageServerUnavailable

pytestmark = [pytest.mark.faults, pytest.mark.asterisk, pytest.mark.storage]

CALLS = 20


@pytest.fixture(scope="module")
def seaweed() -> Iterator[SeaweedS3Server]:
    try:
        server = SeaweedS3Server()
    except StorageServerUnavailable as exc:
        pytest.skip(str(exc))
    with server:
        yield server


async def test_storage_down_for_all_calls_then_back_delivers_each_exactly_once(
    asterisk: AsteriskTarget,
    tmp_path: Path,
    seaweed: SeaweedS3Server,
    s3_client: Any,
    s3_bucket: str,
) -> None:
    if asterisk.sandbox is None:
        pytest.skip("needs the Asterisk sandbox")
    sink = S3Sink(
        s3_bucket,
        prefix="outage",
        endpoint_url=seaweed.endpoint_url,
        region=seaweed.region,
        access_key=seaweed.access_key,
        secret_key=seaweed.secret_key,
    )

    async def in_bucket(name: str, meta: RecordingMetadata) -> bool:
        key = str(meta.location).removeprefix(f"s3://{s3_bucket}/")
        response = await s3_client.get_object(Bucket=s3_bucket, Key=key)
        async with response["Body"] as body:
            data = await body.read()
        return hashlib.sha256(data).hexdigest() == meta.sha256 and len(data) == meta.size_bytes

    report = await storage_outage(
        asterisk.sandbox,
        seaweed,
        sink,
        calls=CALLS,
        workdir=str(tmp_path),
        check_object=in_bucket,
    )
    print(report)
    assert report.errors == []
    assert report.recorded == CALLS
    # Every recording was spooled while storage was down (it comes back only after the
    # last record_stop returned), and uploads really failed meanwhile.
    assert report.failed_attempts >= 1
    assert report.delivered == CALLS, report
    assert report.delivered_twice == []
    assert report.in_bucket == CALLS
    assert report.still_spooled == 0
    objects = await s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="outage/")
    assert len(objects.get("Contents", [])) == CALLS  # one object each, no duplicates


async def test_outage_longer_than_the_fast_retries_is_delivered_without_a_restart(
    asterisk: AsteriskTarget,
    tmp_path: Path,
    seaweed: SeaweedS3Server,
    s3_client: Any,
    s3_bucket: str,
) -> None:
    """Every recording runs out of its fast retries while S3 is down; the same app
    (no restart, no resume()) delivers each exactly once after S3 is back."""
    if asterisk.sandbox is None:
        pytest.skip("needs the Asterisk sandbox")
    sink = S3Sink(
        s3_bucket,
        prefix="outage-slow",
        endpoint_url=seaweed.endpoint_url,
        region=seaweed.region,
        access_key=seaweed.access_key,
        secret_key=seaweed.secret_key,
    )
    report = await storage_outage(
        asterisk.sandbox,
        seaweed,
        sink,
        calls=CALLS,
        workdir=str(tmp_path),
        # Small so the test is short; the default slow backoff is 15-60 s apart.
        retries=1,
        backoff=Backoff(initial=0.05, cap=0.1),
        slow_backoff=Backoff(initial=1.0, cap=2.0),
        outlast_retries=True,
    )
    print(report)
    assert report.errors == []
    assert report.recorded == CALLS
    # Before S3 came back every recording had run out of its fast retries (the old
    # code left all of them for the next start).
    assert report.past_fast_retries == CALLS, report
    assert report.delivered == CALLS, report
    assert report.delivered_twice == []
    assert report.still_spooled == 0
    objects = await s3_client.list_objects_v2(Bucket=s3_bucket, Prefix="outage-slow/")
    assert len(objects.get("Contents", [])) == CALLS
