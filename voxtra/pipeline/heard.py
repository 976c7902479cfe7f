"""What a caller heard of an answer cut short: the words that fit in the played audio.

Shared by the pipeline and the speech-to-speech engines, which both keep each spoken
answer's text and where its audio sits on the playout timeline, and on a barge-in cut
the answer's text (history, ``BargeInEvent.heard_text``) at the milliseconds played.
"""

from __future__ import annotations

__all__ = ["MS_PER_CHAR", "heard_words", "prefix_words"]

MS_PER_CHAR = 65.0
"""Speech rate used to guess an answer's length while its audio is still arriving."""


def prefix_words(text: str, fraction: float) -> str:
    """The words of ``text`` that fit entirely in its first ``fraction`` (by characters)."""
    limit = fraction * len(text)
    words: list[str] = []
    pos = 0
    for word in text.split():
        pos = text.index(word, pos) + len(word)
        if pos > limit:
            break
        words.append(word)
    return " ".join(words)


def heard_words(text: str, heard_ms: float, audio_ms: float, *, complete: bool) -> str:
    """The words of ``text`` heard in its first ``heard_ms`` of audio, by proportion:
    of ``audio_ms`` once all of the audio has arrived (``complete``), else of the longer
    of what has arrived and the text's length spoken at ``MS_PER_CHAR``."""
    if heard_ms <= 0:
        return ""
    total = audio_ms if complete else max(audio_ms, len(text) * MS_PER_CHAR)
    return prefix_words(text, heard_ms / total if total else 0.0)
