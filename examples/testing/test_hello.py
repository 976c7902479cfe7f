"""Tests of ``examples/hello.py`` against a real Asterisk, through real calls.

    pytest examples/testing        # starts the sandbox, or uses VOXTRA_ARI_URL's Asterisk

The ``asterisk`` fixture (from ``voxtra.testing.pytest_plugin``, enabled in conftest.py)
says where Asterisk is; each test builds the app on it with the example's handler, and
calls it from a Local channel whose far end the sandbox's ``voxtra-test`` dialplan plays.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType

import pytest

from voxtra import CallEndReason, CallSession, VoxtraApp
from voxtra.testing.local_caller import place_local_call
from voxtra.testing.pytest_plugin import AsteriskTarget

# Voxtra's own suite selects tests by this marker; register it in your project's pytest
# configuration (markers = ["asterisk: ..."]) or drop this line.
pytestmark = pytest.mark.asterisk


def load_example(name: str) -> ModuleType:
    path = Path(__file__).resolve().parents[1] / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --8<-- [start:fixture]
@pytest.fixture
def played() -> list[str]:
    return []


@pytest.fixture
async def app(asterisk: AsteriskTarget, played: list[str]) -> AsyncIterator[VoxtraApp]:
    """The example's handler on an app connected to the test Asterisk."""
    hello = load_example("hello")
    app = VoxtraApp(asterisk.ari_url, asterisk.username, asterisk.password)

    @app.default
    async def spied(call: CallSession) -> None:
        # Note each prompt the handler plays, then run the handler itself.
        play_and_wait = call.play_and_wait

        async def spy(name: str, timeout: float | None = None) -> None:
            played.append(name)
            await play_and_wait(name, timeout)

        call.play_and_wait = spy  # type: ignore[method-assign]
        await hello.hello(call)

    async with app:  # start(), and stop() after the test
        yield app


async def wait_for_session(app: VoxtraApp, call_id: str) -> CallSession:
    for _ in range(100):
        session = app.get_session(call_id)
        if session is not None:
            return session
        await asyncio.sleep(0.1)
    raise AssertionError(f"call {call_id} never reached the app")


# --8<-- [end:fixture]


# --8<-- [start:tests]
async def test_the_digit_pressed_is_read_back(app: VoxtraApp, played: list[str]) -> None:
    # The far end answers, waits a second, then presses 7 (``dtmf`` in voxtra-test).
    caller = await place_local_call(app.ari, "100", behaviour="dtmf", variables={"DIGITS": "7"})
    call = await wait_for_session(app, caller.call_id)
    await call.wait_ended(timeout=30)  # the handler hangs up by itself
    assert played == ["hello-world", "digits/7", "vm-goodbye"]
    assert call.end_reason == CallEndReason.HANGUP  # the app hung up, not the caller


async def test_a_caller_who_hangs_up_during_the_greeting(app: VoxtraApp, played: list[str]) -> None:
    caller = await place_local_call(
        app.ari, "100", behaviour="hangup-after", variables={"WAIT": "0.5"}
    )
    call = await wait_for_session(app, caller.call_id)
    await call.wait_ended(timeout=30)
    assert played == ["hello-world"]  # CallEnded ended the handler there
    assert call.end_reason == CallEndReason.REMOTE


# --8<-- [end:tests]
