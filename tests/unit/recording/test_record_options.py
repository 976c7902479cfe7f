"""Checks of the record-until options that need no Asterisk (issue 14, item 4)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from voxtra.calls.control import RecordOptions
from voxtra.calls.recorder import CallRecorder, _limit_reason, _Recording
from voxtra.errors import RecordingError
from voxtra.recording.naming import validate_format


@pytest.mark.parametrize("keys", ["x", "1#p", "w"])
async def test_bad_finish_keys_fail_before_any_request(keys: str) -> None:
    session: Any = SimpleNamespace(id="call-1")  # no app: any request would fail otherwise
    with pytest.raises(RecordingError, match="finish_on_key must be DTMF keys"):
        await CallRecorder(session).start(RecordOptions("rec-1", finish_on_key=keys))


def _ended(ran: float | None, **limits: Any) -> _Recording:
    loop = asyncio.new_event_loop()
    try:
        active = _Recording(
            "rec-1", validate_format("wav"), "channel:x", None, loop.create_future()
        )
    finally:
        loop.close()
    active.max_duration = limits.get("max_duration")
    active.max_silence = limits.get("max_silence")
    active.started_mono = 100.0
    active.finished_mono = None if ran is None else 100.0 + ran
    return active


@pytest.mark.parametrize(
    ("ran", "limits", "reason"),
    [
        (2.6, {"max_duration": 2}, "max_length"),
        (2.6, {"max_duration": 2, "max_silence": 3}, "max_length"),
        (3.4, {"max_duration": 30, "max_silence": 3}, "silence_timeout"),
        (3.4, {"max_silence": 3}, "silence_timeout"),
        (None, {"max_duration": 2}, "hangup"),  # it ended with the call
        (1.0, {}, "hangup"),
    ],
)
def test_which_limit_ended_it(ran: float | None, limits: dict[str, int], reason: str) -> None:
    assert _limit_reason(_ended(ran, **limits)) == reason
