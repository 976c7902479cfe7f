"""One campaign worker process for the two-worker test (run as a script, not collected).

It runs a VoxtraApp on an in-process FakeAsterisk whose endpoints answer, are busy or do
not answer by their name (``PJSIP/answer-007``), and a SchedulingWorker against the
Postgres URL given, on a clock shared with the test (same origin and factor). Before each
originate it prints ``dial <attempt id>`` (``run <run id>`` for a schedule; flushed), so
the test can count, even for a process it killed, how often each attempt was dialed.

    python campaign_worker.py URL WORKER_ID ORIGIN FACTOR START_ISO SPOOL_DIR
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from voxtra import CallSession, VoxtraApp
from voxtra.platform.engine import ScaledClock, SchedulingWorker
from voxtra.platform.store.db import Database
from voxtra.routing import CallHandler
from voxtra.testing import FakeAsterisk

OUTCOMES = {"answer": "answer", "busy": "busy", "noanswer": "noanswer"}


class Outcomes(dict[str, str]):
    """The fake's per-endpoint outcome, from the endpoint's name."""

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        kind = key.split("/", 1)[-1].split("-", 1)[0]
        return OUTCOMES.get(kind, default)


class Tracing:
    """The app, printing each dial before it happens."""

    def __init__(self, app: VoxtraApp) -> None:
        self.app = app

    async def originate(
        self,
        endpoint: str,
        *,
        caller_id: str | None = None,
        timeout: int = 30,
        variables: Mapping[str, str] | None = None,
        handler: CallHandler | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Any:
        meta = metadata or {}
        if "run_id" in meta:
            print(f"run {meta['run_id']} {endpoint}", flush=True)
        else:
            print(f"dial {meta.get('attempt_id')} {endpoint}", flush=True)
        return await self.app.originate(
            endpoint,
            caller_id=caller_id,
            timeout=timeout,
            variables=variables,
            handler=handler,
            metadata=metadata,
        )


async def agent(call: CallSession) -> None:
    await asyncio.sleep(0.15)  # 3 s of the campaign's clock at 20x: calls overlap
    await call.hangup()


async def main(url: str, worker_id: str, origin: float, factor: float, start: str, spool: str):
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    fake = FakeAsterisk()
    fake.endpoint_outcomes = Outcomes()
    fake.dial_delay = 0.02
    app = VoxtraApp(
        "http://asterisk.invalid:8088",
        "user",
        "secret",
        app_name=f"campaign-{worker_id}",
        instance_id=worker_id,
        spool_dir=f"{spool}/{worker_id}/spool",
        recordings_dir=f"{spool}/{worker_id}/recordings",
    )
    db = Database(url)
    clock = ScaledClock(factor, origin=origin, start=datetime.fromisoformat(start))
    worker = SchedulingWorker(
        Tracing(app),
        db,
        routes=lambda name: agent,
        clock=clock,
        worker_id=worker_id,
        poll_interval=1.0,
        lease=60.0,  # 3 s of the test's time at 20x
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with fake.serve(app):
        await worker.start()
        print("ready", flush=True)
        await stop.wait()
        await worker.stop()
    await db.close()
    await fake.aclose()


if __name__ == "__main__":
    url, worker_id, origin, factor, start, spool = sys.argv[1:7]
    asyncio.run(main(url, worker_id, float(origin), float(factor), start, spool))
