from __future__ import annotations

from voxtra.media.frames import AudioChunk, Codec
from voxtra.pipeline.events import SpeechEndedEvent, SpeechStartedEvent
from voxtra.pipeline.testing import tone_frames
from voxtra.pipeline.turn import TurnDetector, frame_energy_db

LOUD, QUIET = -15.0, -70.0


def run(det: TurnDetector, frames: list[tuple[bool, float]], agent: bool = False) -> list[object]:
    """Feed (is_speech, energy) frames; return (frame index, event) pairs."""
    out: list[object] = []
    for i, (speech, energy) in enumerate(frames):
        ev = det.feed(speech, energy, agent_speaking=agent)
        if ev is not None:
            out.append((i, ev))
    return out


def test_onset_needs_min_speech() -> None:
    det = TurnDetector(min_speech_ms=100)
    # 4 speech frames (80 ms), a long gap, 4 more: each burst is too short.
    burst = [(True, LOUD)] * 4 + [(False, QUIET)] * 3
    assert run(det, burst * 2) == []
    assert not det.in_speech
    assert run(det, [(True, LOUD)] * 5) == [(4, SpeechStartedEvent(speech_ms=100.0))]
    assert det.in_speech


def test_single_vad_dropout_inside_onset_is_tolerated() -> None:
    det = TurnDetector(min_speech_ms=100)
    frames = [(True, LOUD)] * 3 + [(False, LOUD)] + [(True, LOUD)] * 2
    assert run(det, frames) == [(5, SpeechStartedEvent(speech_ms=100.0))]


def test_end_of_turn_after_silence() -> None:
    det = TurnDetector(min_speech_ms=100, end_silence_ms=600)
    speech = [(True, LOUD)] * 25  # 500 ms
    pause = [(False, QUIET)] * 20  # 400 ms: a pause inside the turn
    events = run(det, speech + pause + speech + [(False, QUIET)] * 30)
    assert events[0] == (4, SpeechStartedEvent(speech_ms=100.0))
    # 500 + 400 + 500 ms of speech, ended by the 30th silent frame (600 ms).
    assert events[1] == (len(speech) * 2 + len(pause) + 29, SpeechEndedEvent(speech_ms=1400.0))
    assert len(events) == 2 and not det.in_speech


def test_quiet_noise_is_not_speech() -> None:
    det = TurnDetector(min_energy_db=-55)
    assert run(det, [(True, -60.0)] * 50) == []


def test_echo_of_the_agent_does_not_barge_in_but_the_caller_does() -> None:
    det = TurnDetector(min_speech_ms=100, echo_margin_db=10)
    # The agent talks; its echo comes back at about -35 dBFS and the VAD calls it speech.
    echo = [(True, -35.0 + (i % 5)) for i in range(100)]
    assert run(det, echo, agent=True) == []
    assert -36 <= det.echo_db <= -30
    assert det.threshold_db(agent_speaking=True) >= -26
    # The caller speaks over it, 20 dB louder: onset after the guard.
    assert run(det, [(True, -12.0)] * 5, agent=True) == [(4, SpeechStartedEvent(speech_ms=100.0))]


def test_same_level_is_speech_when_the_agent_is_silent() -> None:
    det = TurnDetector(min_speech_ms=100)
    assert run(det, [(True, -35.0)] * 5, agent=False) == [(4, SpeechStartedEvent(speech_ms=100.0))]


def test_frame_energy_db() -> None:
    assert frame_energy_db(AudioChunk.silence(Codec.ULAW)) == -100.0
    assert frame_energy_db(AudioChunk.silence(Codec.PCM16, 16000)) == -100.0
    for codec in (Codec.ULAW, Codec.ALAW, Codec.PCM16):
        tone = tone_frames(20, level_db=-20, codec=codec)[0]
        assert abs(frame_energy_db(tone) + 20) < 0.5
