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

from voxtra import CallSession
from voxtra.app import VoxtraApp
from voxtra.testing import audio
from voxtra.testing.sipcaller import SipCaller

pytestmark = [pytest.mark.asterisk, pytest.mark.sip]

MakeApp = Callable[..., Awaitable[VoxtraApp]]
AMPLITUDE = 0.4


def _echo_app(pcm_rate: int | None, trail: list[str] | None = None) -> Callable[[VoxtraApp], None]:
    """The echo handler; ``trail`` collects where it got to, for failure messages."""
    log = trail if trail is not None else []

    def configure(app: VoxtraApp) -> None:
        @app.route(extension="5000")
        async def echo(call: CallSession) -> None:
            start = asyncio.get_running_loop().time()

            def note(what: str) -> None:
                log.append(f"{asyncio.get_running_loop().time() - start:.3f}s {what}")

            note("handler")
            await call.answer()
            note("answered")
            try:
                if pcm_rate is None:
                    stream = call.audio_stream()
                else:
                    stream = call.audio_stream(codec="pcm16", sample_rate=pcm_rate)
                frames = 0
                async for chunk in stream:
                    if frames == 0:
                        note("first frame in")
                    frames += 1
                    await call.send_audio(chunk)
                note(f"stream ended after {frames} frames")
            except BaseException as exc:
                note(f"{type(exc).__name__}: {exc}")
                raise
            finally:
                media = call.media_path.transport
                if media is not None:
                    note(f"transport stats {media.stats}")

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


def _check_echo(heard: Path, freq: float, seconds: float, trail: list[str] | None = None) -> None:
    samples, rate = audio.read_wav(heard)
    segments = audio.active_segments(samples, rate)
    assert len(segments) == 1, f"expected one stretch of echo, got {segments}; app: {trail}"
    start, end = segments[0]
    assert end - start == pytest.approx(seconds, abs=0.06)
    body = samples[round((start + 0.05) * rate) : round((end - 0.05) * rate)]
    assert audio.dominant_frequency(body, rate) == pytest.approx(freq, rel=0.02)
    expected_db = audio.rms_dbfs(audio.tone(freq, 1.0, amplitude=AMPLITUDE))
    assert audio.rms_dbfs(body) == pytest.approx(expected_db, abs=3.0)
    assert audio.longest_gap(samples, rate, within=(start, end)) <= 0.020


ENGINE = "rtp+engine"
"""ExternalMedia RTP on the app's MediaEngine (``media.engine``)."""


def _media(transport: str, wire: str) -> dict[str, Any]:
    if transport == ENGINE:
        return {"transport": "rtp", "codec": wire, "engine": True}
    return {"transport": transport, "codec": wire, "engine": False}


@pytest.mark.parametrize(
    ("transport", "wire", "caller_codec", "pcm_rate"),
    [
        ("rtp", "ulaw", "PCMU", None),
        ("rtp", "alaw", "PCMA", None),
        ("rtp", "slin", "PCMU", 8000),
        ("rtp", "ulaw", "PCMU", 16000),
        (ENGINE, "ulaw", "PCMU", None),
        (ENGINE, "alaw", "PCMA", None),
        (ENGINE, "ulaw", "PCMU", 16000),
        ("websocket", "ulaw", "PCMU", None),
        ("websocket", "slin16", "PCMU", 16000),
        ("audiosocket", "slin", "PCMU", 8000),
    ],
)
async def test_echo_through_the_app(
    make_app: MakeApp,
    tmp_path: Path,
    transport: str,
    wire: str,
    caller_codec: str,
    pcm_rate: int | None,
) -> None:
    trail: list[str] = []
    app = await make_app(_echo_app(pcm_rate, trail), media=_media(transport, wire))
    heard = await _talk(tmp_path, audio.tone(440, 2.0, 8000, AMPLITUDE), 8000, caller_codec)
    for session in app.active_sessions.values():  # still up: say how its media stands
        media = session.media_path
        if media.transport is not None:
            tr = media.transport
            trail.append(
                f"at check: media channel {media.channel_id} bridge {media.bridge_id}"
                f" transport {'closed: ' + tr.close_reason if tr and tr.closed else tr}"
                f" stats {tr.stats if tr else None} attach steps {media.steps}"
            )
    _check_echo(heard, 440, 2.0, trail)


@pytest.mark.parametrize("signal", ["chirp", "speech"])
async def test_echo_keeps_chirps_and_speech_intact(
    make_app: MakeApp, tmp_path: Path, signal: str
) -> None:
    import numpy as np

    if signal == "chirp":
        sent = audio.chirp(300, 3000, 2.0, 8000, AMPLITUDE)
    else:
        wav = audio.speech_like_wav("please tell me your opening hours", tmp_path / "s.wav")
        sent, _ = audio.read_wav(wav)
    trail: list[str] = []
    await make_app(_echo_app(None, trail))
    heard_path = await _talk(tmp_path, sent, 8000)
    heard, rate = audio.read_wav(heard_path)
    # Align the echo with what was sent (cross-correlation), then compare the shapes in
    # 250 ms windows, each re-aligned within +-40 ms: a live path may slip a frame once
    # (a late packet), which is not damage. mu-law both ways keeps windows above 0.9.
    x = sent.astype(np.float64)
    y = heard.astype(np.float64)
    lag = int(np.argmax(np.correlate(y, x, mode="valid")))
    win, slack = 2000, 320
    scores = []
    for start in range(0, len(x) - win, win):
        piece = x[start : start + win]
        if np.sqrt(np.mean(piece**2)) < 300:  # a pause between words
            continue
        lo = max(0, lag + start - slack)
        region = y[lo : lag + start + win + slack]
        best = max(
            float(np.dot(piece, region[k : k + win]))
            / (np.linalg.norm(piece) * np.linalg.norm(region[k : k + win]) + 1e-9)
            for k in range(0, len(region) - win + 1, 4)
        )
        scores.append(best)
    # One window may hold a slip inside it (not re-alignable); damage such as a
    # resampler's bursts or a wrong codec spoils most windows.
    assert scores and sum(score > 0.9 for score in scores) >= len(scores) - 1, (scores, trail)
    segments = audio.active_segments(heard, rate, min_gap_ms=300)
    sent_segments = audio.active_segments(sent, 8000, min_gap_ms=300)
    heard_len = segments[-1][1] - segments[0][0]
    sent_len = sent_segments[-1][1] - sent_segments[0][0]
    assert heard_len == pytest.approx(sent_len, abs=0.06)


@pytest.mark.parametrize("transport", ["rtp", ENGINE])
async def test_media_is_torn_down_with_the_call(
    make_app: MakeApp, tmp_path: Path, transport: str
) -> None:
    from voxtra.media.engine_transport import EngineHub, EngineTransport

    seen: list[Any] = []

    def configure(app: VoxtraApp) -> None:
        _echo_app(None)(app)

        @app.on_call_start
        async def note(call: CallSession) -> None:
            seen.append(call)

    app = await make_app(configure, media=_media(transport, "ulaw"))
    tasks_before = len(asyncio.all_tasks())
    await _talk(tmp_path, audio.tone(600, 0.5, 8000, AMPLITUDE), 8000)
    for _ in range(100):
        if not app.active_sessions:
            break
        await asyncio.sleep(0.05)
    assert app.active_sessions == {}
    channels = await app.ari.channels.list()
    bridges = await app.ari.bridges.list()
    # this app's own (ids carry its instance): other runs may share the Asterisk
    assert [c.id for c in channels if app._owns_internal(c.id)] == []
    assert [b.id for b in bridges if app._owns_internal(b.id)] == []
    assert app.registry.internal == {}
    assert app.registry.bridges == {}
    # nothing of the call's media is left in the process: its transport closed, the
    # engine closed with the last call on it (the next call opens one), no task left
    transports = [c.media_path.transport for c in seen]
    assert transports and all(t is not None and t.closed for t in transports)
    if transport == ENGINE:
        assert all(isinstance(t, EngineTransport) for t in transports)
    assert list(EngineHub._shared.get(app.ticker, {}).values()) == []
    assert len(asyncio.all_tasks()) <= tasks_before


TRANSPORTS = [
    ("rtp", "ulaw"),
    ("rtp", "alaw"),
    (ENGINE, "ulaw"),
    ("websocket", "ulaw"),
    ("websocket", "slin16"),
    ("audiosocket", "slin"),
]


async def _listen(tmp_path: Path, seconds: float) -> Path:
    """A caller that dials 5100, stays silent and records what it hears."""
    heard = tmp_path / "heard.wav"
    async with SipCaller(workdir=tmp_path / "phone") as phone:
        call = await phone.dial("5100", record=heard)
        await call.wait_answered(10)
        await call.wait_ended(seconds)
    return heard


@pytest.mark.parametrize(("transport", "wire"), TRANSPORTS)
async def test_wideband_sources_play_at_the_right_pitch_and_speed(
    make_app: MakeApp, tmp_path: Path, transport: str, wire: str
) -> None:
    from voxtra.media.frames import AudioChunk, Codec

    def configure(app: VoxtraApp) -> None:
        @app.route(extension="5100")
        async def player(call: CallSession) -> None:
            await call.answer()
            await call.media()
            await asyncio.sleep(0.3)
            for freq, rate in ((1000, 16000), (1500, 24000)):
                pcm = audio.tone(freq, 1.0, rate, AMPLITUDE).tobytes()
                # in uneven pieces, as a TTS engine delivers them
                for i in range(0, len(pcm), 1234):
                    await call.send_audio(AudioChunk(pcm[i : i + 1234], rate, Codec.PCM16))
                await call.send_audio(AudioChunk(bytes(rate // 2 * 2), rate, Codec.PCM16))
            transport_ = await call.media()
            while transport_.queued_ms > 0:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)

    await make_app(configure, media=_media(transport, wire))
    heard = await _listen(tmp_path, 15)
    samples, rate = audio.read_wav(heard)
    segments = audio.active_segments(samples, rate, min_gap_ms=100)
    assert len(segments) == 2, segments
    for (start, end), freq in zip(segments, (1000, 1500), strict=True):
        assert end - start == pytest.approx(1.0, abs=0.06)
        body = samples[round((start + 0.05) * rate) : round((end - 0.05) * rate)]
        assert audio.dominant_frequency(body, rate) == pytest.approx(freq, rel=0.02)
        assert audio.longest_gap(samples, rate, within=(start, end)) <= 0.020


@pytest.mark.parametrize(
    ("transport", "wire"),
    [("rtp", "ulaw"), (ENGINE, "ulaw"), ("websocket", "ulaw"), ("audiosocket", "slin")],
)
async def test_flush_stops_queued_audio_within_a_frame_or_so(
    make_app: MakeApp, tmp_path: Path, transport: str, wire: str
) -> None:
    from voxtra.media.frames import AudioChunk, Codec

    flushed: list[float] = []

    def configure(app: VoxtraApp) -> None:
        @app.route(extension="5100")
        async def talker(call: CallSession) -> None:
            await call.answer()
            media = await call.media()
            await asyncio.sleep(0.3)
            pcm = audio.tone(700, 10.0, 8000, AMPLITUDE).tobytes()
            await call.send_audio(AudioChunk(pcm, 8000, Codec.PCM16))  # 10 s queued
            await asyncio.sleep(1.0)
            await call.flush_audio()
            flushed.append(media.queued_ms)
            await asyncio.sleep(1.5)

    await make_app(configure, media=_media(transport, wire))
    heard = await _listen(tmp_path, 20)
    assert flushed == [0.0]
    samples, rate = audio.read_wav(heard)
    segments = audio.active_segments(samples, rate, min_gap_ms=100)
    assert len(segments) == 1, segments
    start, end = segments[0]
    # one second was meant to play; at most ~100 ms more may follow the flush
    assert 0.9 <= end - start <= 1.1, (start, end)
