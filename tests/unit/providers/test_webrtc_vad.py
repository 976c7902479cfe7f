"""WebRtcVAD on real (espeak) speech through a phone line, in every codec it accepts."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import soxr

from voxtra.errors import ConfigError, MediaError
from voxtra.media import g711
from voxtra.media.frames import AudioChunk, Codec
from voxtra.providers.base import VAD, VADSession
from voxtra.providers.webrtc_vad import WebRtcVAD

TEXT = "Good morning, I would like to know your opening hours please."


def speech_ratio(session: VADSession, chunks: list[AudioChunk]) -> float:
    return sum(session.is_speech(c) for c in chunks) / len(chunks)


def noise_pcm(seconds: float, rate: int, level: float = 10.0) -> bytes:
    rng = np.random.default_rng(1)
    return (rng.normal(0, level, int(seconds * rate))).astype("<i2").tobytes()


async def test_speech_is_speech_and_quiet_is_not_in_ulaw(say_ulaw, to_frames) -> None:
    vad = WebRtcVAD()
    assert isinstance(vad, VAD) and isinstance(vad.session(), VADSession)
    speech = to_frames(await say_ulaw(TEXT))
    quiet = to_frames(g711.pcm16_to_ulaw(noise_pcm(2.0, 8000)))
    session = vad.session()
    assert speech_ratio(session, speech) > 0.9
    after = [session.is_speech(c) for c in quiet]
    assert not any(after[10:])  # back to silence within 200 ms of the speech ending
    assert speech_ratio(vad.session(), quiet) < 0.1


async def test_alaw_and_pcm16_at_8_and_16_khz(say_pcm, to_frames) -> None:
    pcm22 = np.frombuffer(await say_pcm(TEXT), dtype="<i2")
    for rate in (8000, 16000):
        pcm = soxr.resample(pcm22, 22050, rate).astype("<i2").tobytes()
        chunks = to_frames(pcm, Codec.PCM16, rate)
        assert speech_ratio(WebRtcVAD().session(), chunks) > 0.9
        silent = to_frames(noise_pcm(1.0, rate), Codec.PCM16, rate)
        assert speech_ratio(WebRtcVAD().session(), silent) < 0.1
    pcm8 = soxr.resample(pcm22, 22050, 8000).astype("<i2").tobytes()
    alaw = to_frames(g711.pcm16_to_alaw(pcm8), Codec.ALAW)
    assert speech_ratio(WebRtcVAD().session(), alaw) > 0.9
    assert not WebRtcVAD().session().is_speech(AudioChunk.silence(Codec.ALAW))


async def test_longer_chunks_vote_by_10ms_pieces(say_ulaw) -> None:
    speech = await say_ulaw(TEXT)
    middle = len(speech) // 2
    assert WebRtcVAD().session().is_speech(AudioChunk(speech[middle : middle + 800]))  # 100 ms
    assert not WebRtcVAD().session().is_speech(AudioChunk(b"\xff" * 800))


async def test_sessions_are_independent(say_ulaw, to_frames) -> None:
    """Interleaving two calls' frames must not change either call's decisions."""
    a = to_frames(await say_ulaw(TEXT))
    b = to_frames(g711.pcm16_to_ulaw(noise_pcm(len(a) * 0.02, 8000)))
    alone_a = [s.is_speech(c) for s in [WebRtcVAD().session()] for c in a]
    alone_b = [s.is_speech(c) for s in [WebRtcVAD().session()] for c in b]
    vad = WebRtcVAD()
    sa, sb = vad.session(), vad.session()
    mixed_a, mixed_b = [], []
    for ca, cb in zip(a, b, strict=False):
        mixed_a.append(sa.is_speech(ca))
        mixed_b.append(sb.is_speech(cb))
    assert mixed_a == alone_a[: len(mixed_a)]
    assert mixed_b == alone_b[: len(mixed_b)]


def test_bad_input_is_a_media_error() -> None:
    session = WebRtcVAD().session()
    with pytest.raises(MediaError, match="8/16/32/48 kHz"):
        session.is_speech(AudioChunk(b"\0\0" * 441, 22050, Codec.PCM16))
    assert session.is_speech(AudioChunk(b"\xff" * 100)) is False  # odd size: no raise
    with pytest.raises(ConfigError):
        WebRtcVAD(mode=7)


def test_a_missing_webrtcvad_is_a_config_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It was a bare ModuleNotFoundError for "webrtcvad" (the package is
    webrtcvad-wheels) at import, wherever the module was imported directly."""
    monkeypatch.setitem(sys.modules, "webrtcvad", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"voxtra\[local\]"):
        WebRtcVAD()
