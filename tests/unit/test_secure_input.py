"""Secure DTMF capture on FakeAsterisk: the digits reach gather() and nothing else.

``call.secure_input()`` pauses the running recording, mutes the caller in Asterisk,
hands the call's event waiters a redacted copy of each DTMF event and keeps the
gathered digits out of the agent's history; no log line holds them.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from fake_apps import routed_app

from voxtra import VoxtraApp
from voxtra.ari.errors import AriServerError
from voxtra.ari.events import ChannelDtmfReceived
from voxtra.calls.secure import REDACTED, RedactingHistory, SecureInput, SecureInputError
from voxtra.calls.session import CallSession
from voxtra.calls.voice import VoiceConfig
from voxtra.pipeline.io import MonotonicClock
from voxtra.providers.base import ChatMessage
from voxtra.testing.doubles import Reply, ScriptedLLM
from voxtra.testing.fake_asterisk import FakeAsterisk

SECRET = "7395"


def make_app(tmp_path: Path, handler: Any) -> VoxtraApp:
    return routed_app(tmp_path, "secure-tests", handler)


async def test_secure_digits_reach_gather_only(
    fake_asterisk: FakeAsterisk, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, every level
    seen_by_waiter: list[str] = []
    inside: dict[str, Any] = {}
    gathered: list[str] = []
    step = asyncio.Event()
    done = asyncio.Event()

    async def handler(call: CallSession) -> None:
        call.voice_config = VoiceConfig(
            llm=ScriptedLLM([Reply(["ok"])], MonotonicClock()), system_prompt="You help."
        )
        agent = call.agent
        assert agent is not None
        await call.answer()
        await call.record_start("secure-rec")

        # A waiter on every DTMF event of the call, as the platform's timeline keeps.
        def note(event: ChannelDtmfReceived) -> bool:
            seen_by_waiter.append(event.digit)
            return False

        call.context.expect(ChannelDtmfReceived, note)
        first = await call.gather(1, first_digit_timeout=5)  # before: an ordinary digit
        async with call.secure_input() as secure:
            inside["recording"] = fake_asterisk.live_recordings["secure-rec"].state
            inside["muted"] = set(fake_asterisk.call(call.id).muted)
            inside["active"] = secure.active
            step.set()
            digits = await call.gather(8, first_digit_timeout=5)
            # a tool that puts them in the history by mistake
            agent.history.append(ChatMessage(role="user", content=f"my card is {digits}"))
        gathered.extend([first, digits])
        # ...and after: a tool result appended later still has them replaced
        agent.history.append(ChatMessage(role="tool", content=f"charged {digits}, order 5{digits}"))
        inside["after_recording"] = fake_asterisk.live_recordings["secure-rec"].state
        inside["after_muted"] = set(fake_asterisk.call(call.id).muted)
        inside["history"] = [m.content for m in agent.history]
        inside["secure_after"] = call.secure.active
        await call.record_stop()
        done.set()

    app = make_app(tmp_path, handler)
    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="100")
        await fake_asterisk.wait_until(lambda: "secure-rec" in fake_asterisk.live_recordings)
        await caller.press("5")
        await asyncio.wait_for(step.wait(), 5)
        await caller.press(SECRET + "#")
        await asyncio.wait_for(done.wait(), 5)

    assert gathered == ["5", SECRET]
    assert inside["recording"] == "paused" and inside["after_recording"] == "recording"
    assert inside["muted"] == {"in"} and inside["after_muted"] == set()
    assert inside["active"] is True and inside["secure_after"] is False
    # the waiter saw the ordinary digit, and only markers for the secure ones
    assert seen_by_waiter == ["5"] + [REDACTED] * (len(SECRET) + 1)
    history = inside["history"]
    assert history[-2:] == [f"my card is {REDACTED}", f"charged {REDACTED}, order 5{SECRET}"]
    assert not any(SECRET in line for line in history[:-1])
    lines = [record.getMessage() for record in caplog.records]
    assert any("secure input on" in line for line in lines)
    assert not [line for line in lines if SECRET in line]


async def test_a_refused_pause_fails_closed(
    fake_asterisk: FakeAsterisk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcome: dict[str, Any] = {}

    async def handler(call: CallSession) -> None:
        await call.answer()
        await call.record_start("refused-rec")

        async def refuse(name: str) -> None:
            raise AriServerError(500, "POST", f"/recordings/live/{name}/pause", "boom")

        monkeypatch.setattr(call.context.ari.recordings, "pause", refuse)
        try:
            async with call.secure_input():
                outcome["entered"] = True
        except SecureInputError as exc:
            outcome["error"] = str(exc)
        outcome["muted"] = set(fake_asterisk.call(call.id).muted)
        outcome["redacting"] = call.context.redact_dtmf is not None
        await call.record_stop()

    app = make_app(tmp_path, handler)
    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="100")
        await caller.wait_ended(5)

    assert "entered" not in outcome
    assert "refused to pause" in outcome["error"]
    assert outcome["muted"] == set() and outcome["redacting"] is False


def test_redacting_history_matches_whole_digit_runs_only() -> None:
    secrets = ["1234"]
    history = RedactingHistory([ChatMessage("user", "pin 1234")], lambda: secrets)
    history.append(ChatMessage("user", "order 51234 and 1234#"))
    history += [ChatMessage("assistant", "x1234y")]
    history[0:1] = [ChatMessage("user", "again 1234")]
    assert [m.content for m in history] == [
        f"again {REDACTED}",
        "order 51234 and 1234#",  # inside longer DTMF runs: not this secret
        f"x{REDACTED}y",
    ]


async def test_nested_secure_input_resumes_once(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    states: list[tuple[bool, set[str]]] = []

    async def handler(call: CallSession) -> None:
        await call.answer()
        secure: SecureInput = call.secure
        async with call.secure_input():
            async with call.secure_input():
                states.append((secure.active, set(fake_asterisk.call(call.id).muted)))
            states.append((secure.active, set(fake_asterisk.call(call.id).muted)))
        states.append((secure.active, set(fake_asterisk.call(call.id).muted)))

    app = make_app(tmp_path, handler)
    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="100")
        await caller.wait_ended(5)

    assert states == [(True, {"in"}), (True, {"in"}), (False, set())]


async def test_a_recording_started_inside_is_paused_and_resumed(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    states: list[str] = []

    async def handler(call: CallSession) -> None:
        await call.answer()
        async with call.secure_input():
            name = await call.record_start("inside-rec")
            states.append(fake_asterisk.live_recordings[name].state)
        states.append(fake_asterisk.live_recordings[name].state)
        await call.record_stop()

    app = make_app(tmp_path, handler)
    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="100")
        await caller.wait_ended(5)

    assert states == ["paused", "recording"]


async def test_an_agent_made_after_the_secure_gather_is_guarded_too(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    history: list[str] = []
    step = asyncio.Event()

    async def handler(call: CallSession) -> None:
        await call.answer()
        async with call.secure_input():
            step.set()
            digits = await call.gather(8, first_digit_timeout=5)
        call.voice_config = VoiceConfig(llm=ScriptedLLM([Reply(["ok"])], MonotonicClock()))
        agent = call.agent
        assert agent is not None
        agent.history.append(ChatMessage(role="tool", content=f"pin {digits} ok"))
        history.extend(m.content for m in agent.history)

    app = make_app(tmp_path, handler)
    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="100")
        await asyncio.wait_for(step.wait(), 5)
        await caller.press(SECRET + "#")
        await caller.wait_ended(5)

    assert history == [f"pin {REDACTED} ok"]


async def test_a_refused_resume_still_unmutes_the_caller(
    fake_asterisk: FakeAsterisk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recording's unpause failing used to skip the unmute after it: the caller
    stayed muted for the rest of the call (no pipeline, no callee heard it)."""
    after: dict[str, Any] = {}

    async def handler(call: CallSession) -> None:
        await call.answer()
        await call.record_start("resume-rec")

        async def refuse(name: str) -> None:
            raise AriServerError(500, "DELETE", f"/recordings/live/{name}/pause", "boom")

        monkeypatch.setattr(call.context.ari.recordings, "unpause", refuse)
        async with call.secure_input():
            pass
        after["muted"] = set(fake_asterisk.call(call.id).muted)
        after["active"] = call.secure.active
        await call.record_stop()

    app = make_app(tmp_path, handler)
    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="100")
        await caller.wait_ended(5)

    assert after == {"muted": set(), "active": False}


async def test_an_entry_cut_off_mid_request_is_undone(
    fake_asterisk: FakeAsterisk, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mute Asterisk applied whose answer never came (the block cancelled by a
    timeout meanwhile) is undone all the same: it used to stay for the call."""
    after: dict[str, Any] = {}

    async def handler(call: CallSession) -> None:
        await call.answer()
        ari = call.context.ari
        mute = ari.channels.mute

        async def slow_mute(channel_id: str, direction: Any = "both") -> None:
            await mute(channel_id, direction)  # applied by Asterisk...
            await asyncio.Event().wait()  # ...and the answer never comes

        monkeypatch.setattr(ari.channels, "mute", slow_mute)

        async def secure() -> None:
            async with call.secure_input():
                after["entered"] = True

        with pytest.raises(TimeoutError):
            await asyncio.wait_for(secure(), 0.2)
        after["muted"] = set(fake_asterisk.call(call.id).muted)
        after["redacting"] = call.context.redact_dtmf is not None

    app = make_app(tmp_path, handler)
    async with fake_asterisk.serve(app):
        caller = await fake_asterisk.incoming(extension="100")
        await caller.wait_ended(5)

    assert after == {"muted": set(), "redacting": False}
