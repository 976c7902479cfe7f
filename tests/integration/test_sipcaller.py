"""The scripted SIP caller against the real Asterisk sandbox: audio, DTMF, inbound calls.

Calls go to extension 600 of [from-sip] (Answer + Echo, no Voxtra needed) or come
from ARI originates on a test-only Stasis app, so nothing else has to be running.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from voxtra.testing import audio
from voxtra.testing.sipcaller import SipCall, SipCaller, SipCallerError

ARI = "http://127.0.0.1:8088/ari"
AUTH = {"Authorization": "Basic " + base64.b64encode(b"voxtra:voxtra").decode()}
APP = "sipcaller-test"


pytestmark = [pytest.mark.sip, pytest.mark.asterisk]

TONE_AMPLITUDE = 0.5
TONE_DBFS = audio.rms_dbfs(audio.tone(440, 1.0, amplitude=TONE_AMPLITUDE))


@pytest.fixture
async def caller(tmp_path: Path) -> AsyncIterator[SipCaller]:
    async with SipCaller(workdir=tmp_path / "phone") as phone:
        yield phone


class AriEvents:
    """The events WebSocket of one Stasis app, collected into a queue."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self.session = session
        self.ws = ws
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.queue.put_nowait(json.loads(msg.data))

    async def next(self, type_: str, timeout: float = 10.0) -> dict[str, Any]:
        async def find() -> dict[str, Any]:
            while True:
                ev = await self.queue.get()
                if ev.get("type") == type_:
                    return ev

        return await asyncio.wait_for(find(), timeout)

    async def request(self, method: str, path: str, **kw: Any) -> Any:
        async with self.session.request(method, f"{ARI}{path}", headers=AUTH, **kw) as resp:
            assert resp.status < 300, (resp.status, await resp.text())
            return await resp.json() if resp.status != 204 else None


@pytest.fixture
async def ari() -> AsyncIterator[AriEvents]:
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(
            f"ws://127.0.0.1:8088/ari/events?app={APP}&api_key=voxtra:voxtra"
        )
        events = AriEvents(session, ws)
        try:
            yield events
        finally:
            await ws.close()
            events.task.cancel()


async def _echo_call(caller: SipCaller, play: Path, record: Path) -> SipCall:
    call = await caller.dial("sip:600@127.0.0.1:5060", play=play, record=record)
    await call.wait_answered(10)
    await call.wait_play_done(10)
    await asyncio.sleep(0.4)  # let the echo of the last frames come back
    await call.hangup()
    await call.wait_ended(10)
    return call


@pytest.mark.parametrize(("codec", "clock_rate"), [("PCMU", 8000), ("PCMA", 8000), ("PCMU", 16000)])
async def test_echo_returns_the_tone_intact(tmp_path: Path, codec: str, clock_rate: int) -> None:
    # The file is at 8 kHz; with a 16 kHz mixer pjsua resamples both ways.
    sent = tmp_path / "tone.wav"
    audio.write_wav(sent, audio.tone(440, 2.0, 8000, TONE_AMPLITUDE), 8000)
    async with SipCaller(
        codecs=(codec,), clock_rate=clock_rate, workdir=tmp_path / "phone"
    ) as caller:
        call = await _echo_call(caller, sent, tmp_path / "heard.wav")

    assert call.codec == f"{codec}/8000"
    assert call.end_code == 200
    assert call.recording_path == tmp_path / "heard.wav"
    assert call.recording_rate == clock_rate
    heard, rate = audio.read_wav(tmp_path / "heard.wav")
    assert rate == clock_rate
    segments = audio.active_segments(heard, rate)
    assert len(segments) == 1, segments
    start, end = segments[0]
    assert end - start == pytest.approx(2.0, abs=0.04)
    body = heard[round((start + 0.05) * rate) : round((end - 0.05) * rate)]
    assert audio.dominant_frequency(body, rate) == pytest.approx(440, rel=0.02)
    assert audio.rms_dbfs(body) == pytest.approx(TONE_DBFS, abs=1.5)
    assert audio.longest_gap(heard, rate, within=(start, end)) <= 0.020

    # Timestamps: the echo starts shortly after playback started, as mapped onto the
    # recording through recording_started_at.
    play_t = call.event_time("play_started")
    assert play_t is not None
    expected = call.recording_offset(play_t)
    assert 0.0 <= start - expected < 0.15, (start, expected)


async def test_play_mid_call_and_timestamps(caller: SipCaller, tmp_path: Path) -> None:
    beep = tmp_path / "beep.wav"
    audio.write_wav(beep, audio.tone(1000, 0.5, 8000, TONE_AMPLITUDE), 8000)
    call = await caller.dial("600", record=True)
    await call.wait_answered(10)
    await asyncio.sleep(0.5)
    await call.play(beep)
    await call.wait_play_done(5)
    await asyncio.sleep(0.3)
    await call.hangup()
    await call.wait_ended(10)

    assert call.recording_path is not None and call.recording_path.parent == caller.workdir
    heard, rate = audio.read_wav(call.recording_path)
    play_t = call.event_time("play_started")
    assert play_t is not None
    onset = audio.onset_after(heard, rate, 0.0)
    assert onset is not None
    # Nothing was heard before the beep was played, and it arrives within 150 ms.
    assert 0.0 <= onset - call.recording_offset(play_t) < 0.15
    stop = audio.offset_after(heard, rate, onset)
    assert stop is not None
    assert stop - onset == pytest.approx(0.5, abs=0.03)
    piece = heard[round(onset * rate) : round(stop * rate)]
    assert audio.dominant_frequency(piece, rate) == pytest.approx(1000, rel=0.01)


async def test_echo_sends_dtmf_back(caller: SipCaller) -> None:
    # Echo() returns RFC 4733 events as well: what we send comes back as digits.
    call = await caller.dial("600")
    await call.wait_answered(10)
    await call.send_dtmf("4*9")
    await call.wait_dtmf("4*9", 5)
    await call.hangup()
    await call.wait_ended(10)


async def test_inbound_call_dtmf_reaches_ari_and_ari_hangup_ends_it(
    caller: SipCaller, ari: AriEvents
) -> None:
    await caller.listen()
    channel = await ari.request(
        "POST",
        "/channels",
        params={"endpoint": f"PJSIP/sipcaller/sip:t@127.0.0.1:{caller.port}", "app": APP},
    )
    call = await caller.next_incoming_call(10)
    assert call.direction == "inbound"
    await call.wait_answered(10)
    start = await ari.next("StasisStart")
    assert start["channel"]["id"] == channel["id"]

    await call.send_dtmf("12#")
    digits = [(await ari.next("ChannelDtmfReceived"))["digit"] for _ in range(3)]
    assert digits == ["1", "2", "#"]

    await ari.request("DELETE", f"/channels/{channel['id']}")
    await call.wait_ended(10)
    assert call.end_code is not None
    await ari.next("StasisEnd")
    assert call.recording_path is not None and call.recording_path.exists()


async def test_inbound_call_records_what_asterisk_plays(caller: SipCaller, ari: AriEvents) -> None:
    await caller.listen()
    await ari.request(
        "POST",
        "/channels",
        params={
            "endpoint": f"PJSIP/sipcaller/sip:t@127.0.0.1:{caller.port}",
            "context": "voxtra-test",
            "extension": "play",
            "priority": "1",
        },
        json={"variables": {"PLAYFILE": "hello-world"}},
    )
    call = await caller.next_incoming_call(10)
    await call.wait_answered(10)
    await call.wait_ended(15)  # the dialplan hangs up after the prompt
    assert call.recording_path is not None
    heard, rate = audio.read_wav(call.recording_path)
    speech = audio.active_segments(heard, rate, threshold_dbfs=-35, min_gap_ms=300)
    assert speech, "the prompt should be audible in the recording"
    total = sum(e - s for s, e in speech)
    assert 0.8 < total < 2.5, speech  # "hello world" is about 1.4 s


async def test_unanswered_inbound_rings_until_answered(caller: SipCaller, ari: AriEvents) -> None:
    await caller.listen(answer=False)
    channel = await ari.request(
        "POST",
        "/channels",
        params={"endpoint": f"PJSIP/sipcaller/sip:t@127.0.0.1:{caller.port}", "app": APP},
    )
    call = await caller.next_incoming_call(10)
    await asyncio.sleep(0.3)
    assert not call.answered
    await call.answer()
    await call.wait_answered(5)
    await ari.next("StasisStart")
    await ari.request("DELETE", f"/channels/{channel['id']}")
    await call.wait_ended(10)


async def test_missing_codec_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SipCallerError, match="codec 'NOPE' not available"):
        async with SipCaller(codecs=("NOPE",), workdir=tmp_path):
            pass


async def test_bad_play_file_is_rejected_before_dialing(caller: SipCaller, tmp_path: Path) -> None:
    with pytest.raises(SipCallerError, match="no such audio file"):
        await caller.dial("600", play=tmp_path / "missing.wav")
    with pytest.raises(SipCallerError, match="invalid DTMF"):
        await SipCall(caller, "x", "outbound").send_dtmf("12x")


async def test_worker_death_ends_calls_and_fails_commands(tmp_path: Path) -> None:
    # A unique From user finds the Asterisk leg the killed phone never hung up.
    user = f"dead{os.getpid()}x{id(tmp_path) % 10000}"
    caller = SipCaller(workdir=tmp_path, user=user)
    await caller.start()
    try:
        call = await caller.dial("600")
        await call.wait_answered(10)
        assert caller._proc is not None
        os.kill(caller._proc.pid, signal.SIGKILL)
        await call.wait_ended(5)
        assert "exited" in (call.end_reason or "")
        with pytest.raises(SipCallerError, match="not running"):
            await call.send_dtmf("1")
    finally:
        await caller.close()
        await _hang_up_channels_of(user)
    assert caller._proc.returncode == -signal.SIGKILL


async def _hang_up_channels_of(user: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{ARI}/channels", headers=AUTH) as resp:
            channels = await resp.json()
        for ch in channels:
            if ch["caller"]["number"] == user:
                async with session.delete(f"{ARI}/channels/{ch['id']}", headers=AUTH):
                    pass


async def test_close_hangs_up_and_finishes_the_recording(tmp_path: Path) -> None:
    async with SipCaller(workdir=tmp_path) as caller:
        call = await caller.dial("600", play=_tone_file(tmp_path), record=True, loop_play=True)
        await call.wait_answered(10)
        await asyncio.sleep(0.6)
        proc = caller._proc
    # Leaving the block hung up, closed the WAV (valid header) and ended the process.
    assert call.ended
    assert proc is not None and proc.returncode == 0
    assert call.recording_path is not None
    heard, rate = audio.read_wav(call.recording_path)
    assert heard.size / rate > 0.4
    assert np.max(np.abs(heard)) > 1000


def _tone_file(tmp_path: Path) -> Path:
    return audio.write_wav(tmp_path / "t.wav", audio.tone(440, 0.5), 8000)


async def test_command_line_dial_plays_records_and_reports(tmp_path: Path) -> None:
    sent = audio.write_wav(tmp_path / "t.wav", audio.tone(660, 0.6), 8000)
    out = tmp_path / "out.wav"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "voxtra.testing.sipcaller",
        "dial",
        "600",
        "--play",
        str(sent),
        "--record",
        str(out),
        "--seconds",
        "1.2",
        "--codec",
        "PCMA",
        "--workdir",
        str(tmp_path / "cli"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, stderr.decode()
    report = json.loads(stdout.decode().strip().splitlines()[-1])
    assert report["codec"] == "PCMA/8000"
    assert report["recording"] == str(out)
    heard, rate = audio.read_wav(out)
    segments = audio.active_segments(heard, rate)
    assert len(segments) == 1
    start, end = segments[0]
    assert end - start == pytest.approx(0.6, abs=0.04)
    assert audio.dominant_frequency(heard[round(start * rate) : round(end * rate)], rate) == (
        pytest.approx(660, rel=0.01)
    )


def _asterisk_time(event: dict[str, Any]) -> float:
    """An ARI event's own timestamp (Asterisk's clock), in seconds."""
    return datetime.strptime(event["timestamp"], "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


async def test_queued_digits_all_arrive_without_a_recording(
    caller: SipCaller, ari: AriEvents
) -> None:
    # Before the phone clocked unrecorded calls, Asterisk got 2 of these 4 digits.
    await caller.listen(record=False)
    channel = await ari.request(
        "POST",
        "/channels",
        params={"endpoint": f"PJSIP/sipcaller/sip:t@127.0.0.1:{caller.port}", "app": APP},
    )
    call = await caller.next_incoming_call(10)
    await call.wait_answered(10)
    await ari.next("StasisStart")
    # The old phone sent them all at once, lost them only some time after the answer.
    await asyncio.sleep(0.5)
    await call.send_dtmf("1234")
    digits = [(await ari.next("ChannelDtmfReceived"))["digit"] for _ in range(4)]
    assert digits == ["1", "2", "3", "4"]
    await ari.request("DELETE", f"/channels/{channel['id']}")
    await call.wait_ended(10)


async def test_command_line_dtmf_script_pauses_between_digits(
    ari: AriEvents, tmp_path: Path
) -> None:
    # The command-line phone listens, Asterisk calls it into a test app, and the phone
    # keys "1W2ww3#" 0.3 s after answering: W and ww are 1 s pauses, 3# has none.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "voxtra.testing.sipcaller",
        "listen",
        "--dtmf",
        "1W2ww3#",
        "--dtmf-delay",
        "0.3",
        "--seconds",
        "12",
        "--workdir",
        str(tmp_path / "cli"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        first = (await asyncio.wait_for(proc.stderr.readline(), 15)).decode()
        match = re.search(r"sip caller on sip:\S+:(\d+);", first)
        assert match, first
        channel = await ari.request(
            "POST",
            "/channels",
            params={"endpoint": f"PJSIP/sipcaller/sip:t@127.0.0.1:{match[1]}", "app": APP},
        )
        await ari.next("StasisStart")
        events = [await ari.next("ChannelDtmfReceived", 10) for _ in range(4)]
        await ari.request("DELETE", f"/channels/{channel['id']}")
    finally:
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), 15)

    assert [ev["digit"] for ev in events] == ["1", "2", "3", "#"]
    times = [_asterisk_time(ev) for ev in events]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Each gap holds the pause plus one digit period (0.25 s); only lower bounds for the
    # pauses, and the unpaused pair must come closer together than a paused one.
    assert gaps[0] >= 1.0 and gaps[1] >= 1.0, gaps
    assert gaps[2] < gaps[1], gaps
