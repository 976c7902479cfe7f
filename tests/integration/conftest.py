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


@pytest.fixture(scope="module")
async def local() -> AsyncIterator[Any]:
    """One llama-server for the module (the local LLM's tests), started with the demo's
    prompt head."""
    from local_llm_setup import TOOLS, assistant

    from voxtra.local import LocalLLM
    from voxtra.pipeline import tool_spec
    from voxtra.testing.asterisk import AsteriskSandbox

    llm = LocalLLM()
    llm.prepare(AsteriskSandbox().tarball)  # cached by scripts/bootstrap
    await llm.start(system_prompt=assistant.SYSTEM_PROMPT, tools=[tool_spec(t).spec for t in TOOLS])
    try:
        yield llm
    finally:
        await llm.aclose()
    assert not llm.server.running
