"""A VoxtraApp in its own OS process, driven by test_lifecycle.py through stdin/stdout.

Usage: python _peer_app.py ARI_URL USER PASSWORD APP_NAME

Prints one JSON object per line: {"kind": "ready"}, {"kind": "call", "id": ...} when its
handler answers a call, {"kind": "log", ...} for each voxtra WARNING/ERROR record, and
{"kind": "stopped"}. Reads a line from stdin, then stops the app and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
from typing import Any

from voxtra import CallSession
from voxtra.app import VoxtraApp
from voxtra.errors import CallEnded


def out(kind: str, **fields: Any) -> None:
    print(json.dumps({"kind": kind, **fields}), flush=True)


class Relay(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        out("log", level=record.levelname, message=record.getMessage())


async def main(url: str, user: str, password: str, app_name: str) -> None:
    logging.getLogger("voxtra").addHandler(Relay(logging.WARNING))
    app = VoxtraApp(url, user, password, app_name, environ={}, handler_deadline=1.0)
    app.takeover_poll = 0.5

    @app.default
    async def handler(call: CallSession) -> None:
        await call.answer()
        out("call", id=call.id)
        with contextlib.suppress(CallEnded):
            await call.listen_dtmf(timeout=300)

    await app.start()
    out("ready", instance=app.instance_id)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await app.stop()
    out("stopped")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
