"""Tests of ``examples/reminders.py`` against a real Asterisk (see test_hello.py).

The sandbox's ``voxtra-test`` dialplan plays the callees: ``dtmf`` answers and presses
``${DIGITS}`` (the example passes 1), ``busy`` and ``congestion`` never answer.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from voxtra import VoxtraApp
from voxtra.testing.pytest_plugin import AsteriskTarget

pytestmark = pytest.mark.asterisk


def load_example(name: str) -> ModuleType:
    path = Path(__file__).resolve().parents[1] / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_each_reminder_call_has_its_outcome(asterisk: AsteriskTarget) -> None:
    reminders = load_example("reminders")
    endpoints = [
        "Local/dtmf@voxtra-test",
        "Local/busy@voxtra-test",
        "Local/congestion@voxtra-test",
    ]
    async with VoxtraApp(asterisk.ari_url, asterisk.username, asterisk.password) as app:
        outcomes = await reminders.send_reminders(app, endpoints)
    assert outcomes["Local/dtmf@voxtra-test"] == "confirmed"
    assert outcomes["Local/busy@voxtra-test"] == "busy"
    assert outcomes["Local/congestion@voxtra-test"].startswith("failed: ")
