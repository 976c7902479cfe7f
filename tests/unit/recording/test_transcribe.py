"""``transcribe_file``: the file as the STT would hear the call, an end of speech after
each pause, the finals joined; bad files are a RecordingError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voxtra.errors import RecordingError
from voxtra.pipeline.io import MonotonicClock
from voxtra.recording.transcribe import transcribe_file
from voxtra.testing import audio
from voxtra.testing.doubles import ScriptedSTT


def _speech_with_a_pause(path: Path) -> Path:
    tone = audio.tone(300, 0.5, 8000, amplitude=0.3)
    quiet = np.zeros(8000, dtype=np.int16)  # one second
    return audio.write_wav(path, np.concatenate([tone, quiet, tone, quiet[:2000]]), 8000)


async def test_each_utterance_is_finalised_and_the_finals_joined(tmp_path: Path) -> None:
    stt = ScriptedSTT(["call me back", "tomorrow morning"], MonotonicClock(), delay=0.0)
    text = await transcribe_file(_speech_with_a_pause(tmp_path / "two.wav"), stt)
    assert text == "call me back tomorrow morning"
    [stream] = stt.streams
    assert stream.closed and stream.frames > 0


async def test_silence_is_an_empty_transcript(tmp_path: Path) -> None:
    path = audio.write_wav(tmp_path / "quiet.wav", np.zeros(16000, dtype=np.int16), 8000)
    stt = ScriptedSTT(["never said"], MonotonicClock(), delay=0.0)
    assert await transcribe_file(path, stt) == ""


async def test_a_file_that_is_not_pcm_wav_is_a_recording_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav")
    with pytest.raises(RecordingError, match="not a WAV"):
        await transcribe_file(bad, ScriptedSTT([], MonotonicClock()))
