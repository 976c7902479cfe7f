"""Fixtures shared by the integration tests that use S3 (SeaweedFS).

Each directory provides its own ``seaweed`` server fixture (the recording tests stop
theirs to simulate an outage, so it must not be the storage tests' one).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest


@pytest.fixture
async def s3_client(seaweed: Any) -> AsyncIterator[Any]:
    """A plain aiobotocore client, to set up buckets and read back what a sink stored."""
    from aiobotocore.session import get_session

    async with get_session().create_client(
        "s3",
        endpoint_url=seaweed.endpoint_url,
        region_name=seaweed.region,
        aws_access_key_id=seaweed.access_key,
        aws_secret_access_key=seaweed.secret_key,
    ) as client:
        yield client


@pytest.fixture
async def s3_bucket(s3_client: Any) -> str:
    name = f"rec-{uuid.uuid4().hex[:12]}"
    await s3_client.create_bucket(Bucket=name)
    return name
