"""``CallSession.record()``: a recording ended by a DTMF key or by its time limit says
which, against the real Asterisk with a real SIP phone pressing the key (issue 14, item 4).

Each test runs its own Stasis app (a unique name) and has Asterisk call the scripted SIP
phone into it, so parallel runs do not share calls. The delivered metadata is checked
too: ``end_reason``, and ``local_path`` naming the delivered file (item 9).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from voxtra import CallSession
from voxtra.app import VoxtraApp
from voxtra.recording.app_recordings import RecordingResult
from voxtra.testing import audio
from voxtra.testing.sipcaller import SipCall, SipCaller

pytestmark = [pytest.mark.asterisk, pytest.mark.sip]

MakeApp = Callable[..., Awaitable[VoxtraApp]]


class Recorded:
    """The handler's RecordingResult (or error), and whether its recording is running."""

    def __init__(self) -> None:
        self.result: asyncio.Future[RecordingResult] = asyncio.get_running_loop().create_future()
        self.session: CallSession | None = None

    def handler(self, **options: Any) -> Callable[[CallSession], Awaitable[None]]:
        async def handle(call: CallSession) -> None:
            self.session = call
            try:
                self.result.set_result(await call.record(**options))
            except BaseException as exc:
                if not self.result.done():
                    self.result.set_exception(exc)
                raise

        return handle

    async def wait_recording(self, timeout: float = 10.0) -> None:
        async def check() -> None:
            while True:
                recorder = None if self.session is None else self.session.recorder
                if recorder is not None and recorder.recording is not None:
                    return
                await asyncio.sleep(0.05)

        await asyncio.wait_for(check(), timeout)


async def _call_phone(
    make_app: MakeApp, tmp_path: Path, phone: SipCaller, recorded: Recorded, **options: Any
) -> tuple[VoxtraApp, SipCall]:
    def configure(app: VoxtraApp) -> None:
        app.default(recorded.handler(**options))

    app = await make_app(
        configure,
        app_name=f"voxtra-recuntil-{uuid.uuid4().hex[:8]}",
        recordings_dir=str(tmp_path / "recordings"),
        spool_dir=str(tmp_path / "spool"),
        handler_deadline=30.0,
    )
    tone = audio.write_wav(tmp_path / "tone.wav", audio.tone(440, 1.0, amplitude=0.3), 8000)
    await phone.listen(play=tone, loop_play=True, record=False)
    await app.ari.channels.originate(
        f"PJSIP/sipcaller/sip:t@127.0.0.1:{phone.port}", app=app.app_name, app_args="1000"
    )
    call = await phone.next_incoming_call(10)
    await call.wait_answered(10)
    return app, call


async def test_record_ends_on_the_finish_key(make_app: MakeApp, tmp_path: Path) -> None:
    recorded = Recorded()
    async with SipCaller(workdir=tmp_path / "phone") as phone:
        app, call = await _call_phone(
            make_app, tmp_path, phone, recorded, finish_on_key="#", max_length=30
        )
        await recorded.wait_recording()
        await asyncio.sleep(1.0)
        await call.send_dtmf_script("1w#")  # "1" is not a finish key: only "#" ends it
        result = await asyncio.wait_for(recorded.result, 20)
        await call.hangup()

    assert result.reason == "finish_on_key"
    assert result.key == "#"
    assert app.recordings is not None
    meta = await app.recordings.wait_delivered(result.name, timeout=15)
    assert meta.end_reason == "finish_on_key"
    assert meta.duration is not None and meta.duration < 15  # far from the 30 s limit
    # The delivered metadata names the delivered file, not the deleted fetch/spool copy.
    assert meta.local_path is not None and meta.local_path.is_file()
    assert meta.local_path.is_relative_to(tmp_path / "recordings")


async def test_record_ends_on_max_length(make_app: MakeApp, tmp_path: Path) -> None:
    recorded = Recorded()
    async with SipCaller(workdir=tmp_path / "phone") as phone:
        app, call = await _call_phone(
            make_app, tmp_path, phone, recorded, finish_on_key="#", max_length=2
        )
        result = await asyncio.wait_for(recorded.result, 20)
        await call.hangup()

    assert result.reason == "max_length"
    assert result.key is None
    assert app.recordings is not None
    meta = await app.recordings.wait_delivered(result.name, timeout=15)
    assert meta.end_reason == "max_length"
    assert meta.duration is not None and meta.duration >= 1.5
    samples, rate = audio.read_wav(meta.local_path)  # type: ignore[arg-type]
    assert audio.active_segments(samples, rate), "the phone's tone is in the recording"


async def test_record_stop_reports_stopped(make_app: MakeApp, tmp_path: Path) -> None:
    names: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def configure(app: VoxtraApp) -> None:
        @app.default
        async def handle(call: CallSession) -> None:
            await call.record_start(finish_on_key="#")
            await asyncio.sleep(1.0)
            names.set_result(await call.record_stop() or "")

    app = await make_app(
        configure,
        app_name=f"voxtra-recuntil-{uuid.uuid4().hex[:8]}",
        recordings_dir=str(tmp_path / "recordings"),
        spool_dir=str(tmp_path / "spool"),
    )
    async with SipCaller(workdir=tmp_path / "phone") as phone:
        await phone.listen(record=False)
        await app.ari.channels.originate(
            f"PJSIP/sipcaller/sip:t@127.0.0.1:{phone.port}", app=app.app_name, app_args="1000"
        )
        call = await phone.next_incoming_call(10)
        await call.wait_answered(10)
        name = await asyncio.wait_for(names, 20)
        await call.hangup()
    assert app.recordings is not None
    meta = await app.recordings.wait_delivered(name, timeout=15)
    assert meta.end_reason == "stopped"


async def test_record_ends_on_silence(make_app: MakeApp, tmp_path: Path) -> None:
    recorded = Recorded()

    def configure(app: VoxtraApp) -> None:
        app.default(recorded.handler(silence_timeout=1, max_length=20))

    app = await make_app(
        configure,
        app_name=f"voxtra-recuntil-{uuid.uuid4().hex[:8]}",
        recordings_dir=str(tmp_path / "recordings"),
        spool_dir=str(tmp_path / "spool"),
        handler_deadline=30.0,
    )
    async with SipCaller(workdir=tmp_path / "phone") as phone:
        await phone.listen(record=False)  # a phone that says nothing
        await app.ari.channels.originate(
            f"PJSIP/sipcaller/sip:t@127.0.0.1:{phone.port}", app=app.app_name, app_args="1000"
        )
        call = await phone.next_incoming_call(10)
        await call.wait_answered(10)
        result = await asyncio.wait_for(recorded.result, 25)
        await call.hangup()
    assert result.reason == "silence_timeout"


@pytest.mark.parametrize("beep", [False, True])
async def test_the_caller_hears_the_beep(make_app: MakeApp, tmp_path: Path, beep: bool) -> None:
    # Asterisk's own beep=true played on the snoop channel: no one heard it.
    recorded = Recorded()

    def configure(app: VoxtraApp) -> None:
        app.default(recorded.handler(max_length=2, beep=beep))

    app = await make_app(
        configure,
        app_name=f"voxtra-recuntil-{uuid.uuid4().hex[:8]}",
        recordings_dir=str(tmp_path / "recordings"),
        spool_dir=str(tmp_path / "spool"),
        handler_deadline=30.0,
    )
    async with SipCaller(workdir=tmp_path / "phone") as phone:
        await phone.listen(record=True)  # what the phone hears
        await app.ari.channels.originate(
            f"PJSIP/sipcaller/sip:t@127.0.0.1:{phone.port}", app=app.app_name, app_args="1000"
        )
        call = await phone.next_incoming_call(10)
        await call.wait_answered(10)
        result = await asyncio.wait_for(recorded.result, 25)
        await call.wait_ended(10)  # the handler returned: the app hangs up
    assert result.reason == "max_length"
    assert call.recording_path is not None
    heard, rate = audio.read_wav(call.recording_path)
    assert bool(audio.active_segments(heard, rate)) == beep


async def test_record_transcribes_what_the_phone_said(make_app: MakeApp, tmp_path: Path) -> None:
    """``transcribe=True``: the fetched file goes through the app's STT (Whisper here)
    before it is spooled; the text comes back in the result and the metadata."""
    pytest.importorskip("faster_whisper", reason="the whisper extra is not installed")
    from voxtra.providers.whisper_stt import WhisperSTT

    stt = WhisperSTT()
    recorded = Recorded()
    speech = await audio.synthesize_wav(
        "Please call me back tomorrow morning.", tmp_path / "speech.wav"
    )

    def configure(app: VoxtraApp) -> None:
        app.voice = replace(app.voice, stt=stt)
        app.default(recorded.handler(max_length=4, transcribe=True))

    app = await make_app(
        configure,
        app_name=f"voxtra-rectext-{uuid.uuid4().hex[:8]}",
        recordings_dir=str(tmp_path / "recordings"),
        spool_dir=str(tmp_path / "spool"),
        handler_deadline=30.0,
    )
    async with SipCaller(workdir=tmp_path / "phone") as phone:
        await phone.listen(play=speech, loop_play=False, record=False)
        await app.ari.channels.originate(
            f"PJSIP/sipcaller/sip:t@127.0.0.1:{phone.port}", app=app.app_name, app_args="1"
        )
        call = await phone.next_incoming_call(10)
        await call.wait_answered(10)
        result = await asyncio.wait_for(recorded.result, 40)
        await call.hangup()
    assert result.reason == "max_length"
    assert result.transcript is not None
    words = result.transcript.lower()
    assert "call" in words and "tomorrow" in words, result.transcript
    assert app.recordings is not None
    meta = await app.recordings.wait_delivered(result.name, timeout=15)
    assert meta.transcript == result.transcript
