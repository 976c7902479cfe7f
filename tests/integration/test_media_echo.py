"""Audio both ways through a real Asterisk: a SIP caller talks to an echo app.

The caller (pjsua2) plays a known signal into the call; the app echoes
``audio_stream()`` back with ``send_audio()``; the caller records what it hears, and
the recording is measured: pitch, level, gaps and duration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from voxtra.app import VoxtraApp
from voxtra.call import CallSession
from voxtra.testing import audio
from voxtra.testing.sipcaller import SipCaller

pytestmark = [pytest.mark.asterisk, pytest.mark.sip]

MakeApp = Callable[..., Awaitable[VoxtraApp]]
AMPLITUDE = 0.4


def _echo_app(pcm_rate: int | None) -> Callable[[VoxtraApp], None]:
    def configure(app: VoxtraApp) -> None:
        @app.route(extension="5000")
        async def echo(call: CallSession) -> None:
            await call.answer()
            if pcm_rate is None:
                stream = call.audio_stream()
            else:
                stream = call.audio_stream(codec="pcm16", sample_rate=pcm_rate)
            async for chunk in stream:
                await call.send_audio(chunk)

    return configure


async def _talk(tmp_path: Path, signal: Any, rate: int, codec: str = "PCMU") -> Path:
    sent = audio.write_wav(tmp_path / "sent.wav", signal, rate)
    heard = tmp_path / "heard.wav"
    async with SipCaller(codecs=(codec,), workdir=tmp_path / "phone") as phone:
        call = await phone.dial("5000", record=heard)
        await call.wait_answered(10)
        await asyncio.sleep(0.6)  # media attached and flowing
        await call.play(sent)
        await call.wait_play_done(10)
        await asyncio.sleep(0.5)  # the tail of the echo comes back
        await call.hangup()
        await call.wait_ended(10)
    return heard


def _check_echo(heard: Path, freq: float, seconds: float) -> None:
    samples, rate = audio.read_wav(heard)
    segments = audio.active_segments(samples, rate)
    assert len(segments) == 1, f"expected one stretch of echo, got {segments}"
    start, end = segments[0]
    assert end - start == pytest.approx(seconds, abs=0.06)
    body = samples[round((start + 0.05) * rate) : round((end - 0.05) * rate)]
    assert audio.dominant_frequency(body, rate) == pytest.approx(freq, rel=0.02)
    expected_db = audio.rms_dbfs(audio.tone(freq, 1.0, amplitude=AMPLITUDE))
    assert audio.rms_dbfs(body) == pytest.approx(expected_db, abs=3.0)
    assert audio.longest_gap(samples, rate, within=(start, end)) <= 0.020


@pytest.mark.parametrize(
    ("transport", "wire", "caller_codec", "pcm_rate"),
    [
        ("rtp", "ulaw", "PCMU", None),
        ("rtp", "alaw", "PCMA", None),
        ("rtp", "slin", "PCMU", 8000),
        ("rtp", "ulaw", "PCMU", 16000),
    ],
)
async def test_echo_through_the_app(
    make_app: MakeApp, tmp_path: Path, transport: str, wire: str, caller_codec: str,
    pcm_rate: int | None,
) -> None:
    await make_app(_echo_app(pcm_rate), media={"transport": transport, "codec": wire})
    heard = await _talk(tmp_path, audio.tone(440, 2.0, 8000, AMPLITUDE), 8000, caller_codec)
    _check_echo(heard, 440, 2.0)


async def test_media_is_torn_down_with_the_call(make_app: MakeApp, tmp_path: Path) -> None:
    app = await make_app(_echo_app(None))
    await _talk(tmp_path, audio.tone(600, 0.5, 8000, AMPLITUDE), 8000)
    for _ in range(100):
        if not app.active_sessions:
            break
        await asyncio.sleep(0.05)
    assert app.active_sessions == {}
    channels = await app.ari.channels.list()
    bridges = await app.ari.bridges.list()
    assert [c.id for c in channels if c.id.startswith("voxtra-internal-")] == []
    assert [b.id for b in bridges if b.id.startswith("voxtra-internal-")] == []
    assert app._internal == {}
    assert app._bridge_index == {}
