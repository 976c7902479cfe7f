"""Experiment: how pocketsphinx's results depend on the noise in the silence around words.

Why moving PocketSphinxSTT from its own soxr converter to the streaming FIR
(``ChunkConverter``) "dropped final words": libsoxr dithers int16 output by default,
so the old converter put +-1 LSB of noise on every sample, silence included; the FIR
keeps digital silence exact zeros, and on those the decoder loses an utterance's last
word more often. The provider now adds seeded noise of its own to each utterance.

Each phrase of the demo vocabulary is spoken by espeak, put through a phone line
(8 kHz u-law), placed at 16 offsets in the 20 ms frame grid with 0.5 s of digital
silence before and 0.6 s after, upsampled to 16 kHz by each candidate and decoded
(keyword grammar). Per candidate: exact phrases, word error rate, and how often the
phrase's last word is missing.

    .venv/bin/python bench/pocketsphinx_silence.py
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

import numpy as np
import soxr

from voxtra.media import g711
from voxtra.media.resample import StreamResampler
from voxtra.providers import pocketsphinx_stt as ps
from voxtra.providers.espeak_tts import EspeakTTS
from voxtra.providers.rules import RulesAgent

PHRASES = (
    "what are your opening hours",
    "when are you open",
    "what can you do",
    "tell me a long story",
    "what is the weather in london",
    "weather in paris",
    "weather in berlin",
    "thank you goodbye",
    "that is all",
    "good morning",
    "good afternoon",
    "tell me a story",
    "good evening",
    "hello",
)
OFFSETS = range(0, 320, 20)  # u-law samples


def fir(pcm8: bytes) -> bytes:
    rs = StreamResampler(8000, 16000)
    return b"".join(rs.process(pcm8[i : i + 320]) for i in range(0, len(pcm8), 320)) + rs.flush()


def soxr_stream(pcm8: bytes, dtype: str) -> bytes:
    """soxr's stream API as the old converter used it (int16: libsoxr dithers)."""
    rs = soxr.ResampleStream(8000, 16000, 1, dtype=dtype, quality="HQ")
    x = np.frombuffer(pcm8, "<i2").astype(dtype)
    parts = [rs.resample_chunk(x[i : i + 160]) for i in range(0, len(x), 160)]
    parts.append(rs.resample_chunk(np.zeros(0, dtype), last=True))
    y = np.concatenate(parts)
    return np.clip(np.rint(y), -32768, 32767).astype("<i2").tobytes()


CANDIDATES: dict[str, tuple[Callable[[bytes], bytes], bool]] = {
    "soxr int16 (old converter)": (lambda p: soxr_stream(p, "int16"), False),
    "soxr, no dither": (lambda p: soxr_stream(p, "float32"), False),
    "FIR, no noise": (fir, False),
    "FIR + provider noise (now)": (fir, True),
}


def word_errors(ref: str, hyp: str) -> int:
    r, h = ref.split(), hyp.split()
    row = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        prev, row[0] = row[0], i
        for j, hw in enumerate(h, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (rw != hw))
    return row[-1]


async def phone(text: str) -> bytes:
    pcm = b"".join([c.data async for c in EspeakTTS(rate=150).synthesize(text)])
    pcm8 = soxr.resample(np.frombuffer(pcm, "<i2"), 22050, 8000).astype("<i2")
    return g711.pcm16_to_ulaw(pcm8.tobytes())


async def main() -> None:
    jsgf = ps._keywords_jsgf(RulesAgent().vocabulary(), loop=True)
    words = [w for p in RulesAgent().vocabulary() for w in ps._words(p)]
    rec = ps._Recognizer(jsgf, {"loglevel": "FATAL"}, words)
    dither = ps._dither
    stats = {name: collections.Counter[str]() for name in CANDIDATES}
    for phrase in PHRASES:
        speech = await phone(phrase)
        for offset in OFFSETS:
            line = b"\xff" * (4000 + offset) + speech + b"\xff" * 4800
            pcm8 = g711.ulaw_to_pcm16(line)
            for name, (upsample, noise) in CANDIDATES.items():
                ps._dither = dither if noise else (lambda pcm: pcm)
                text, _ = rec.decode(upsample(pcm8))
                s = stats[name]
                s["n"] += 1
                s["words"] += len(phrase.split())
                s["errors"] += word_errors(phrase, text)
                s["exact"] += text == phrase
                s["last lost"] += phrase.split()[-1] not in text.split()
    ps._dither = dither
    for name, s in stats.items():
        print(
            f"{name:28s} exact {s['exact']:3d}/{s['n']}  WER {100 * s['errors'] / s['words']:4.1f}%"
            f"  last word missing {s['last lost']:3d}/{s['n']}"
        )


if __name__ == "__main__":
    asyncio.run(main())
