"""One concept, one default: the speech guards are the same wherever they are set."""

from __future__ import annotations

import inspect

from voxtra import VoiceConfig
from voxtra.pipeline import VoicePipeline
from voxtra.pipeline.turn import END_SILENCE_MS, MIN_SPEECH_MS, TurnDetector


def _default(callable_: object, name: str) -> object:
    return inspect.signature(callable_).parameters[name].default  # type: ignore[arg-type]


def test_min_speech_and_end_silence_have_one_default() -> None:
    for name, value in (("min_speech_ms", MIN_SPEECH_MS), ("end_silence_ms", END_SILENCE_MS)):
        assert _default(TurnDetector, name) == value
        assert _default(VoicePipeline, name) == value
        assert getattr(VoiceConfig(), name) == value
