"""Benchmark: turn-taking quality of the voice pipeline on a generated corpus.

Each case is one short call through the real :class:`VoicePipeline` (real WebRTC VAD,
the real turn detector and barge-in logic, the rule agent) on ``MemoryMediaIO`` with
the virtual clock, so timings are exact and repeatable. The caller's line is a track
of espeak-ng speech (8 kHz mu-law) with pauses, optionally with line noise and with
the agent's own audio coming back as echo (delayed, attenuated). The agent's voice is
espeak-ng too, rendered beforehand (a canned TTS) so that it keeps to the virtual clock.

The STT is an oracle on the virtual clock: at each end of speech it answers with the
script's words for the caller speech it was sent, or with the agent's words if it was
sent only echo. This measures the turn taking, not recognition
(``bench/stt_offline.py`` measures that). Its decode time is measured, not assumed:
before the cases run, the real ``WhisperSTT`` (the demo's STT, its defaults) decodes
each finished question's audio as its early decode would have it (up to 200 ms into
the pause), timed on the wall clock of this box; a question case waits its own decode
time, every other case the median of them. ``--stt-delay-ms`` fixes it instead (300
was the figure assumed before Whisper's window was cut to 10 s).

Cases and figures:

* backchannels ("mm-hmm", "yeah", "okay", "right", "uh-huh") while the agent speaks:
  **false interruptions** = the answer was cut off (a ``BargeInEvent``); target <= 5%.
  Pauses the agent resumed from are counted and their gap reported.
* real interruptions ("wait, what about Paris", "stop", "no, the opening hours"):
  **missed** = no barge-in; target 0. Stop time = caller onset -> agent audio flushed.
* echo only (the agent's audio back at -20/-12/-6 dB, 40-120 ms late): any barge-in
  is a false interruption (counted with the backchannels' rate, reported apart).
* digit strings and "um" with pauses of 0.4-1.0 s inside: **premature end of turn** =
  the turn ended before the caller's last word; target <= 5%.
* finished questions: **end-of-turn delay** = end of the caller's last word -> turn
  ended (``SpeechEndedEvent``); target p50 <= 400 ms; p95 reported.

    .venv/bin/python bench/turn_quality.py [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import soxr

from voxtra.media import g711
from voxtra.media.frames import AudioChunk, Codec
from voxtra.pipeline import (
    BargeInEvent,
    PipelineEvent,
    SpeechEndedEvent,
    VoicePipeline,
)
from voxtra.pipeline.io import Clock
from voxtra.pipeline.testing import MemoryMediaIO
from voxtra.providers.base import Transcript
from voxtra.providers.espeak_tts import EspeakTTS
from voxtra.providers.rules import RulesAgent, default_intents
from voxtra.providers.webrtc_vad import WebRtcVAD

RATE = 8000
FRAME = 160  # samples per 20 ms
STT_DELAY_S = 0.3
"""The decode time used without Whisper installed (or ``--stt-delay-ms``)."""
EARLY_S = 0.1
"""Like WhisperSTT: a decode starts after 100 ms of pause, and gives a partial
(``--early-decode-ms``)."""
DECODES = {"early": 0, "dropped": 0}
"""Early decodes started in pauses, and those dropped because the caller spoke on (each
one a decode's CPU for nothing)."""
STORY = next(i.answer for i in default_intents() if i.name == "story")

BACKCHANNELS = ("mm-hmm", "yeah", "okay", "right", "uh-huh")
INTERRUPTIONS = ("wait, what about Paris?", "stop", "no, I want the opening hours")
QUESTIONS = (
    "When are you open?",
    "Is it raining in Berlin today?",
    "What can you do?",
    "Tell me a story.",
    "Thanks, that is all.",
)
DIGITS = (
    ("my number is four one five", "two two three", "nine eight seven six"),
    ("the code is one two", "three four"),
    ("I would like, um", "to book a table"),
    ("my account is, uh", "seven seven one"),
)
PAUSES_S = (0.4, 0.6, 0.8, 1.0)

TARGETS = {"false_interruptions": 0.05, "missed": 0, "premature": 0.05, "eot_p50_ms": 400.0}


async def speech(text: str, voice: str = "en-us", rate: int = 150) -> np.ndarray[Any, Any]:
    """espeak-ng's ``text`` at 8 kHz as float samples, trimmed of leading/trailing quiet."""
    tts = EspeakTTS(voice=voice, rate=rate)
    pcm = b"".join([c.data async for c in tts.synthesize(text)])
    x = soxr.resample(np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768, 22050, RATE)
    loud = np.flatnonzero(np.abs(x) > 0.01)
    trimmed: np.ndarray[Any, Any] = x[loud[0] : loud[-1] + 1] if len(loud) else x
    return trimmed


@dataclass
class Track:
    """The caller's side of the line: samples, and when each scripted utterance is."""

    samples: np.ndarray[Any, Any] = field(default_factory=lambda: np.zeros(0))
    spans: list[tuple[float, float, str]] = field(default_factory=list)

    def pause(self, seconds: float) -> None:
        self.samples = np.concatenate([self.samples, np.zeros(int(seconds * RATE))])

    def say(self, x: np.ndarray[Any, Any], text: str) -> None:
        start = len(self.samples) / RATE
        self.samples = np.concatenate([self.samples, x])
        self.spans.append((start, len(self.samples) / RATE, text))


class LineMediaIO(MemoryMediaIO):
    """MemoryMediaIO whose caller line carries a track, line noise and the agent's echo."""

    def __init__(
        self,
        track: Track,
        *,
        echo_db: float | None = None,
        echo_delay_ms: int = 60,
        noise_db: float | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.track = track
        self.echo_gain = None if echo_db is None else 10 ** (echo_db / 20)
        self.echo_frames = echo_delay_ms // 20
        self.noise = None if noise_db is None else 10 ** (noise_db / 20) * np.sqrt(2)
        self.rng = np.random.default_rng(seed)
        self.out_by_tick: dict[int, np.ndarray[Any, Any]] = {}

    async def frames(self) -> AsyncIterator[AudioChunk]:
        tick = 0
        async for _ in super().frames():
            start = tick * FRAME
            x = self.track.samples[start : start + FRAME]
            x = np.pad(x, (0, FRAME - len(x)))
            if self.played and abs(self.played[-1].at - self.clock.now()) < 1e-6:
                out = self.played[-1].chunk
                pcm = g711.decode(out.data, out.codec)
                self.out_by_tick[tick] = np.frombuffer(pcm, dtype="<i2") / 32768.0
            if self.echo_gain is not None:
                echo = self.out_by_tick.get(tick - self.echo_frames)
                if echo is not None and len(echo) == FRAME:
                    x = x + self.echo_gain * echo
            if self.noise is not None:
                x = x + self.rng.normal(0, self.noise / np.sqrt(2), FRAME)
            pcm16 = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2").tobytes()
            yield AudioChunk(g711.pcm16_to_ulaw(pcm16), RATE, Codec.ULAW)
            tick += 1

    def track_ended(self) -> bool:
        return self.clock.now() >= len(self.track.samples) / RATE + 0.02


class CannedTTS:
    """espeak-ng audio rendered before the call (8 kHz PCM16), streamed in 100 ms pieces
    with no delay: a TTS that keeps to the virtual clock."""

    name = "canned-espeak"
    sample_rate = RATE

    def __init__(self, audio: dict[str, bytes]) -> None:
        self.audio = audio

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        pcm = self.audio.get(text) or b"\0\0" * RATE  # unknown text: 1 s of quiet
        for i in range(0, len(pcm), 1600):
            yield AudioChunk(pcm[i : i + 1600], RATE, Codec.PCM16)
            await anyio.lowlevel.checkpoint()


class OracleStream:
    def __init__(self, owner: OracleSTT) -> None:
        self.owner = owner
        self.first: float | None = None
        self.last = 0.0
        self.send_q: asyncio.Queue[Transcript | None] = asyncio.Queue()
        self.pending: set[asyncio.Future[None]] = set()
        self.decoded: tuple[float, str] | None = None
        """The pause's decode: the final, as in WhisperSTT, if no speech came since."""

    async def send(self, chunk: AudioChunk) -> None:
        now = self.owner.clock.now()
        if self.first is None:
            self.first = now
        self.last = now
        spans = [sp for sp in self.owner.track.spans if sp[0] < now and sp[1] > self.first - 0.6]
        if spans and self.owner.partials:
            end = spans[-1][1]
            if end + EARLY_S <= now < end + EARLY_S + 0.02:  # the pause's early decode
                text = " ".join(t for _, _, t in spans)
                DECODES["early"] += 1
                task = asyncio.ensure_future(self._partial(text, now))
                self.pending.add(task)
                task.add_done_callback(self.pending.discard)

    async def _partial(self, text: str, since: float) -> None:
        await self.owner.clock.sleep(self.owner.delay_s)
        now = self.owner.clock.now()
        if any(since < sp[0] <= now for sp in self.owner.track.spans):
            DECODES["dropped"] += 1
            return  # the caller spoke on: that decode is dropped
        self.decoded = (since, text)
        await self.send_q.put(Transcript(text, is_final=False))

    async def end_of_speech(self) -> None:
        first, last = self.first or 0.0, self.last
        self.first = None
        words = [t for s, e, t in self.owner.track.spans if s < last and e > first]
        text = " ".join(words) if words else (self.owner.echo_text or "")

        decoded, self.decoded = self.decoded, None
        fresh = decoded is not None and not any(
            decoded[0] < sp[0] <= self.owner.clock.now() for sp in self.owner.track.spans
        )

        async def later() -> None:
            await self.owner.clock.sleep(0.02 if fresh else self.owner.delay_s)
            await self.send_q.put(Transcript(text, is_final=True))

        task = asyncio.ensure_future(later())
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def close(self) -> None:
        await self.send_q.put(None)

    async def transcripts(self) -> AsyncIterator[Transcript]:
        while (t := await self.send_q.get()) is not None:
            yield t


class OracleSTT:
    name = "oracle"
    sample_rate = RATE

    def __init__(
        self,
        track: Track,
        clock: Clock,
        echo_text: str | None,
        partials: bool = True,
        delay_s: float = STT_DELAY_S,
    ) -> None:
        self.delay_s = delay_s
        self.track = track
        self.clock = clock
        self.echo_text = echo_text
        self.partials = partials

    async def stream(self) -> OracleStream:
        return OracleStream(self)


@dataclass
class Case:
    kind: str
    label: str
    barge_ins: int = 0
    flushes: int = 0
    stop_ms: float | None = None
    premature: bool = False
    eot_ms: float | None = None
    resumed_gap_ms: float | None = None
    detail: str = ""


async def run_case(
    track: Track,
    tts_audio: dict[str, bytes],
    *,
    agent_first: bool,
    echo_db: float | None = None,
    echo_delay_ms: int = 60,
    noise_db: float | None = None,
    seed: int = 0,
    options: dict[str, Any] | None = None,
    stt_delay_s: float = STT_DELAY_S,
) -> tuple[LineMediaIO, VoicePipeline, list[PipelineEvent]]:
    media = LineMediaIO(
        track, echo_db=echo_db, echo_delay_ms=echo_delay_ms, noise_db=noise_db, seed=seed
    )
    stt = OracleSTT(
        track,
        media.clock,
        "once upon a time" if echo_db is not None else None,
        delay_s=stt_delay_s,
    )
    pipeline = VoicePipeline(
        stt,
        RulesAgent(),
        CannedTTS(tts_audio),
        WebRtcVAD(),
        greeting=STORY if agent_first else None,
        **(options or {}),
    )
    events: list[PipelineEvent] = []
    pipeline.on_event(events.append)

    async def hang_up_after_track() -> None:
        await media.wait_until(media.track_ended, 120)
        await media.wait_until(lambda: media.clock.now() > len(track.samples) / RATE + 2.5, 10)
        media.hangup()

    async with anyio.create_task_group() as tg:
        tg.start_soon(hang_up_after_track)
        await pipeline.run(media, clock=media.clock)
    return media, pipeline, events


def of(events: Sequence[PipelineEvent], kind: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


async def whisper_decode_ms(tracks: list[tuple[Track, float | None]]) -> list[float] | None:
    """Wall time of the real WhisperSTT decoding each track's audio as its early decode
    would (from the pre-roll to 200 ms into the pause, line noise added); None without
    the whisper extra."""
    try:
        from voxtra.providers.whisper_stt import WhisperSTT

        stt = WhisperSTT()
    except Exception as exc:  # the whisper extra is optional
        print(f"(no Whisper, decode time assumed {STT_DELAY_S * 1000:.0f} ms: {exc})")
        return None
    await stt.warm_up()
    times: list[float] = []
    rng = np.random.default_rng(0)
    for track, noise_db in tracks:
        start = max(0.0, track.spans[0][0] - 0.5)
        x = track.samples[int(start * RATE) : int((track.spans[-1][1] + EARLY_S) * RATE)]
        if noise_db is not None:
            x = x + rng.normal(0, 10 ** (noise_db / 20), len(x))
        pcm = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2").tobytes()
        began = time.perf_counter()
        await stt.decode([(RATE, pcm)])
        times.append((time.perf_counter() - began) * 1000.0)
    await stt.aclose()
    return times


async def corpus(options: dict[str, Any], stt_delay_ms: float | None = None) -> list[Case]:
    voices = (("en-us", 150), ("en-us+f3", 170), ("en-gb-scotland", 140))
    questions: list[tuple[str, str, float | None, Track]] = []
    for question in QUESTIONS:
        for voice, wpm in voices:
            for noise in (None, -50.0):
                track = Track()
                track.pause(0.5)
                track.say(await speech(question, voice, wpm), question)
                track.pause(2.5)
                questions.append((question, voice, noise, track))
    if stt_delay_ms is None:
        measured = await whisper_decode_ms([(t, n) for _q, _v, n, t in questions])
    else:
        measured = None
    if measured is None:
        fixed = STT_DELAY_S * 1000 if stt_delay_ms is None else stt_delay_ms
        measured = [fixed] * len(questions)
    else:
        ordered = sorted(measured)
        print(
            f"Whisper decode time (wall, this box, {len(measured)} questions): p50 "
            f"{statistics.median(measured):.0f} ms, p95 {_pct(ordered, 0.95)} ms"
        )
    typical_s = statistics.median(measured) / 1000.0

    agent_pcm = await speech(STORY, rate=160)
    story_pcm = (np.clip(agent_pcm * 32767, -32768, 32767)).astype("<i2").tobytes()
    audio = {STORY: story_pcm}
    for text in ("We are open Monday to Friday, from nine in the morning to five in the evening.",):
        audio[text] = (
            (np.clip(await speech(text, rate=160) * 32767, -32768, 32767)).astype("<i2").tobytes()
        )
    cases: list[Case] = []

    # Backchannels and interruptions while the agent tells the story (it starts at once).
    seed = 0
    for kind, phrases in (("backchannel", BACKCHANNELS), ("interruption", INTERRUPTIONS)):
        for phrase in phrases:
            for voice, wpm in voices:
                for at, noise in ((2.5, None), (5.0, -50.0)):
                    seed += 1
                    track = Track()
                    track.pause(at)
                    track.say(await speech(phrase, voice, wpm), phrase)
                    track.pause(3.0)
                    media, _p, events = await run_case(
                        track,
                        audio,
                        agent_first=True,
                        noise_db=noise,
                        seed=seed,
                        echo_db=-20.0,
                        options=options,
                        stt_delay_s=typical_s,
                    )
                    onset = track.spans[0][0]
                    case = Case(kind, f"{phrase!r} {voice} at {at}s noise={noise}")
                    case.barge_ins = len(of(events, BargeInEvent))
                    later = [f for f in media.flushes if f >= onset]
                    case.flushes = len(later)
                    if later:
                        case.stop_ms = (later[0] - onset) * 1000
                        again = [f.at for f in media.played if f.at > later[0]]
                        if again and case.barge_ins == 0:
                            case.resumed_gap_ms = (again[0] - later[0]) * 1000
                    cases.append(case)

    # Echo only: the agent's own audio back on the line, louder and later.
    for echo_db in (-20.0, -12.0, -6.0):
        for delay in (40, 120):
            track = Track()
            track.pause(12.0)
            media, _p, events = await run_case(
                track,
                audio,
                agent_first=True,
                echo_db=echo_db,
                echo_delay_ms=delay,
                options=options,
                stt_delay_s=typical_s,
            )
            case = Case("echo", f"echo {echo_db} dB {delay} ms")
            case.barge_ins = len(of(events, BargeInEvent))
            case.flushes = len(media.flushes)
            cases.append(case)

    # Digit strings and "um" with pauses inside one turn.
    for parts in DIGITS:
        for pause in PAUSES_S:
            for voice, wpm in voices[:2]:
                track = Track()
                track.pause(0.5)
                for i, part in enumerate(parts):
                    if i:
                        track.pause(pause)
                    track.say(await speech(part, voice, wpm), part)
                track.pause(2.5)
                media, _p, events = await run_case(
                    track, audio, agent_first=False, options=options, stt_delay_s=typical_s
                )
                last_word_end = track.spans[-1][1]
                ends = [e.at for e in of(events, SpeechEndedEvent)]
                case = Case("digits", f"{' / '.join(parts)!r} pause {pause}s {voice}")
                case.premature = any(e < last_word_end for e in ends)
                case.detail = (
                    f"turn ends at {[round(e, 2) for e in ends]}, last word {last_word_end:.2f}"
                )
                cases.append(case)

    # Finished questions: how long after the last word the turn ends.
    for (question, voice, noise, track), decode_ms in zip(questions, measured, strict=True):
        media, _p, events = await run_case(
            track,
            audio,
            agent_first=False,
            noise_db=noise,
            options=options,
            stt_delay_s=decode_ms / 1000.0,
        )
        end = track.spans[-1][1]
        ends = [e.at for e in of(events, SpeechEndedEvent) if e.at >= end - 0.02]
        case = Case("question", f"{question!r} {voice} noise={noise}")
        case.premature = any(e.at < end - 0.02 for e in of(events, SpeechEndedEvent))
        case.eot_ms = (ends[0] - end) * 1000 if ends else None
        case.detail = f"decode {decode_ms:.0f} ms"
        cases.append(case)
    return cases


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(q * len(values)))], 1)


def report(cases: list[Case]) -> tuple[bool, dict[str, Any]]:
    def kind(k: str) -> list[Case]:
        return [c for c in cases if c.kind == k]

    bc, intr, echo, digits, qs = (
        kind(k) for k in ("backchannel", "interruption", "echo", "digits", "question")
    )
    false_bc = sum(c.barge_ins > 0 for c in bc)
    false_echo = sum(c.barge_ins > 0 for c in echo)
    paused_bc = sum(c.flushes > 0 and c.barge_ins == 0 for c in bc)
    gaps = sorted(c.resumed_gap_ms for c in bc if c.resumed_gap_ms is not None)
    missed = sum(c.barge_ins == 0 for c in intr)
    stops = sorted(c.stop_ms for c in intr if c.stop_ms is not None)
    premature = sum(c.premature for c in digits)
    eot = sorted(c.eot_ms for c in qs if c.eot_ms is not None)
    figures: dict[str, Any] = {
        "backchannels": len(bc),
        "false_interruptions": false_bc,
        "false_interruption_rate": false_bc / max(1, len(bc)),
        "backchannel_pauses_resumed": paused_bc,
        "resume_gap_ms_p50": _pct(gaps, 0.5),
        "resume_gap_ms_p95": _pct(gaps, 0.95),
        "echo_cases": len(echo),
        "echo_false_interruptions": false_echo,
        "interruptions": len(intr),
        "missed_interruptions": missed,
        "stop_ms_p50": _pct(stops, 0.5),
        "stop_ms_p95": _pct(stops, 0.95),
        "digit_cases": len(digits),
        "premature": premature,
        "premature_rate": premature / max(1, len(digits)),
        "questions": len(qs),
        "eot_ms_p50": round(statistics.median(eot), 1) if eot else None,
        "eot_ms_p95": _pct(eot, 0.95),
        "question_premature": sum(c.premature for c in qs),
        "early_decodes": DECODES["early"],
        "early_decodes_dropped": DECODES["dropped"],
        "early_decode_ms": EARLY_S * 1000,
    }
    print(
        f"backchannels while the agent speaks: {len(bc)}, cut the agent off: {false_bc} "
        f"({figures['false_interruption_rate']:.0%}); paused and resumed: {paused_bc} "
        f"(silent gap p50 {figures['resume_gap_ms_p50']} ms, p95 {figures['resume_gap_ms_p95']} ms)"
    )
    print(f"echo only: {len(echo)} cases, cut the agent off: {false_echo}")
    print(
        f"real interruptions: {len(intr)}, missed: {missed}; stop time p50 "
        f"{figures['stop_ms_p50']} ms, p95 {figures['stop_ms_p95']} ms (virtual clock)"
    )
    print(
        f"digit strings / um with pauses {PAUSES_S} s: {len(digits)}, ended early: {premature} "
        f"({figures['premature_rate']:.0%})"
    )
    print(
        f"finished questions: {len(qs)}, end-of-turn delay p50 {figures['eot_ms_p50']} ms, "
        f"p95 {figures['eot_ms_p95']} ms; cut inside the question: {figures['question_premature']}"
    )
    checks = [
        (
            "false interruptions <= 5% of backchannels (and echo)",
            (false_bc + false_echo) / max(1, len(bc) + len(echo)) <= TARGETS["false_interruptions"],
        ),
        ("missed interruptions == 0", missed == 0),
        (
            "premature end of turn <= 5% on digit strings / um with pauses up to 1 s",
            figures["premature_rate"] <= TARGETS["premature"],
        ),
        (
            "end-of-turn delay p50 <= 400 ms on finished questions",
            figures["eot_ms_p50"] is not None and figures["eot_ms_p50"] <= TARGETS["eot_p50_ms"],
        ),
    ]
    print(
        f"early decodes ({EARLY_S * 1000:.0f} ms into a pause): {DECODES['early']}, dropped "
        f"as the caller spoke on: {DECODES['dropped']}"
    )
    for name, ok in checks:
        print(f"target: {name}: {'MET' if ok else 'NOT MET'}")
    return all(ok for _, ok in checks), figures


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--json", help="write the figures and every case here")
    ap.add_argument("--show", action="store_true", help="print every case")
    ap.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a VoicePipeline option for every case (JSON value), e.g. end_silence_ms=800",
    )
    ap.add_argument(
        "--stt-delay-ms",
        type=float,
        help="the oracle STT's decode time, fixed (default: measured with WhisperSTT)",
    )
    ap.add_argument(
        "--early-decode-ms",
        type=float,
        default=100.0,
        help="the pause before the STT's early decode (WhisperSTT's early_decode_ms)",
    )
    args = ap.parse_args()
    globals()["EARLY_S"] = args.early_decode_ms / 1000.0
    options = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.option)}
    cases = anyio.run(corpus, options, args.stt_delay_ms)
    if args.show:
        for c in cases:
            print(
                f"  {c.kind:12} {c.label:60} barge_ins={c.barge_ins} flushes={c.flushes} "
                f"stop={c.stop_ms} premature={c.premature} eot={c.eot_ms} {c.detail}"
            )
    ok, figures = report(cases)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"figures": figures, "cases": [asdict(c) for c in cases]}, indent=2)
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
