"""A provider wait's deadline on the real clock (a cancel scope, not a timer task):
the answer, the provider's own error, or _Expired in time. (The virtual clock's timer
task is what the pipeline tests on MemoryMediaIO run through.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from voxtra.pipeline.pipeline import VoicePipeline, _Expired


async def _value() -> int:
    await asyncio.sleep(0.01)
    return 7


async def _empty() -> AsyncIterator[int]:
    if False:
        yield 0


async def test_answer_error_and_deadline_on_the_real_clock() -> None:
    pipeline = VoicePipeline()
    assert await pipeline._within(1.0, "token", _value()) == 7
    with pytest.raises(StopAsyncIteration):
        await pipeline._within(1.0, "token", _empty().__anext__())
    started = time.monotonic()
    with pytest.raises(_Expired, match=r"no chunk within 0\.05 s"):
        await pipeline._within(0.05, "chunk", asyncio.sleep(5))
    assert time.monotonic() - started < 2.0  # not the 5 s the provider would take
