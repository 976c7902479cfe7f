"""Benchmark: per-turn latency of the embedded voice agent, through a real Asterisk.

SIP phones (pjsua2) talk to the demo assistant (WebRTC VAD, Whisper tiny.en, the rule
agent, espeak-ng) over the sandbox Asterisk; several calls run at once. Two figures:

* **framework-added time** per turn: the caller's wait as the pipeline measures it
  (``TurnMetrics.total_ms``: end of speech detected -> first answer audio handed to the
  transport) minus the time spent inside the providers (STT from end of speech to its
  transcript, LLM generation, the tool, TTS until its first audio; timed by wrappers
  around them, overlapping intervals counted once). Target p95 <= 20 ms.
* **barge-in stop time**: the caller starts saying something over the long story; in
  the phone's recording, the time from the caller's speech onset (when its playback
  started) to the end of the agent's audio. Target p95 <= 150 ms.

Not counted in either: the endpointing wait (``end_silence_ms``, 600 ms of silence
before a turn ends) and the network / Asterisk path to the phone.

    .venv/bin/python bench/turn_latency.py [--calls 3] [--turns 6] [--barge-ins 2]

It also prints the end-of-turn delay on the line (the caller's last word, as the phone
played it, -> the pipeline's end of turn; target p50 <= 400 ms) and splits the barge-in
time at the moment the pipeline confirmed the caller's onset. The last lines are the
verdicts, one per target: MET or NOT MET.

Uses ``VOXTRA_ARI_URL`` (default: the sandbox at http://127.0.0.1:8088, which must be
running: ``python -m voxtra.testing.asterisk up``).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from voxtra import CallSession
from voxtra.app import VoxtraApp
from voxtra.media.frames import AudioChunk
from voxtra.pipeline import (
    BargeInEvent,
    PipelineEvent,
    SpeechStartedEvent,
    TurnMetrics,
    VoicePipeline,
)
from voxtra.pipeline.turn import MIN_SPEECH_MS
from voxtra.providers.base import LLM, STT, TTS, ChatMessage, LLMChunk, ToolSpec, Transcript
from voxtra.testing import audio
from voxtra.testing.audio import synthesize_wav
from voxtra.testing.modules import import_file
from voxtra.testing.sipcaller import SipCall, SipCaller


def _load_assistant() -> ModuleType:
    """``examples/assistant.py``: the demo assistant (examples/ is scripts, not a package)."""
    return import_file(
        Path(__file__).resolve().parents[1] / "examples" / "assistant.py",
        "voxtra_example_assistant",
    )


_assistant = _load_assistant()
build_assistant = _assistant.build_assistant
get_weather = _assistant.get_weather

QUESTIONS = (
    "what are your opening hours",
    "what can you do",
    "what is the weather in berlin",
    "when are you open",
)
STORY = "tell me a long story"
INTERRUPT = "what can you do"

Interval = tuple[float, float]
INTERVALS: list[Interval] = []
"""Time spent inside providers (monotonic start, end), all calls together."""


# -- timing wrappers around the providers -----------------------------------------------


class _TimedStream:
    """Times each utterance from end of speech to its transcript (the STT's own work)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.pending: list[float] = []

    async def send(self, chunk: AudioChunk) -> None:
        await self.inner.send(chunk)

    async def end_of_speech(self) -> None:
        self.pending.append(time.monotonic())
        await self.inner.end_of_speech()

    async def close(self) -> None:
        await self.inner.close()

    async def transcripts(self) -> AsyncIterator[Transcript]:
        async for t in self.inner.transcripts():
            if t.is_final and self.pending:
                INTERVALS.append((self.pending.pop(0), time.monotonic()))
            yield t


class TimedSTT:
    def __init__(self, inner: STT) -> None:
        self.inner = inner
        self.name = inner.name

    async def stream(self) -> Any:
        return _TimedStream(await self.inner.stream())


class TimedLLM:
    def __init__(self, inner: LLM) -> None:
        self.inner = inner
        self.name = inner.name

    async def generate(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()
    ) -> AsyncIterator[LLMChunk]:
        start = time.monotonic()
        try:
            async for chunk in self.inner.generate(messages, tools):
                yield chunk
        finally:
            INTERVALS.append((start, time.monotonic()))


class TimedTTS:
    def __init__(self, inner: TTS) -> None:
        self.inner = inner
        self.name = inner.name
        self.sample_rate = getattr(inner, "sample_rate", 0)

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        start = time.monotonic()
        first = True
        async for chunk in self.inner.synthesize(text):
            if first:
                INTERVALS.append((start, time.monotonic()))
                first = False
            yield chunk


@functools.wraps(get_weather)
def timed_weather(city: str) -> str:
    start = time.monotonic()
    try:
        return get_weather(city)
    finally:
        INTERVALS.append((start, time.monotonic()))


def provider_ms(window: Interval) -> float:
    """Milliseconds of ``window`` covered by provider intervals (overlaps once)."""
    lo, hi = window
    spans = sorted((max(a, lo), min(b, hi)) for a, b in INTERVALS if b > lo and a < hi)
    total, cur_a, cur_b = 0.0, None, None
    for a, b in spans:
        if cur_b is None or a > cur_b:
            if cur_b is not None and cur_a is not None:
                total += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_a is not None and cur_b is not None:
        total += cur_b - cur_a
    return total * 1000


# -- the calls -------------------------------------------------------------------------


@dataclass
class Watch:
    pipelines: dict[str, VoicePipeline] = field(default_factory=dict)
    events: dict[str, list[PipelineEvent]] = field(default_factory=dict)

    def on_pipeline(self, call: CallSession, pipeline: VoicePipeline) -> None:
        self.pipelines[call.id] = pipeline
        pipeline.on_event(self.events.setdefault(call.id, []).append)

    def turns(self, call_id: str) -> list[TurnMetrics]:
        return [e for e in self.events.get(call_id, []) if isinstance(e, TurnMetrics)]

    async def until_turns(self, call_id: str, n: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.turns(call_id)) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"call {call_id}: no turn {n} within {timeout} s")
            await asyncio.sleep(0.02)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1]


TARGETS = (
    # (what, percentile, at most ms)
    ("end of turn on the line (caller's last word -> turn ended)", 50, 400.0),
    ("framework-added time per turn", 95, 20.0),
    ("barge-in stop time (caller onset -> agent silent)", 95, 150.0),
)


def verdicts(ends: list[float], framework: list[float], stops: list[float]) -> list[str]:
    """One ``target: ...: MET / NOT MET`` line per target, in the order of TARGETS."""
    lines = []
    for (what, q, limit), values in zip(TARGETS, (ends, framework, stops), strict=True):
        name = f"{what} p{q} <= {limit:.0f} ms"
        if not values:
            lines.append(f"target: {name}: NOT MET (no samples)")
            continue
        value = percentile(values, q)
        lines.append(f"target: {name}: {'MET' if value <= limit else 'NOT MET'} ({value:.1f} ms)")
    return lines


async def build(watch: Watch, min_speech_ms: float) -> VoxtraApp:
    app = build_assistant(
        on_pipeline=watch.on_pipeline,
        write=lambda line: None,
        greeting=None,
        stt_workers=2,
        app_name=f"voxtra-bench-{uuid.uuid4().hex[:8]}",
        ari_url=os.environ.get("VOXTRA_ARI_URL", "http://127.0.0.1:8088"),
    )
    v = app.voice
    assert v.stt is not None and v.llm is not None and v.tts is not None
    app.voice = replace(
        v,
        stt=TimedSTT(v.stt),
        llm=TimedLLM(v.llm),
        tts=TimedTTS(v.tts),
        tools=(timed_weather,),
        min_speech_ms=min_speech_ms,
    )
    await app.start()
    return app


async def ring(app: VoxtraApp, phone: SipCaller) -> tuple[CallSession, SipCall]:
    async def converse(call: CallSession) -> None:
        await call.converse()

    session = await app.originate(
        f"PJSIP/sipcaller/sip:bench@127.0.0.1:{phone.port}", handler=converse, timeout=10
    )
    call = await phone.next_incoming_call(10)
    await call.wait_answered(10)
    await call.wait_media(10)
    return session, call


async def ask(call: SipCall, wav: Path) -> float:
    await call.play(wav)
    await call.wait_play_done(15)
    t = [e.t for e in call.events if e.name == "play_started" and e.data["path"] == str(wav)]
    return t[-1]


WALL_MINUS_MONOTONIC = time.time() - time.monotonic()
"""The phone stamps its events with time.time(), the pipeline with time.monotonic()."""


def speech_end_s(wav: Path) -> float:
    """Where the last word of ``wav`` ends (s from its start)."""
    samples, rate = audio.read_wav(wav)
    segments = audio.active_segments(samples, rate)
    return segments[-1][1] if segments else len(samples) / rate


async def turn_call(
    app: VoxtraApp, phone: SipCaller, watch: Watch, wavs: list[Path], turns: int
) -> list[tuple[TurnMetrics, float, float | None]]:
    """Per turn: its metrics, the time inside providers, and the end-of-turn delay on
    the line (the caller's last word as the phone played it -> the pipeline's end of
    turn, ms; the phone's sending and Asterisk's path included)."""
    session, call = await ring(app, phone)
    await asyncio.sleep(0.5)
    out = []
    for i, wav in zip(range(turns), itertools.cycle(wavs), strict=False):
        onset = await ask(call, wav)
        await watch.until_turns(session.id, i + 1)
        m = watch.turns(session.id)[i]
        if m.speech_end is not None and m.first_frame_out is not None:
            eot = (m.speech_end + WALL_MINUS_MONOTONIC - onset - speech_end_s(wav)) * 1000
            out.append((m, provider_ms((m.speech_end, m.first_frame_out)), eot))
        await asyncio.sleep(0.3)
    await call.hangup()
    await call.wait_ended(10)
    return out


async def barge_call(
    app: VoxtraApp, phone: SipCaller, watch: Watch, story: Path, interrupt: Path, times: int
) -> list[tuple[float, float | None]]:
    """Per barge-in: caller onset -> end of agent audio in the phone's recording, ms, and
    the part of it until the pipeline confirmed the onset (the phone's sending, Asterisk,
    the RTP input, the VAD and the onset guard; the rest is the agent's audio already on
    its way: the outbound queue, Asterisk, the phone's jitter buffer)."""
    session, call = await ring(app, phone)
    await asyncio.sleep(0.5)
    onsets: list[float] = []
    for i in range(times):
        await ask(call, story)
        while not watch.pipelines[session.id].speaking:  # the story has begun
            await asyncio.sleep(0.02)
        await asyncio.sleep(2.0 + 0.4 * i)
        onsets.append(await ask(call, interrupt))
        await watch.until_turns(session.id, 2 * i + 2)
        await asyncio.sleep(0.3)
    await call.hangup()
    await call.wait_ended(10)
    assert call.recording_path is not None and call.recording_started_at is not None
    samples, rate = audio.read_wav(call.recording_path)
    barges = [e for e in watch.events[session.id] if isinstance(e, BargeInEvent)]
    out = []
    starts = [
        e.at + WALL_MINUS_MONOTONIC
        for e in watch.events[session.id]
        if isinstance(e, SpeechStartedEvent)
    ]
    for onset in onsets:
        at = onset - call.recording_started_at
        stopped = audio.offset_after(samples, rate, at, hold_ms=800)
        heard = [s for s in starts if onset - 0.05 <= s <= onset + 1.0]
        if stopped is not None:
            out.append(((stopped - at) * 1000, (heard[0] - onset) * 1000 if heard else None))
    if len(barges) != len(onsets):
        print(f"  (call {session.id}: {len(barges)} barge-ins for {len(onsets)} interruptions)")
    return out


async def main(args: argparse.Namespace, work: Path) -> None:
    wavs = [await synthesize_wav(q, work / f"q{i}.wav") for i, q in enumerate(QUESTIONS)]
    story = await synthesize_wav(STORY, work / "story.wav")
    interrupt = await synthesize_wav(INTERRUPT, work / "interrupt.wav")
    watch = Watch()
    app = await build(watch, args.min_speech_ms)
    try:
        async with SipCaller(workdir=work / "phone") as phone:
            await phone.listen(record=True)
            print(f"{args.calls} concurrent calls x {args.turns} turns ...")
            results = await asyncio.gather(
                *(turn_call(app, phone, watch, wavs, args.turns) for _ in range(args.calls))
            )
            turns = [r for rs in results for r in rs]
            print(f"{args.calls} concurrent calls x {args.barge_ins} barge-ins ...")
            barge = await asyncio.gather(
                *(
                    barge_call(app, phone, watch, story, interrupt, args.barge_ins)
                    for _ in range(args.calls)
                )
            )
            stops = [s for bs in barge for s, _ in bs]
            confirmed = [c for bs in barge for _, c in bs if c is not None]
    finally:
        await app.stop()

    def row(name: str, values: list[float], target: str = "") -> None:
        if not values:
            print(f"{name:44} (no samples)")
            return
        p50, p95 = percentile(values, 50), percentile(values, 95)
        print(
            f"{name:44} n={len(values):3}  p50 {p50:7.1f}  p95 {p95:7.1f}  max {max(values):7.1f}"
            f"  {target}"
        )

    print()
    total = [m.total_ms for m, _, _ in turns if m.total_ms is not None]
    framework = [m.total_ms - p for m, p, _ in turns if m.total_ms is not None]
    ends = [e for _, _, e in turns if e is not None]
    row("end of turn: caller's last word -> turn ended (ms)", ends, "target p50 <= 400")
    row("turn: end of speech -> first audio out (ms)", total)
    row("  inside providers (ms)", [p for _, p, _ in turns])
    row("  framework-added (ms)", framework, "target p95 <= 20")
    row("  stt: end of speech -> final (ms)", [m.stt_ms for m, _, _ in turns if m.stt_ms])
    row("  llm: final -> first token (ms)", [m.llm_ms for m, _, _ in turns if m.llm_ms])
    row("  tts: first token -> first audio (ms)", [m.tts_ms for m, _, _ in turns if m.tts_ms])
    row("  send: first audio -> transport (ms)", [m.send_ms or 0.0 for m, _, _ in turns])
    row("barge-in: caller onset -> agent silent (ms)", stops, "target p95 <= 150")
    row("  caller onset -> onset confirmed (ms)", confirmed)
    row(
        "  onset confirmed -> agent silent (ms)",
        [s - c for bs in barge for s, c in bs if c is not None],
    )
    print()
    for line in verdicts(ends, framework, stops):
        print(line)
    print(f"\nrecordings and logs: {work}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3, help="concurrent calls")
    parser.add_argument("--turns", type=int, default=6, help="question turns per call")
    parser.add_argument("--barge-ins", type=int, default=2, help="barge-ins per call")
    parser.add_argument(
        "--min-speech-ms",
        type=float,
        default=MIN_SPEECH_MS,
        help=f"barge-in onset guard (default {MIN_SPEECH_MS:.0f}, the pipeline's)",
    )
    workdir = Path(tempfile.mkdtemp(prefix="voxtra-bench-")).resolve()  # the phone reports
    asyncio.run(main(parser.parse_args(), workdir))  # resolved paths
