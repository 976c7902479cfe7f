"""Turn taking from per-frame VAD decisions: when the caller starts and stops talking.

Pure logic, no I/O, no clock: feed it one frame at a time and it answers with at most
one event. Two guards against false barge-in: speech must last ``min_speech_ms`` before
it counts as an onset (a click or a cough is shorter), and while the agent is speaking
a frame must also be louder than the agent's own echo on the caller's line by
``echo_margin_db`` (the echo level is learnt from the frames heard while the agent
talks: during the first ``echo_training_ms`` of each agent utterance the line is
assumed to carry only echo, so barge-in is deaf for that long; afterwards the estimate
follows the quieter frames slowly). A single non-speech frame inside an onset is
tolerated, as VADs flicker.

When the pipeline also says how loud its own audio was on the way out
(``agent_level_db``: the loudest of what played in the last few hundred ms), the echo
is judged against that instead: the line's *echo return* (line level minus the
agent's level, ``erl_db``) is learnt in the same first 200 ms of each agent
utterance, and a frame must be ``echo_margin_db`` louder than the agent's level plus that return.
The gate then follows the agent's own loudness (a fixed echo level let the louder
parts of an answer through: bench/turn_quality.py, echo 20 dB down cut the agent off
in 6 of 6 cases), and it holds for the echo's tail after the agent stopped, which
otherwise started a caller turn that answered the agent's own words.
"""

from __future__ import annotations

import math
import re

import numpy as np

from voxtra.media.frames import AudioChunk
from voxtra.media.g711 import decode
from voxtra.pipeline.events import SpeechEndedEvent, SpeechStartedEvent

__all__ = [
    "BACKCHANNELS",
    "TurnDetector",
    "frame_energy_db",
    "is_backchannel",
    "is_echo",
    "looks_unfinished",
    "pcm16_energy_db",
]

_SILENCE_DB = -100.0
_MAX_ERL_DB = 0.0
"""The echo is never taken to be louder than the agent's own audio: caller speech in
the training window must not make barge-in deaf for the rest of the call."""


def frame_energy_db(chunk: AudioChunk) -> float:
    """RMS level of a frame in dBFS (full-scale sine ~ -3 dB, digital silence -100).

    The pipeline hands it PCM16 (its input is converted once); G.711 is decoded here
    for anyone else."""
    return pcm16_energy_db(decode(chunk.data, chunk.codec))


def pcm16_energy_db(pcm: bytes) -> float:
    """``frame_energy_db`` of PCM16 bytes (the pipeline's input loop calls it directly:
    its frames are PCM16 already)."""
    if not pcm:
        return _SILENCE_DB
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    # np.dot, not np.mean(x * x): the same figure in 1.3 us instead of 3.5 (20 ms at
    # 16 kHz), and it runs on every caller frame
    mean_square = float(np.dot(x, x)) / len(x)
    if mean_square < 1.0:
        return _SILENCE_DB
    return 10.0 * math.log10(mean_square / 32768.0**2)


MIN_SPEECH_MS = 60.0
"""Caller speech needed before it counts (and barges in): the one default of
``TurnDetector``, ``VoicePipeline`` and ``VoiceConfig``. 60 ms met the 150 ms stop
target through a real phone (p95 149 ms); raise it on noisy lines."""
END_SILENCE_MS = 600.0
"""Silence that ends the caller's turn (the same three places)."""
MIN_PAUSE_MS = 200.0
"""The shortest pause a finished-looking transcript ends the turn in (``end_now``).
WhisperSTT starts decoding 100 ms into a pause so that its transcript is ready by then;
the turn still ends no sooner than 200 ms into it, as when the decode began there
(bench/turn_quality.py: no question cut short at 200 ms)."""


BACKCHANNELS = frozenset(
    {
        "mm",
        "mmm",
        "hm",
        "hmm",
        "mhm",
        "mm-hmm",
        "uh-huh",
        "uh",
        "huh",
        "ah",
        "oh",
        "yeah",
        "yes",
        "yep",
        "yup",
        "okay",
        "ok",
        "right",
        "sure",
        "alright",
        "all",
        "i",
        "see",
        "got",
        "it",
        "cool",
        "great",
        "fine",
        "good",
        "nice",
        "wow",
        "really",
    }
)
"""Words a caller says while listening ("mm-hmm", "yeah", "okay", "I see", "got it"):
an utterance made only of these, while the agent speaks, does not interrupt it."""


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower().replace("-", " "))


def is_backchannel(text: str, words: frozenset[str] = BACKCHANNELS) -> bool:
    """Whether ``text`` (a transcript) is only listening noises: no request in it.
    Empty text (a cough, a click, nothing recognised) counts: it must not cut the
    agent off either. Four words or more are never one."""
    found = _words(text)
    parts = {w for word in words for w in _words(word)}
    return len(found) < 4 and all(w in parts for w in found)


def is_echo(text: str, agent_text: str) -> bool:
    """Whether ``text`` is the agent's own words come back (an echo transcribed): two
    words or more, every one of them in what the agent was saying."""
    found = _words(text)
    said = set(_words(agent_text))
    return len(found) >= 2 and all(w in said for w in found)


_UNFINISHED_WORDS = frozenset(
    [
        "um",
        "uh",
        "er",
        "erm",
        "and",
        "or",
        "but",
        "so",
        "because",
        "then",
        "the",
        "a",
        "an",
        "to",
        "of",
        "with",
        "for",
        "at",
        "in",
        "on",
        "is",
        "are",
        "was",
        "my",
        "our",
        "your",
        "his",
        "her",
        "their",
        "its",
        "from",
        "by",
        "zero",
        "oh",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "hundred",
        "thousand",
        "point",
        "dot",
        "double",
    ]
)


def looks_unfinished(text: str) -> bool:
    """Whether a transcript so far stops mid-thought: on a digit or number word, a
    filler ("um", "uh"), a joining word ("and", "to", "my") or a comma. A caller who
    pauses there is rarely done (a phone number read in groups, a thought gathered)."""
    stripped = text.strip()
    if not stripped:
        return False
    if stripped[-1] in ",-" or stripped.endswith("...") or stripped[-1].isdigit():
        return True
    found = _words(stripped)
    return bool(found) and found[-1] in _UNFINISHED_WORDS


class TurnDetector:
    """Endpointing state machine: idle -> (onset guard) -> speaking -> (silence) -> idle."""

    def __init__(
        self,
        *,
        min_speech_ms: float = MIN_SPEECH_MS,
        end_silence_ms: float = END_SILENCE_MS,
        min_energy_db: float = -55.0,
        echo_margin_db: float = 10.0,
        echo_decay: float = 0.05,
        echo_training_ms: float = 200.0,
        min_pause_ms: float = MIN_PAUSE_MS,
    ) -> None:
        if min_speech_ms < 0 or end_silence_ms <= 0:
            raise ValueError("min_speech_ms must be >= 0 and end_silence_ms > 0")
        self.min_speech_ms = min_speech_ms
        self.end_silence_ms = end_silence_ms
        self.min_energy_db = min_energy_db
        self.echo_margin_db = echo_margin_db
        self.echo_decay = echo_decay
        self.echo_training_ms = echo_training_ms
        self.min_pause_ms = min_pause_ms
        self._agent_ms = 0.0
        self.in_speech = False
        self.echo_db = _SILENCE_DB
        """Running estimate of the agent's echo level on the inbound line."""
        self.erl_db = _SILENCE_DB
        """Echo return: line level minus the agent's own level (dB), learnt per call."""
        self._onset_ms = 0.0
        self._gap_frames = 0
        self._speech_ms = 0.0
        self._silence_ms = 0.0
        self._end_ms = end_silence_ms
        """The silence that ends this turn: ``end_silence_ms``, or what ``hold`` set."""
        self._end_now = False

    @property
    def silence_ms(self) -> float:
        """Silence since the caller's last speech in the current turn (0 while speaking
        or between turns)."""
        return self._silence_ms if self.in_speech else 0.0

    def hold(self, silence_ms: float) -> None:
        """Let this pause run to ``silence_ms`` before the turn ends (the transcript so
        far looks unfinished); back to ``end_silence_ms`` when the caller speaks."""
        if self.in_speech:
            self._end_ms = max(self._end_ms, silence_ms)
            # The latest transcript of the pause decides: a finished-looking partial
            # ("I'd like to book a table") followed in the same pause by a longer one
            # that stops on "for" used to end the turn at 200 ms all the same.
            self._end_now = False

    def end_now(self) -> None:
        """End the turn at the next silent frame (the transcript so far is finished),
        or once the pause reaches ``min_pause_ms`` if it is shorter."""
        if self.in_speech and self._silence_ms > 0:
            self._end_now = True

    def threshold_db(self, agent_speaking: bool, agent_level_db: float | None = None) -> float:
        """The level a frame must reach to count as caller speech right now."""
        if agent_level_db is not None:
            echo = agent_level_db + self.erl_db + self.echo_margin_db
            return max(self.min_energy_db, echo)
        if agent_speaking:
            return max(self.min_energy_db, self.echo_db + self.echo_margin_db)
        return self.min_energy_db

    def feed(
        self,
        is_speech: bool,
        energy_db: float,
        *,
        frame_ms: float = 20.0,
        agent_speaking: bool = False,
        at: float = 0.0,
        agent_level_db: float | None = None,
    ) -> SpeechStartedEvent | SpeechEndedEvent | None:
        """Account for one frame; return the event it completes, if any (stamped ``at``).

        ``agent_level_db``: the loudest level of the agent's own audio played in the
        last few hundred ms (None: none), for the echo gate."""
        if agent_speaking:
            if not self._agent_ms:
                # Each utterance learns the echo return afresh: kept for the call, a
                # caller talking over one answer's first 200 ms (learnt as a 0 dB
                # return) left every later answer's gate 10 dB over the agent's own
                # level, so a caller no louder than the agent could never interrupt.
                self.erl_db = _SILENCE_DB
            self._agent_ms += frame_ms
            if self._agent_ms <= self.echo_training_ms:
                # The agent just started: whatever the line carries now is our echo.
                self.echo_db = max(self.echo_db, energy_db)
                if agent_level_db is not None:
                    echo_return = min(_MAX_ERL_DB, energy_db - agent_level_db)
                    self.erl_db = max(self.erl_db, echo_return)
        else:
            self._agent_ms = 0.0
        gate = self.threshold_db(agent_speaking, agent_level_db)
        speech = is_speech and energy_db >= gate
        if agent_speaking and energy_db < gate and not self._onset_ms:
            # Track the echo from frames that are no candidate caller onset.
            self.echo_db += (energy_db - self.echo_db) * self.echo_decay
            if agent_level_db is not None and energy_db >= self.min_energy_db:
                # Only down, and slowly: the return is learnt while the agent starts
                # (the training window); later frames under the gate may be the
                # caller's quiet onset, and taking them up made barge-in deaf
                # (bench/turn_quality.py: 11 of 18 interruptions missed).
                echo_return = energy_db - agent_level_db
                if echo_return < self.erl_db:
                    self.erl_db += (echo_return - self.erl_db) * self.echo_decay / 25

        if not self.in_speech:
            if speech:
                self._onset_ms += frame_ms
                self._gap_frames = 0
                if self._onset_ms >= self.min_speech_ms:
                    self.in_speech = True
                    self._speech_ms = self._onset_ms
                    self._silence_ms = 0.0
                    self._onset_ms = 0.0
                    return SpeechStartedEvent(at, self._speech_ms)
            elif self._onset_ms:
                self._gap_frames += 1
                if self._gap_frames > 1:
                    self._onset_ms = 0.0
                    self._gap_frames = 0
            return None

        if speech:
            self._speech_ms += frame_ms + self._silence_ms
            self._silence_ms = 0.0
            self._end_ms = self.end_silence_ms
            self._end_now = False
            return None
        self._silence_ms += frame_ms
        if self._silence_ms >= self._end_ms or (
            self._end_now and self._silence_ms >= self.min_pause_ms
        ):
            self.in_speech = False
            self._silence_ms = 0.0
            self._end_ms = self.end_silence_ms
            self._end_now = False
            return SpeechEndedEvent(at, self._speech_ms)
        return None

    @property
    def speech_ms(self) -> float:
        """Speech so far in the caller's current turn (0 between turns)."""
        return self._speech_ms if self.in_speech else 0.0

    def reset(self) -> None:
        self.in_speech = False
        self._end_ms = self.end_silence_ms
        self._end_now = False
        self.erl_db = _SILENCE_DB
        self._agent_ms = 0.0
        self._onset_ms = 0.0
        self._gap_frames = 0
        self._speech_ms = 0.0
        self._silence_ms = 0.0
