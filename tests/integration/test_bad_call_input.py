"""Bad input to a call's methods, against the real Asterisk: a typed error where
Asterisk refuses it or would lose the caller, the documented outcome where it does not.

Each test makes an app with a Stasis name of its own and originates
``Local/<exten>@voxtra-test`` into it (the sandbox is shared).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import uuid
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
import pytest

from voxtra import CallEndReason, CallSession, ConfigError, InvalidTransferTarget
from voxtra.app import VoxtraApp
from voxtra.ari.client import AriClient
from voxtra.ari.errors import AriError, AriNotFound
from voxtra.ari.events import AriEvent
from voxtra.ari.stream import AriEventStream
from voxtra.testing.audio import rms_dbfs

pytestmark = pytest.mark.asterisk

MakeApp = Callable[..., Awaitable[VoxtraApp]]


def _app_name() -> str:
    return f"voxtra-bad-input-{uuid.uuid4().hex[:8]}"


async def _run(app: VoxtraApp, handler: Callable[[CallSession], Awaitable[None]]) -> CallSession:
    """Originate a silent far end into ``app`` with ``handler``; returns once it ended."""
    session = await app.originate("Local/answer@voxtra-test", handler=handler, timeout=10)
    await session.wait_ended(20)
    return session


async def test_a_transfer_to_a_dialplan_place_that_does_not_exist_keeps_the_caller(
    make_app: MakeApp, ari: AriClient
) -> None:
    """Asterisk 22 answers 204 to a continue into a context, extension or priority its
    dialplan lacks and hangs the caller up (cause 0): the handler saw a transfer that
    had worked. Now each is InvalidTransferTarget and the caller is still there; blanks
    are filled in as ARI does (no context: the channel's, here voxtra-test; a context
    alone: its "s"), patterns match, and a place that exists is still reached."""
    app = await make_app(app_name=_app_name())
    reasons: dict[str, str] = {}
    after: dict[str, Any] = {}

    async def handler(call: CallSession) -> None:
        for target in (
            "nope@voxtra-test",
            "echo@voxtra-nowhere",
            "echo@voxtra-test:9",
            "@voxtra-test",
            "nope",
            "echo@voxtra-test:first",
            "",
        ):
            with pytest.raises(InvalidTransferTarget) as caught:
                await call.transfer_to(target)
            assert isinstance(caught.value, ConfigError) and caught.value.target == target
            reasons[target] = caught.value.reason
        after["kept"] = (call.transferred, call.ended, await call.get_variable("CHANNEL(state)"))
        await call.transfer_to("echo@voxtra-test:1")
        after["transferred"] = call.transferred

    session = await _run(app, handler)
    try:
        assert reasons == {
            "nope@voxtra-test": "the dialplan context 'voxtra-test' has no extension 'nope'",
            "echo@voxtra-nowhere": "Asterisk's dialplan has no context 'voxtra-nowhere'",
            "echo@voxtra-test:9": (
                "the extension 'echo' of the dialplan context 'voxtra-test' has no priority 9"
            ),
            "@voxtra-test": "the dialplan context 'voxtra-test' has no extension 's'",
            "nope": "the dialplan context 'voxtra-test' has no extension 'nope'",
            "echo@voxtra-test:first": "the priority 'first' is not a number from 1",
            "": "names no extension or context (exten@context[:priority], or an endpoint)",
        }
        assert after == {"kept": (False, False, "Up"), "transferred": True}
        assert session.end_reason is CallEndReason.TRANSFERRED
        # The caller reached the place that exists: Echo() runs on its channel.
        channel = await ari.channels.get(session.id)
        assert (channel.dialplan.context, channel.dialplan.app_name) == ("voxtra-test", "Echo")
    finally:
        with contextlib.suppress(AriError):
            await ari.channels.hangup(session.id)


async def test_an_empty_variable_name_is_a_config_error_and_the_call_goes_on(
    make_app: MakeApp,
) -> None:
    """Asterisk 22 answers an empty name 400 "Variable name is required", which reached
    the handler as a raw AriBadRequest; now a ConfigError before anything is sent."""
    app = await make_app(app_name=_app_name())
    seen: dict[str, Any] = {}

    async def handler(call: CallSession) -> None:
        with pytest.raises(ConfigError, match=r"set_variable\(\) needs a variable name"):
            await call.set_variable("", "x")
        with pytest.raises(ConfigError, match=r"get_variable\(\) needs a variable name"):
            await call.get_variable("")
        # Asterisk takes any other name; a leading "__" marks inheritance, not the name.
        await call.set_variable("__VOXTRA_INHERITED", "yes")
        seen["inherited"] = await call.get_variable("VOXTRA_INHERITED")
        seen["alive"] = (call.ended, await call.get_variable("CHANNEL(state)"))

    await _run(app, handler)
    assert seen == {"inherited": "yes", "alive": (False, "Up")}


async def test_an_unknown_music_on_hold_class_plays_the_default_music(
    make_app: MakeApp, ari: AriClient
) -> None:
    """What hold()'s docstring says: ARI answers 204 for a class Asterisk does not have
    and plays the default class, so there is no error to raise. What the channel is sent
    is recorded through a snoop (spy "out") in a Stasis app of the test's own."""
    app = await make_app(app_name=_app_name())
    levels: dict[str, float] = {}

    async def handler(call: CallSession) -> None:
        async with _snooping(ari) as record_sent:
            levels["before"] = await record_sent(call.id)
            await call.hold("voxtra-no-such-class")
            levels["unknown class"] = await record_sent(call.id)

    await _run(app, handler)
    assert levels["before"] < -80.0, levels
    assert levels["unknown class"] > -40.0, levels


@contextlib.asynccontextmanager
async def _snooping(ari: AriClient) -> AsyncIterator[Callable[[str], Awaitable[float]]]:
    """``record_sent(channel_id)``: the RMS (dBFS) of one second of what the channel is
    sent, recorded from a snoop channel in a Stasis app of its own."""
    app = _app_name()
    started: set[str] = set()
    changed = asyncio.Event()

    def on_event(event: AriEvent) -> None:
        if event.type == "StasisStart":
            started.add(str(event.raw["channel"]["id"]))
            changed.set()

    stream = AriEventStream(ari, app, on_event=on_event, heartbeat=2.0)
    task = asyncio.create_task(stream.run())
    snoops: list[str] = []

    async def record_sent(channel_id: str) -> float:
        snoop = await ari.channels.snoop(channel_id, app, spy="out")
        snoops.append(snoop.id)
        while snoop.id not in started:
            changed.clear()
            await asyncio.wait_for(changed.wait(), 10)
        name = f"voxtra-bad-input-{uuid.uuid4().hex[:8]}"
        await ari.channels.record(snoop.id, name, "wav", max_duration=1)
        with contextlib.suppress(AriNotFound):
            for _ in range(100):  # live until its second is recorded
                await ari.recordings.get_live(name)
                await asyncio.sleep(0.1)
        data = await ari.recordings.get_file(name)
        await ari.recordings.delete_stored(name)
        with wave.open(io.BytesIO(data)) as wav:
            samples = np.frombuffer(wav.readframes(wav.getnframes()), "<i2")
        return rms_dbfs(samples)

    try:
        await stream.wait_connected(10)
        yield record_sent
    finally:
        for snoop_id in snoops:
            with contextlib.suppress(AriError):
                await ari.channels.hangup(snoop_id)
        await stream.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
