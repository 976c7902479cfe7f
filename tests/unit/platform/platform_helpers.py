"""Helpers of the platform tests: tokens, settings, an app, a started platform."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from voxtra.app import VoxtraApp
from voxtra.calls.session import CallSession
from voxtra.platform.platform import Platform
from voxtra.testing import FakeAsterisk

READ = "read-token-0123456789abcdef"
WRITE = "write-token-0123456789abcdef"
ADMIN = "admin-token-0123456789abcdef"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def platform_settings(**overrides: Any) -> dict[str, Any]:
    return {
        "tokens": [
            {"name": "reader", "token": READ, "scopes": ["calls:read"]},
            {"name": "writer", "token": WRITE, "scopes": ["calls:read", "calls:write"]},
            {"name": "ops", "token": ADMIN, "scopes": ["admin"]},
        ],
        "local_contexts": ["sandbox"],
        "number_template": "PJSIP/{number}@trunk",
        **overrides,
    }


def build_app(tmp_path: Path, **options: Any) -> VoxtraApp:
    platform = platform_settings(**options.pop("platform", {}))
    return VoxtraApp(
        "http://asterisk.invalid:8088",
        "user",
        "secret",
        app_name=options.pop("app_name", "platform-tests"),
        instance_id=options.pop("instance_id", "unit"),
        spool_dir=str(tmp_path / "spool"),
        recordings_dir=str(tmp_path / "recordings"),
        platform=platform,
        **options,
    )


@dataclass
class Running:
    app: VoxtraApp
    fake: FakeAsterisk
    platform: Platform
    client: httpx.AsyncClient
    handled: list[CallSession]

    async def settle(self) -> None:
        """Every store write queued so far is done."""
        await self.platform.recorder.flush()

    async def wait_status(self, call_id: str, *statuses: str, timeout: float = 10.0) -> Any:
        """The call's record once its status is one of ``statuses``."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        call = None
        while loop.time() < end:
            await self.settle()
            call = await self.platform.store.get(call_id)
            if call is not None and call.status in statuses:
                return call
            await asyncio.sleep(0.02)
        raise AssertionError(f"call {call_id} is {call.status if call else None}, not {statuses}")
