"""WebRTC voice activity detection (webrtcvad-wheels, MIT): the default, 3-5 us per frame.

Mode 2 is the default: on 8 kHz u-law with background noise it keeps recall at 0.96 with
2% false positives; modes 0-1 can latch on a sudden noise floor (see notes/speech.md).
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from voxtra.errors import ConfigError, MediaError
from voxtra.media import g711
from voxtra.media.frames import AudioChunk, Codec

__all__ = ["WebRtcVAD", "WebRtcVADSession"]

logger = logging.getLogger(__name__)

_RATES = (8000, 16000, 32000, 48000)
_FRAME_MS = (10, 20, 30)
_DIRECT = frozenset((rate, rate // 100 * ms // 10 * 2) for rate in _RATES for ms in _FRAME_MS)
"""(rate, bytes) of the PCM16 frames webrtcvad takes as they are: the pipeline's every
frame (it hands over PCM16), judged without the checks below (0.5 of 1.7 us a frame)."""


def _webrtcvad() -> Any:
    """The ``webrtcvad`` module, or a ConfigError naming the extra that installs it.

    Imported when a ``WebRtcVAD`` is made, not with this module: a top-level import
    failed as a bare ``ModuleNotFoundError: webrtcvad`` (the package is
    webrtcvad-wheels) wherever this module was imported directly (the scaffold does)."""
    try:
        return importlib.import_module("webrtcvad")
    except ImportError as exc:
        raise ConfigError(
            f"WebRtcVAD needs the local extra ({exc}): pip install 'voxtra[local]'"
        ) from exc


class WebRtcVADSession:
    """One call's detector; webrtcvad keeps smoothing state, so never share it."""

    def __init__(self, mode: int) -> None:
        self._vad = _webrtcvad().Vad(mode)
        self.odd_frames = 0
        """Frames that were not whole 10 ms pieces (the tail was ignored, see is_speech)."""

    def is_speech(self, chunk: AudioChunk) -> bool:
        """Whether the frame holds speech. Frames of 10/20/30 ms go straight to webrtcvad;
        longer multiples of 10 ms are judged by the majority of their 10 ms pieces.

        A frame of any other length never raises: it is judged on its whole 10 ms pieces
        (a shorter one is not speech) and counted in ``odd_frames``. Raising made the
        pipeline drop WebRTC VAD for an energy gate for the rest of the call, and an
        empty or 161-byte RTP payload was enough to do that.
        """
        rate = chunk.sample_rate
        data = chunk.data
        if chunk.codec is Codec.PCM16 and (rate, len(data)) in _DIRECT:
            return bool(self._vad.is_speech(data, rate))
        if rate not in _RATES:
            raise MediaError(f"WebRtcVAD needs 8/16/32/48 kHz audio, got {rate} Hz")
        pcm = g711.decode(chunk.data, chunk.codec)
        samples = len(pcm) // 2
        per_10ms = rate // 100
        if samples == 0 or samples % per_10ms or len(pcm) % 2:
            self.odd_frames += 1
            if self.odd_frames == 1 or self.odd_frames % 1000 == 0:
                logger.debug(
                    "WebRtcVAD: %d frame(s) not whole 10 ms pieces (last: %d bytes at %d Hz)",
                    self.odd_frames,
                    len(chunk.data),
                    rate,
                )
            samples -= samples % per_10ms
            if not samples:
                return False
            pcm = pcm[: samples * 2]
        if samples // per_10ms * 10 in _FRAME_MS:
            return bool(self._vad.is_speech(pcm, rate))
        step = per_10ms * 2
        votes = [
            bool(self._vad.is_speech(pcm[i : i + step], rate)) for i in range(0, len(pcm), step)
        ]
        return sum(votes) * 2 > len(votes)


class WebRtcVAD:
    """Factory of per-call WebRTC VAD sessions. ``mode`` 0 (lenient) .. 3 (aggressive)."""

    name = "webrtc"

    def __init__(self, mode: int = 2) -> None:
        if mode not in (0, 1, 2, 3):
            raise ConfigError(f"WebRtcVAD mode must be 0..3, not {mode!r}")
        _webrtcvad()  # fail now, with the extra's name, not when a call starts
        self.mode = mode

    def session(self) -> WebRtcVADSession:
        return WebRtcVADSession(self.mode)
