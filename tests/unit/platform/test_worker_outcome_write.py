"""How long a worker tries to write a call's outcome: for as long as the database is
away, but not for ever for a failure that is no outage."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from voxtra.platform.engine.worker import SchedulingWorker


@pytest.fixture
def no_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    return waits


async def test_an_outage_is_waited_out_however_long(no_waits: list[float]) -> None:
    failures = 12

    async def write() -> str:
        nonlocal failures
        if failures:
            failures -= 1
            raise OperationalError("UPDATE ...", {}, ConnectionRefusedError("refused"))
        return "written"

    worker = SimpleNamespace(worker_id="w-1")
    assert await SchedulingWorker._write(worker, write) == "written"  # type: ignore[arg-type]
    assert no_waits == [0.5, 1.0, 2.0, 4.0] + [8.0] * 8


async def test_a_failure_that_is_no_outage_is_given_up_after_five_tries(
    no_waits: list[float],
) -> None:
    tries = 0

    async def write() -> str:
        nonlocal tries
        tries += 1
        raise IntegrityError("UPDATE ...", {}, ValueError("duplicate key"))

    worker = SimpleNamespace(worker_id="w-1")
    assert await SchedulingWorker._write(worker, write) is None  # type: ignore[arg-type]
    assert tries == 5 and len(no_waits) == 4
