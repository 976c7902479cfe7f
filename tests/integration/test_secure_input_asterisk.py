"""Secure DTMF capture on the real Asterisk with a SIP phone (issue 11).

The phone plays 440 Hz into a recorded call; inside ``call.secure_input()`` it plays
the digits' DTMF tones in-band and sends them as RFC 4733 events, then goes back to
440 Hz. ``gather`` gets the digits; no log line (every logger at DEBUG), no event
waiter and no history entry holds them, and the recording has no DTMF tone in it and
lacks the paused span.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from voxtra import CallSession
from voxtra.app import VoxtraApp
from voxtra.ari.events import ChannelDtmfReceived
from voxtra.calls.secure import REDACTED
from voxtra.calls.voice import VoiceConfig
from voxtra.media.tones import ToneDetector
from voxtra.pipeline.events import SpeechStartedEvent, UserTranscriptEvent
from voxtra.pipeline.io import MonotonicClock
from voxtra.providers.base import ChatMessage
from voxtra.testing import audio
from voxtra.testing.doubles import Reply, ScriptedLLM, ScriptedSTT
from voxtra.testing.sipcaller import SipCall, SipCaller

pytestmark = [pytest.mark.asterisk, pytest.mark.sip]

MakeApp = Callable[..., Awaitable[VoxtraApp]]
SECRET = "7395"
DTMF = {"7": (852, 1209), "3": (697, 1477), "9": (852, 1477), "5": (770, 1336)}


def dtmf_audio(digits: str) -> np.ndarray:
    parts = []
    for digit in digits:
        parts += [audio.two_tone(*DTMF[digit], 0.2, amplitude=0.5), audio.silence(0.1)]
    return np.concatenate(parts)


async def test_secure_digits_reach_gather_and_no_log_event_history_or_recording(
    make_app: MakeApp, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    waiter_saw: list[str] = []
    state: dict[str, Any] = {}
    recording = asyncio.Event()
    go_secure = asyncio.Event()
    inside = asyncio.Event()
    got = asyncio.Event()
    leave = asyncio.Event()
    done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def handler(call: CallSession) -> None:
        try:
            call.voice_config = VoiceConfig(llm=ScriptedLLM([Reply(["ok"])], MonotonicClock()))
            agent = call.agent
            assert agent is not None

            def note(event: ChannelDtmfReceived) -> bool:
                waiter_saw.append(event.digit)
                return False

            call.context.expect(ChannelDtmfReceived, note)
            name = await call.record_start()
            state["recording_at"] = time.monotonic()
            recording.set()
            await go_secure.wait()
            async with call.secure_input():
                state["secure_at"] = time.monotonic()
                inside.set()
                state["digits"] = await call.gather(len(SECRET), first_digit_timeout=10)
                got.set()
                await leave.wait()
                agent.history.append(ChatMessage("tool", f"card {state['digits']} charged"))
            state["secure_s"] = time.monotonic() - state["secure_at"]
            await asyncio.sleep(1.5)
            state["history"] = [m.content for m in agent.history]
            await call.record_stop()
            state["recorded_s"] = time.monotonic() - state["recording_at"]
            done.set_result(name)
        except BaseException as exc:
            if not done.done():
                done.set_exception(exc)
            raise

    def configure(app: VoxtraApp) -> None:
        app.default(handler)

    app = await make_app(
        configure,
        app_name=f"voxtra-secure-{uuid.uuid4().hex[:8]}",
        recordings_dir=str(tmp_path / "recordings"),
        spool_dir=str(tmp_path / "spool"),
        handler_deadline=30.0,
    )
    tone = audio.write_wav(tmp_path / "tone.wav", audio.tone(440, 1.0, amplitude=0.3), 8000)
    digits_wav = audio.write_wav(tmp_path / "dtmf.wav", dtmf_audio(SECRET), 8000)
    async with SipCaller(workdir=tmp_path / "phone") as phone:
        await phone.listen(play=tone, loop_play=True, record=False)
        await app.ari.channels.originate(
            f"PJSIP/sipcaller/sip:t@127.0.0.1:{phone.port}", app=app.app_name, app_args="1000"
        )
        call = await phone.next_incoming_call(10)
        await call.wait_answered(10)
        await asyncio.wait_for(recording.wait(), 10)
        await asyncio.sleep(1.5)  # 440 Hz recorded before
        go_secure.set()
        await asyncio.wait_for(inside.wait(), 10)
        await call.play(digits_wav, loop=True)  # in-band tones...
        await call.send_dtmf_script("w".join(SECRET))  # ...and RFC 4733 events
        await asyncio.wait_for(got.wait(), 10)
        await call.play(tone, loop=True)
        await asyncio.sleep(0.5)  # the phone's 440 Hz is on the wire again
        leave.set()
        name = await asyncio.wait_for(done, 20)
        await call.hangup()

    assert state["digits"] == SECRET
    assert waiter_saw == [REDACTED] * len(SECRET)
    assert state["history"][-1] == f"card {REDACTED} charged"
    lines = [record.getMessage() for record in caplog.records]
    assert any("secure input on" in line for line in lines)
    assert not [line for line in lines if SECRET in line]

    assert app.recordings is not None
    meta = await app.recordings.wait_delivered(name, timeout=15)
    assert meta.local_path is not None
    samples, rate = audio.read_wav(meta.local_path)
    file_s = len(samples) / rate
    # The paused span is left out of the file (not recorded as silence).
    assert file_s < state["recorded_s"] - 0.6 * state["secure_s"], (file_s, state)
    # No DTMF frequency in any frame; the phone's 440 Hz is what was recorded.
    detector = ToneDetector(rate)
    x = samples.astype(np.float64) / 32768.0
    dtmf_freqs = sorted({f for pair in DTMF.values() for f in pair})
    worst = 0.0
    loud_440 = 0
    for i in range(0, len(x) - 159, 160):
        frame = x[i : i + 160]
        mean_square = float(np.mean(frame * frame))
        if mean_square < 1e-6:  # below -60 dBFS
            continue
        freq, _level = detector.classify(frame)
        loud_440 += freq is not None and abs(freq - 440) <= 25
        n = len(frame)
        k = np.arange(n)
        for f in dtmf_freqs:
            spectrum = np.sum(frame * np.exp(-2j * np.pi * f * k / rate))
            worst = max(worst, float(4 * abs(spectrum) ** 2 / n**2) / (2 * mean_square))
    print(
        f"recording {file_s:.2f} s of {state['recorded_s']:.2f} s wall, "
        f"secure {state['secure_s']:.2f} s; "
        f"440 Hz frames {loud_440}; worst DTMF share {worst:.3f}"
    )
    assert loud_440 >= 50  # >= 1 s of the phone's tone
    assert worst < 0.1


async def test_the_voice_pipeline_hears_no_secure_digits(make_app: MakeApp, tmp_path: Path) -> None:
    """The same in-band DTMF tones the pipeline hears as caller speech outside the
    secure span (its VAD starts a turn, the STT would transcribe it) reach it as
    nothing inside: Asterisk mutes the caller, so no turn, no transcript."""
    spans: dict[str, float] = {}
    speech_at: list[float] = []
    finals: list[str] = []
    ready = asyncio.Event()
    phase: dict[str, asyncio.Event] = {k: asyncio.Event() for k in ("in", "got", "out", "end")}

    async def handler(call: CallSession) -> None:
        clock = MonotonicClock()
        call.voice_config = VoiceConfig(stt=ScriptedSTT(["hello"] * 4, clock, delay=0))
        await call.listen(timeout=0.01)  # attaches the pipeline: it listens from now on
        pipeline = call.pipeline
        assert pipeline is not None

        def on_event(event: object) -> None:
            if isinstance(event, SpeechStartedEvent):
                speech_at.append(time.monotonic())
            elif isinstance(event, UserTranscriptEvent):
                finals.append(event.text)

        pipeline.on_event(on_event)
        ready.set()
        await phase["in"].wait()
        async with call.secure_input():
            spans["secure_from"] = time.monotonic()
            digits = await call.gather(len(SECRET), first_digit_timeout=10)
            phase["got"].set()
            await phase["out"].wait()
            spans["secure_to"] = time.monotonic()
        assert digits == SECRET
        await phase["end"].wait()

    def configure(app: VoxtraApp) -> None:
        app.default(handler)

    app = await make_app(
        configure,
        app_name=f"voxtra-secure-stt-{uuid.uuid4().hex[:8]}",
        handler_deadline=30.0,
    )
    quiet = audio.write_wav(tmp_path / "quiet.wav", audio.silence(1.0), 8000)
    digits_wav = audio.write_wav(tmp_path / "dtmf.wav", dtmf_audio(SECRET), 8000)
    async with SipCaller(workdir=tmp_path / "phone") as phone:
        await phone.listen(play=quiet, loop_play=True, record=False)
        await app.ari.channels.originate(
            f"PJSIP/sipcaller/sip:t@127.0.0.1:{phone.port}", app=app.app_name, app_args="1000"
        )
        call = await phone.next_incoming_call(10)
        await call.wait_answered(10)
        await asyncio.wait_for(ready.wait(), 10)
        phase["in"].set()
        await asyncio.sleep(0.3)
        await call.play(digits_wav, loop=True)  # inside: in-band tones and RFC 4733
        await call.send_dtmf_script("w".join(SECRET))
        await asyncio.wait_for(phase["got"].wait(), 10)
        await call.play(quiet, loop=True)
        await asyncio.sleep(0.5)
        phase["out"].set()
        await asyncio.sleep(0.5)
        control_from = time.monotonic()
        await call.play(digits_wav)  # outside: the same tones, once (1.2 s)
        await asyncio.sleep(2.5)
        phase["end"].set()
        await call.hangup()

    inside = [t for t in speech_at if spans["secure_from"] <= t <= spans["secure_to"]]
    after = [t for t in speech_at if t >= control_from]
    print(f"speech onsets: inside {len(inside)}, after {len(after)}; finals {finals}")
    assert inside == []
    assert after, "the pipeline hears the same tones outside the secure span"
    assert all(SECRET not in text for text in finals)


async def _until(condition: Callable[[], bool], timeout: float) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.05)

    await asyncio.wait_for(poll(), timeout)


async def test_a_connected_party_is_sent_none_of_the_secure_digits(
    make_app: MakeApp, tmp_path: Path
) -> None:
    """The caller talks with a callee (``connect()``), as when an agent takes a
    payment: Asterisk passes a caller's RFC 4733 digits on to the other channels of
    its bridge (the callee's phone got all of them, measured), so inside the span
    the caller's digits are absorbed; after it they pass again, and the two still
    hear each other throughout."""
    state: dict[str, str] = {}
    at: dict[str, float] = {}
    phase = {k: asyncio.Event() for k in ("in", "got", "out", "end")}
    port: dict[str, int] = {}

    async def handler(call: CallSession) -> None:
        await call.connect(ring_time=10, to=f"PJSIP/sipcaller/sip:callee@127.0.0.1:{port['b']}")
        async with call.secure_input():
            at["in"] = time.time()
            phase["in"].set()
            state["digits"] = await call.gather(len(SECRET), first_digit_timeout=10)
            at["got"] = time.time()
            phase["got"].set()
        phase["out"].set()
        state["after"] = await call.gather(2, first_digit_timeout=10)
        phase["end"].set()
        await call.wait_ended()

    def configure(app: VoxtraApp) -> None:
        app.default(handler)

    app = await make_app(
        configure, app_name=f"voxtra-secure-bridged-{uuid.uuid4().hex[:8]}", handler_deadline=30.0
    )
    tone = audio.write_wav(tmp_path / "tone.wav", audio.tone(440, 1.0, amplitude=0.3), 8000)
    async with (
        SipCaller(workdir=tmp_path / "caller") as caller_phone,
        SipCaller(workdir=tmp_path / "callee") as callee_phone,
    ):
        port["b"] = callee_phone.port
        await caller_phone.listen(play=tone, loop_play=True, record=True)
        await callee_phone.listen(play=tone, loop_play=True, record=True)
        await app.ari.channels.originate(
            f"PJSIP/sipcaller/sip:t@127.0.0.1:{caller_phone.port}",
            app=app.app_name,
            app_args="1000",
        )
        caller = await caller_phone.next_incoming_call(10)
        callee = await callee_phone.next_incoming_call(15)
        await asyncio.wait_for(phase["in"].wait(), 15)
        await caller.send_dtmf_script("w".join(SECRET))
        await asyncio.wait_for(phase["got"].wait(), 10)
        await asyncio.wait_for(phase["out"].wait(), 10)
        await caller.send_dtmf_script("w".join("12"))
        await asyncio.wait_for(phase["end"].wait(), 10)
        # The digits after the span reach the callee: it would have had the secret by now.
        await callee.wait_dtmf("12", timeout=10)
        received = callee.dtmf_received
        at["end"] = time.time()
        await asyncio.sleep(1.5)  # 1.5 s of the caller's tone on the callee's line
        await caller.hangup()
        await callee.wait_ended(10)

    assert state == {"digits": SECRET, "after": "12"}
    assert received == "12", received

    def level(phone: SipCall, start: float, end: float) -> float:
        assert phone.recording_path is not None
        samples, rate = audio.read_wav(phone.recording_path)
        a, b = (round(phone.recording_offset(t) * rate) for t in (start, end))
        return audio.rms_dbfs(samples[a:b])

    # The callee's voice reached the caller inside the span; the caller's reaches the
    # callee after it (re-added to the bridge, the caller is in the call as before).
    inside = level(caller, at["in"] + 0.3, at["got"])
    after = level(callee, at["end"], at["end"] + 1.0)
    print(f"callee -> caller inside {inside:.1f} dBFS; caller -> callee after {after:.1f} dBFS")
    assert inside > -40.0
    assert after > -40.0


async def test_secure_digits_left_unread_are_not_read_after_the_span(
    make_app: MakeApp, tmp_path: Path
) -> None:
    """A caller keys more than the gather takes (a 6-digit PIN where 4 are asked):
    the rest were pressed inside the span, so no read after it gets them (they used
    to be the next gather's answer, unredacted)."""
    seen: list[str] = []
    state: dict[str, str] = {}
    inside = asyncio.Event()
    leave = asyncio.Event()
    done = asyncio.Event()

    async def handler(call: CallSession) -> None:
        def note(event: ChannelDtmfReceived) -> bool:
            seen.append(event.digit)
            return False

        call.context.expect(ChannelDtmfReceived, note)
        async with call.secure_input():
            inside.set()
            state["pin"] = await call.gather(len(SECRET), first_digit_timeout=10)
            await leave.wait()
        state["next"] = await call.gather(1, first_digit_timeout=10)
        done.set()
        await call.wait_ended()

    def configure(app: VoxtraApp) -> None:
        app.default(handler)

    app = await make_app(
        configure, app_name=f"voxtra-secure-unread-{uuid.uuid4().hex[:8]}", handler_deadline=30.0
    )
    quiet = audio.write_wav(tmp_path / "quiet.wav", audio.silence(1.0), 8000)
    async with SipCaller(workdir=tmp_path / "phone") as phone:
        await phone.listen(play=quiet, loop_play=True, record=False)
        await app.ari.channels.originate(
            f"PJSIP/sipcaller/sip:t@127.0.0.1:{phone.port}", app=app.app_name, app_args="1000"
        )
        call = await phone.next_incoming_call(10)
        await asyncio.wait_for(inside.wait(), 10)
        await call.send_dtmf_script("w".join(SECRET + "12"))
        await _until(lambda: len(seen) == len(SECRET) + 2, 10)  # all six arrived
        leave.set()
        await call.send_dtmf_script("8")
        await asyncio.wait_for(done.wait(), 10)
        await call.hangup()

    assert state == {"pin": SECRET, "next": "8"}
    assert seen == [REDACTED] * 6 + ["8"]
