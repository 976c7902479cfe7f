"""A call the app's ``stop()`` gives up on (its teardown stuck) is still recorded ended
in the platform's store, against the real Asterisk sandbox.

The platform records a call's end through ``app.on_call_end`` (its recorder). Those
hooks used to be skipped when the call was cancelled while it waited for its
teardown, as ``stop()`` does once ``teardown_timeout`` is up: the call's row stayed
"in_progress" for ever. The teardown is held by an ``on_hangup`` callback that never
returns (as a recording fetch that never answers would).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from voxtra import CallSession
from voxtra.app import VoxtraApp
from voxtra.platform.serve import PlatformServer
from voxtra.platform.store.db import Database
from voxtra.platform.store.repository import CallStore

if TYPE_CHECKING:
    from voxtra.testing.pytest_plugin import AsteriskTarget

pytestmark = pytest.mark.asterisk


async def test_a_call_whose_teardown_stop_gives_up_on_is_recorded_ended(
    asterisk: AsteriskTarget, tmp_path: Path
) -> None:
    app = VoxtraApp(
        asterisk.ari_url,
        asterisk.username,
        asterisk.password,
        f"voxtra-platform-end-{uuid.uuid4().hex[:8]}",
        environ={},
        handler_deadline=0.5,
        recordings_dir=str(tmp_path / "recordings"),
        spool_dir=str(tmp_path / "spool"),
        platform={"tokens": [{"name": "it", "token": "integration-token-0123456789"}]},
    )
    app.teardown_timeout = 0.5
    holding = asyncio.Event()

    async def hold(call: CallSession) -> None:
        @call.on_hangup
        async def fetch_forever(c: CallSession) -> None:
            await asyncio.Event().wait()

        holding.set()
        await call.wait_ended()

    database_url = f"sqlite:///{tmp_path}/platform.db"
    server = PlatformServer(app, database_url=database_url, port=0)
    await server.start()
    try:
        call = await app.originate("Local/answer@voxtra-test", handler=hold, timeout=10)
        async with asyncio.timeout(10):
            await holding.wait()
        await server.platform.recorder.flush()
        live = await server.platform.store.by_channel(call.id)
        assert live is not None and live.status == "in_progress"
    finally:
        async with asyncio.timeout(30):  # stop() is bounded: this never fires
            await server.stop()
    db = Database(database_url)
    try:
        row = await CallStore(db).by_channel(call.id)
    finally:
        await db.close()
    assert row is not None
    assert (row.status, row.end_reason) == ("completed", "shutdown")
    assert row.ended_at is not None
