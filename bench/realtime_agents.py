"""Speech-to-speech agents for the density benches: the service's fake in a child
process, and a fresh engine per call talking to it. And on its own, what one
speech-to-speech call costs this process.

For ``bench/agent_density.py`` (issue 15 asks for its figure with the speech-to-speech
engine too), the two pieces it needs, in the shape of its own ``_fakes``::

    from realtime_agents import engine_for, serve_fakes   # bench/ is on sys.path

    proc = ctx.Process(target=serve_fakes, args=("openai", conf, urls, stop))
    settings = urls.get()                    # a plain dict, picklable
    engine = engine_for("openai", settings)  # per call
    await engine.run(transport, call_id=...) # as VoicePipeline.run

Run alone, it measures N calls at once, each a ``MemoryMediaIO`` on the real clock fed
with the caller's turns (a 600 ms tone, then 2.4 s of silence, so each turn is
answered and played), the fake in a child process (its CPU not counted)::

    .venv/bin/python bench/realtime_agents.py --engine openai --calls 20 --seconds 15
        [--json out.json]

Reported: this process's CPU (``time.process_time``) per call-second over the window,
and the turns answered. No RTP here (the media path has its own bench,
``bench/media_path.py``): this is the engine's own cost, its SDK and its socket.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import multiprocessing as mp
import pstats
import ssl
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from voxtra.pipeline.events import PipelineEvent, TurnMetrics
from voxtra.pipeline.testing import MemoryMediaIO, silence_frames, tone_frames
from voxtra.providers.gemini_live import GeminiLiveEngine
from voxtra.providers.openai_realtime import OpenAIRealtimeEngine
from voxtra.providers.speech_to_speech import SpeechToSpeechEngine

KEY = "bench-key"
ENGINES = ("openai", "gemini")
ANSWER = "We are open from nine to five."  # 2.1 s of answer audio at 300 ms a word


def serve_fakes(engine: str, conf: dict[str, Any], urls: Any, stop: Any) -> None:
    """Child process: the ``engine``'s service fake on loopback until ``stop`` is set;
    puts the settings ``engine_for`` needs on ``urls``. ``conf``: ``answer`` (the text
    of every answer), ``chunk_delay`` (seconds between 100 ms audio messages)."""
    from voxtra.testing.fakes.gemini_live import FakeGeminiLive
    from voxtra.testing.fakes.openai_realtime import FakeOpenAIRealtime, RealtimeReply

    async def main() -> None:
        options: dict[str, Any] = {
            "replies": [RealtimeReply(text=conf.get("answer", ANSWER))] * 100_000,
            "chunk_delay": conf.get("chunk_delay", 0.02),
        }
        fake: FakeOpenAIRealtime | FakeGeminiLive
        fake = (
            FakeGeminiLive(KEY, **options)
            if engine == "gemini"
            else FakeOpenAIRealtime(KEY, **options)
        )
        async with fake:
            settings: dict[str, Any] = {"engine": engine, "base_url": fake.base_url}
            if isinstance(fake, FakeGeminiLive):
                settings["certificate_pem"] = fake.certificate_pem
            urls.put(settings)
            while not stop.is_set():
                await asyncio.sleep(0.1)

    asyncio.run(main())


def engine_for(
    engine: str, settings: dict[str, Any], *, system_prompt: str | None = None
) -> SpeechToSpeechEngine:
    """A fresh engine (one per call) on the fake ``serve_fakes`` started."""
    if engine == "gemini":
        context = ssl.create_default_context(cadata=settings["certificate_pem"])
        return GeminiLiveEngine(
            KEY, base_url=settings["base_url"], ssl_context=context, system_prompt=system_prompt
        )
    return OpenAIRealtimeEngine(KEY, base_url=settings["base_url"], system_prompt=system_prompt)


async def caller(media: MemoryMediaIO, seconds: float) -> None:
    """A turn every 3 s: 600 ms of speech (a tone the fakes' VAD hears), then silence."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        media.inject(tone_frames(600, level_db=-20))
        media.inject(silence_frames(2400))
        await asyncio.sleep(3.0)
    media.hangup()


async def measure(
    engine: str, calls: int, seconds: float, settings: dict[str, Any]
) -> dict[str, Any]:
    events: list[PipelineEvent] = []
    medias = [MemoryMediaIO(virtual=False) for _ in range(calls)]
    engines = [engine_for(engine, settings) for _ in range(calls)]
    for e in engines:
        e.on_event(events.append)
    runs = [
        asyncio.create_task(e.run(m, clock=m.clock, call_id=f"c{i}"))
        for i, (e, m) in enumerate(zip(engines, medias, strict=True))
    ]
    warm = 1.0
    callers = [asyncio.create_task(caller(m, warm + seconds)) for m in medias]
    await asyncio.sleep(warm)
    turns0 = len([e for e in events if isinstance(e, TurnMetrics)])
    c0, w0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - c0, time.monotonic() - w0
    turns = [e for e in events if isinstance(e, TurnMetrics)][turns0:]
    await asyncio.gather(*callers)
    results = await asyncio.gather(*runs, return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    latency = sorted(t.total_ms for t in turns if t.total_ms is not None)
    return {
        "engine": engine,
        "calls": calls,
        "window_s": round(wall, 2),
        "cpu_us_per_call_s": cpu / (calls * wall) * 1e6,
        "core_busy": cpu / wall,
        "turns": len(turns),
        "turn_latency_p50_ms": latency[len(latency) // 2] if latency else None,
        "failed_calls": len(failed),
    }


PACKAGES = (
    ("google/genai", "google-genai"),
    ("pydantic", "pydantic"),
    ("/openai/", "openai"),
    ("websockets", "websockets"),
    ("aiohttp", "aiohttp"),
    ("soxr", "soxr"),
    ("voxtra/media", "voxtra.media"),
    ("voxtra/providers", "voxtra.providers"),
    ("voxtra/pipeline", "voxtra.pipeline"),
    ("asyncio", "asyncio"),
    ("json", "json"),
)


def profile_report(profile: cProfile.Profile, top: int = 12) -> str:
    """Own time by package, then the top functions by own time."""
    stats = pstats.Stats(profile)
    by_package: dict[str, float] = defaultdict(float)
    for (path, _, _), (_, _, own, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        name = next((label for key, label in PACKAGES if key in path), "other")
        by_package[name] += own
    total = sum(by_package.values()) or 1.0
    lines = ["own time by package:"]
    for name, own in sorted(by_package.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {name:<18} {own:6.2f} s {own / total * 100:5.1f}%")
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(top)
    return "\n".join(lines) + "\n" + out.getvalue()


async def main(
    engine: str, calls: int, seconds: float, profile: cProfile.Profile | None = None
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    urls = ctx.Queue()
    stop = ctx.Event()
    proc = ctx.Process(target=serve_fakes, args=(engine, {}, urls, stop))
    proc.start()
    try:
        settings = await asyncio.get_running_loop().run_in_executor(None, urls.get)
        if profile is not None:
            profile.enable()
        try:
            return await measure(engine, calls, seconds, settings)
        finally:
            if profile is not None:
                profile.disable()
    finally:
        stop.set()
        proc.join(5)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engine", choices=ENGINES, default="openai")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--json", metavar="PATH", help="write the figures as JSON ('-': stdout)")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile the run (slower): where the time goes"
    )
    args = parser.parse_args()
    # process CPU time, so the event loop waiting in epoll does not count
    prof = cProfile.Profile(time.process_time) if args.profile else None
    figures = asyncio.run(main(args.engine, args.calls, args.seconds, prof))
    if prof is not None:
        print(profile_report(prof))
    print(
        f"{figures['engine']}: {figures['calls']} calls, {figures['window_s']} s: "
        f"{figures['cpu_us_per_call_s']:.0f} us CPU per call-second "
        f"({figures['core_busy'] * 100:.1f}% of a core), {figures['turns']} turns, "
        f"speech end -> first audio p50 {figures['turn_latency_p50_ms'] or 0:.1f} ms, "
        f"{figures['failed_calls']} failed"
    )
    if args.json == "-":
        json.dump(figures, sys.stdout, indent=2)
    elif args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
