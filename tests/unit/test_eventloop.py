"""voxtra.eventloop: which loop `voxtra run` / `voxtra serve` start, and its errors."""

from __future__ import annotations

import asyncio
import sys
import warnings

import pytest

from voxtra import eventloop
from voxtra.config import SettingsError, VoxtraSettings
from voxtra.errors import ConfigError, VoxtraError


def _loop_module() -> str:
    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    return eventloop.run(which(), "auto")


def test_auto_runs_on_uvloop_when_it_is_installed() -> None:
    pytest.importorskip("uvloop")
    assert _loop_module().startswith("uvloop")
    assert eventloop.run(asyncio.sleep(0, "done"), "uvloop") == "done"


def test_asyncio_keeps_asyncios_own_loop() -> None:
    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert eventloop.loop_factory("asyncio") is None
    assert eventloop.run(which(), "asyncio").startswith("asyncio")


def test_without_uvloop_auto_falls_back_and_uvloop_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import fails as if not installed
    assert eventloop.loop_factory("auto") is None
    assert _loop_module().startswith("asyncio")
    with pytest.raises(ConfigError, match=r"voxtra\[speed\]") as info:
        eventloop.loop_factory("uvloop")
    assert isinstance(info.value, VoxtraError)
    # The coroutine handed to run() is closed, not left "never awaited".
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        coro = asyncio.sleep(0)
        with pytest.raises(ConfigError):
            eventloop.run(coro, "uvloop")
        assert coro.cr_frame is None  # closed


def test_an_unknown_choice_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'auto', 'asyncio' or 'uvloop'"):
        eventloop.loop_factory("trio")  # type: ignore[arg-type]


def test_the_setting_from_the_environment() -> None:
    assert VoxtraSettings.from_env({}).event_loop == "auto"
    assert VoxtraSettings.from_env({"VOXTRA_EVENT_LOOP": "asyncio"}).event_loop == "asyncio"
    with pytest.raises(SettingsError, match="VOXTRA_EVENT_LOOP"):
        VoxtraSettings.from_env({"VOXTRA_EVENT_LOOP": "tokio"})
