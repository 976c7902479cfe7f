"""Benchmark: how many concurrent voice-agent calls one core carries (issue 15).

Each of N calls is a whole conversation through ``VoicePipeline.run``: WebRTC VAD, turn
detection, streaming STT -> LLM -> TTS with barge-in, on a real ``RtpTransport`` joined
to the shared RTP socket (``RtpEndpoint``), as a call's media would be. The cloud
services are their wire-protocol fakes (``FakeDeepgram``, ``FakeOpenAI``,
``FakeElevenLabs``) driven by the real providers and SDKs, in a separate process; the
callers' RTP comes from another process that plays Asterisk's end (one UDP port per
call, as Asterisk's ExternalMedia channels). Neither process's CPU is counted.

Each caller loops recorded speech (phrases synthesised once with espeak-ng at 8 kHz):
a question, then a few seconds of silence; one gap in three is shorter than the
answer, so the caller talks over the agent (barge-in). Deepgram's fake answers each
``Finalize`` (sent by the pipeline at end of speech) with the phrase's text, the LLM
fake streams a short answer word by word, the TTS fake streams its audio.

Reported per step (a fixed window after a warm-up):

* **CPU per agent-call-second**: this process's ``time.process_time`` over the window
  divided by N x window;
* **framework-added turn latency**: ``TurnMetrics.total_ms`` (end of speech detected ->
  first answer audio handed to the transport) minus the fakes' configured delays (none
  by default, so it includes the loopback round trips and the fakes' own time);
* **outbound pacing**: p99 of the transports' ``stats.pacing_lateness_s`` (how late
  each answer frame left after its 20 ms deadline).

N is searched by doubling from ``--start`` then bisecting between the last N that held
(latency p95 <= 20 ms, pacing p99 <= 2 ms both at the wake and at the send, >= 97% of
the inbound frames moved) and the
first that did not. Then a short cProfile run shows where the time goes (top 15 by
cumulative time).

    .venv/bin/python bench/agent_density.py [--window 20] [--start 25] [--max 800]
        [--json out.json]
    .venv/bin/python bench/agent_density.py --quick --json out.json   # N=5, 5 s

``--engine openai-realtime`` runs the same calls on the speech-to-speech engine
(``OpenAIRealtimeEngine`` per call against ``FakeOpenAIRealtime`` in the child process,
from ``bench/realtime_agents.py``): the caller's audio streams to the service, whose
VAD finds the turns; turn latency is then from its ``speech_stopped`` to the first
answer audio handed to the transport.

The calls' RTP runs as rows of one ``MediaEngine`` (``EngineHub``, what the app's
``media.engine`` setting, on by default, opens); ``--media rtp`` gives each call an
``RtpTransport`` on the shared socket instead. ``--no-profile`` skips the closing
profile. ``--cpus auto`` (the default) keeps this process on one CPU and the fakes and
callers on the others: "calls per core" with the core its own.

``--experiment`` puts back, in this process only, what an earlier tree did, to measure
one change at a time in the same run: ``deflate`` (the Deepgram socket offers
permessage-deflate), ``stt-frames`` (the STT is sent each 20 ms frame as its own
message), ``tts-20ms`` (ElevenLabs audio cut into 20 ms pieces), ``wake-all`` (a tick's readers all
woken in one loop pass, not a slice per pass), ``sdk-http`` (the OpenAI and
ElevenLabs SDKs on their own httpx clients, not on the aiohttp-backed ones an app
shares: voxtra/providers/http.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import io
import json
import multiprocessing as mp
import os
import pstats
import random
import socket
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voxtra.media import g711
from voxtra.media.collector import settle_collector
from voxtra.media.engine_transport import EngineHub
from voxtra.media.pacer import Pacer, Ticker
from voxtra.media.rtp import RtpSender
from voxtra.media.rtp_endpoint import RtpEndpoint
from voxtra.media.rtp_transport import RtpTransport
from voxtra.media.wakes import reader_wakes
from voxtra.pipeline import BargeInEvent, PipelineEvent, TurnMetrics, VoicePipeline
from voxtra.providers.deepgram_stt import DeepgramSTT
from voxtra.providers.elevenlabs_tts import ElevenLabsTTS
from voxtra.providers.http import shared_http
from voxtra.providers.openai_llm import OpenAILLM
from voxtra.providers.webrtc_vad import WebRtcVAD
from voxtra.testing.audio import read_wav, synthesize_wav

ENGINES = ("pipeline", "openai-realtime")

PHRASES = (
    "what are your opening hours",
    "can I book a table for two tonight",
    "where is your nearest shop",
)
ANSWER = "We are open from nine to five. Is there anything else?"
GAPS_S = (4.5, 4.5, 2.0)
"""Silence after each phrase: the answer (about 3 s of audio at the fake's 60 ms a
character) fits in 4.5 s; 2 s is cut short by the next question (a barge-in)."""
KEY = "bench-key"
TARGET_CALLS = 200
LATENCY_P95_MS = 20.0
PACING_P99_MS = 2.0


# -- the other processes ------------------------------------------------------------------


def pin(cpus: set[int] | None) -> None:
    """Keep this process on ``cpus`` (Linux; nothing elsewhere or when None)."""
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)


def placement(mode: str) -> tuple[set[int] | None, set[int] | None]:
    """(this process's CPUs, the fakes' and callers' CPUs) for ``--cpus``.

    "one core" is meant literally: with ``auto`` on a box of two or more CPUs the
    framework gets one to itself and the other processes (the cloud fakes, the callers'
    RTP) the rest, so the kernel never runs them on the measured core between two of
    its ticks. Unpinned, on this 2-core box a fake's burst preempting the framework
    shows up as a late tick that no code of ours caused.
    """
    if mode == "none" or not hasattr(os, "sched_getaffinity"):
        return None, None
    mine = sorted(os.sched_getaffinity(0))
    if len(mine) < 2:
        return None, None
    return {mine[-1]}, set(mine[:-1])


def _fakes(
    conf: dict[str, Any],
    urls: mp.Queue,  # type: ignore[type-arg]
    stop: Any,
) -> None:
    """Child process: the three cloud fakes on loopback until ``stop`` is set."""
    pin(conf.get("others_cpus"))
    from voxtra.testing.fakes import (
        DeepgramTurn,
        FakeDeepgram,
        FakeElevenLabs,
        FakeOpenAI,
        OpenAIReply,
    )

    async def main() -> None:
        # Never reached by bytes: each turn fires on the pipeline's Finalize, in order.
        turns = [DeepgramTurn(1 << 62, PHRASES[i % len(PHRASES)]) for i in range(600)]
        reply = OpenAIReply(text=ANSWER, delay=conf["llm_delay"])
        async with (
            FakeDeepgram(KEY, turns) as dg,
            FakeOpenAI(KEY, [reply]) as oa,
            FakeElevenLabs(KEY, chunk_ms=conf["tts_chunk_ms"]) as el,
        ):
            urls.put((dg.url, oa.base_url, el.url))
            while not stop.is_set():
                await asyncio.sleep(0.1)

    asyncio.run(main())


def _swallow(sock: socket.socket) -> int:
    n = 0
    while True:
        try:
            sock.recv(2048)
        except BlockingIOError:
            return n
        n += 1


def _callers(
    ports: list[int],
    script: bytes,
    seconds: float,
    seed: int,
    out: mp.Queue,  # type: ignore[type-arg]
    ready: Any,
    cpus: set[int] | None = None,
) -> None:
    """Child process: plays each call's caller (its own UDP port, as Asterisk does)."""
    pin(cpus)

    async def main() -> None:
        socks = []
        for _ in ports:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 18)
            s.setblocking(False)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        out.put([s.getsockname()[1] for s in socks])
        frames = [script[i : i + 160] for i in range(0, len(script) - 159, 160)]
        rng = random.Random(seed)
        offsets = [rng.randrange(len(frames)) for _ in ports]  # calls out of step
        calls = [
            (s, RtpSender(0), ("127.0.0.1", p), off)
            for s, p, off in zip(socks, ports, offsets, strict=True)
        ]
        ready.set()
        pacer = Pacer()
        end = time.monotonic() + seconds
        tick = 0
        nf = len(frames)
        while time.monotonic() < end:
            await pacer.wait()
            for s, sender, addr, off in calls:
                s.sendto(sender.build(frames[(off + tick) % nf]), addr)
                _swallow(s)
            tick += 1
        for s in socks:
            s.close()

    asyncio.run(main())


async def caller_script(work: Path) -> bytes:
    """One caller's loop as u-law: each phrase, then its gap of silence."""
    parts: list[bytes] = []
    for i, text in enumerate(PHRASES):
        samples, rate = read_wav(await synthesize_wav(text, work / f"p{i}.wav", rate=8000))
        assert rate == 8000
        pcm = np.asarray(samples, dtype="<i2").tobytes()
        gap = np.zeros(int(GAPS_S[i % len(GAPS_S)] * 8000), dtype="<i2").tobytes()
        parts.append(g711.pcm16_to_ulaw(pcm + gap))
    return b"".join(parts)


# -- one step ----------------------------------------------------------------------------


@dataclass
class Step:
    n: int
    window_s: float
    cpu_us_per_call_s: float
    core_share: float
    fakes_core_share: float
    """The fakes' process (not counted in the CPU figure), for the box's budget."""
    callers_core_share: float
    turns: int
    barge_ins: int
    latency_p50_ms: float
    latency_p95_ms: float
    latency_max_ms: float
    stt_p95_ms: float
    llm_p95_ms: float
    tts_p95_ms: float
    pacing_p99_ms: float
    pacing_frames: int
    pacing_over_2ms: int
    tick_p99_ms: float
    sent_p99_ms: float
    """p99 of each tick's deadline to its ``sendmmsg`` (``Ticker.sent_lateness``): the
    wake's lateness plus the tick's work before the send; the bound applies to it."""
    frames_in: int
    frames_expected: int
    errors: int
    load_avg: float
    held: bool = False
    notes: list[str] = field(default_factory=list)

    def judge(self) -> None:
        kept_up = self.frames_in >= 0.97 * self.frames_expected
        if not kept_up:
            self.notes.append("fell behind on inbound frames")
        if self.turns == 0:
            self.notes.append("no turns")
        self.held = (
            kept_up
            and self.turns > 0
            and self.latency_p95_ms <= LATENCY_P95_MS
            and self.pacing_p99_ms <= PACING_P99_MS
            and self.sent_p99_ms <= PACING_P99_MS
        )


def proc_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) of another process so far, from /proc (0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: int) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(sorted(values), n=100, method="inclusive")[q - 1]


async def run_step(
    n: int,
    window: float,
    urls: tuple[str, str, str],
    script: bytes,
    conf: dict[str, Any],
    profile: cProfile.Profile | None = None,
) -> Step:
    if os.environ.get("AGENT_DENSITY_SLOW_MS"):  # find what holds the loop (debug mode)
        lp = asyncio.get_running_loop()
        lp.set_debug(True)
        lp.slow_callback_duration = float(os.environ["AGENT_DENSITY_SLOW_MS"]) / 1000
    experiments = conf.get("experiments", ())
    realtime = conf.get("engine", "pipeline") != "pipeline"
    if not realtime:
        dg_url, oa_url, el_url = urls
        stt = DeepgramSTT(
            KEY,
            base_url=dg_url,
            compression="deflate" in experiments,
            batch_ms=0.0 if "stt-frames" in experiments else 100.0,
        )
        llm = OpenAILLM(KEY, base_url=oa_url)
        tts = ElevenLabsTTS(
            KEY,
            "bench-voice",
            base_url=el_url,
            chunk_bytes=160 if "tts-20ms" in experiments else None,
        )
        vad = WebRtcVAD()
    ticker = Ticker()
    endpoint: RtpEndpoint | None = None
    transports: list[Any]
    if conf.get("media", "engine") == "engine":
        # media.engine: every call a row of one MediaEngine (a tick as arrays), as
        # CallMedia opens them when the app's media settings ask for the engine
        hub = EngineHub.shared(ticker, "127.0.0.1", [])
        transports = [hub.open("ulaw", name=f"a{i}") for i in range(n)]
    else:
        endpoint = RtpEndpoint(ticker, "127.0.0.1")
        transports = [
            await RtpTransport.open("ulaw", endpoint=endpoint, name=f"a{i}") for i in range(n)
        ]
    warm = max(3.0, n / 40)  # the STT sockets connect and the first turns settle
    ctx = mp.get_context("spawn")
    out: mp.Queue[list[int]] = ctx.Queue()
    ready = ctx.Event()
    peer = ctx.Process(
        target=_callers,
        args=(
            [tr.local_address[1] for tr in transports],
            script,
            warm + window + 1.0,
            n,
            out,
            ready,
            conf.get("others_cpus"),
        ),
    )
    peer.start()
    loop = asyncio.get_running_loop()
    for tr, port in zip(transports, await loop.run_in_executor(None, out.get), strict=True):
        tr.set_remote("127.0.0.1", port)
    events: list[PipelineEvent] = []
    errors = 0
    failures: list[str] = []
    w0_box: list[float] = []  # the window's start, once known

    async def call(tr: Any, i: int) -> None:
        nonlocal errors
        prompt = "You answer callers of a shop, briefly."
        agent: Any
        if realtime:
            from realtime_agents import engine_for  # bench/ is on sys.path

            agent = engine_for("openai", urls, system_prompt=prompt)  # type: ignore[arg-type]
        else:
            agent = VoicePipeline(
                stt, llm, tts, vad, system_prompt=prompt, stt_timeout=conf["stt_timeout"]
            )
        agent.on_event(events.append)
        try:
            await agent.run(tr, call_id=f"a{i}")
        except Exception as exc:
            errors += 1
            while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
                exc = exc.exceptions[0]  # type: ignore[assignment]
            when = (
                "in the window"
                if w0_box and time.monotonic() < w0_box[0] + window
                else "at hang-up"
            )
            failures.append(f"{when}: {type(exc).__name__}: {exc}"[:200])

    tasks = [asyncio.create_task(call(tr, i)) for i, tr in enumerate(transports)]
    while not ready.is_set():
        await asyncio.sleep(0.01)
    await asyncio.sleep(warm)
    gc.collect()
    threshold = gc.get_threshold()
    settle_collector()  # what the app does once started (voxtra/media/collector.py)
    await asyncio.sleep(0.2)  # the tick the collection delayed is not part of the window
    for tr in transports:
        tr.stats.pacing_lateness_s.clear()
    ticker.lateness.clear()
    ticker.sent_lateness.clear()
    f0 = sum(tr.stats.frames_in for tr in transports)
    w0 = time.monotonic()
    w0_box.append(w0)
    c0 = time.process_time()
    o0 = proc_cpu(conf["fakes_pid"]), proc_cpu(peer.pid)
    if profile is not None:
        profile.enable()
    await asyncio.sleep(window)
    if profile is not None:
        profile.disable()
    cpu, wall = time.process_time() - c0, time.monotonic() - w0
    fakes_share = (proc_cpu(conf["fakes_pid"]) - o0[0]) / wall
    peer_share = (proc_cpu(peer.pid) - o0[1]) / wall
    w1 = w0 + wall
    frames_in = sum(tr.stats.frames_in for tr in transports) - f0
    late = [x * 1000 for tr in transports for x in tr.stats.pacing_lateness_s]
    ticks = list(ticker.lateness)
    sent = [x * 1000 for x in ticker.sent_lateness]
    load = os.getloadavg()[0]
    for tr in transports:
        await tr.close()
    _done, pending = await asyncio.wait(tasks, timeout=10)
    for t in pending:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await EngineHub.close_all(ticker)
    await ticker.aclose()
    if endpoint is not None:
        endpoint.close()
    gc.unfreeze()
    gc.set_threshold(*threshold)
    peer.join(5)
    turns = [
        e
        for e in events
        if isinstance(e, TurnMetrics)
        and e.speech_end is not None
        and w0 <= e.speech_end <= w1
        and e.total_ms is not None
    ]
    delays = conf["llm_delay"] * 1000  # one chunk gap before the first word
    total = [t.total_ms - delays for t in turns if t.total_ms is not None]
    barges = sum(1 for e in events if isinstance(e, BargeInEvent) and w0 <= e.at <= w1)
    step = Step(
        n=n,
        window_s=round(wall, 3),
        cpu_us_per_call_s=cpu * 1e6 / (n * wall),
        core_share=cpu / wall,
        fakes_core_share=fakes_share,
        callers_core_share=peer_share,
        turns=len(turns),
        barge_ins=barges,
        latency_p50_ms=_pct(total, 50),
        latency_p95_ms=_pct(total, 95),
        latency_max_ms=max(total, default=0.0),
        stt_p95_ms=_pct([t.stt_ms for t in turns if t.stt_ms is not None], 95),
        llm_p95_ms=_pct([t.llm_ms for t in turns if t.llm_ms is not None], 95),
        tts_p95_ms=_pct([t.tts_ms for t in turns if t.tts_ms is not None], 95),
        pacing_p99_ms=_pct(late, 99),
        pacing_frames=len(late),
        pacing_over_2ms=sum(1 for x in late if x > PACING_P99_MS),
        tick_p99_ms=_pct([x * 1000 for x in ticks], 99),
        sent_p99_ms=_pct(sent, 99),
        frames_in=frames_in,
        frames_expected=round(n * 50 * wall),
        errors=errors,
        load_avg=load,
    )
    step.notes.extend(sorted(set(failures))[:3])
    step.judge()
    return step


def _show(s: Step) -> None:
    print(
        f"N={s.n:4d}  CPU {s.cpu_us_per_call_s:7.0f} us/call-s (core {s.core_share:4.0%}, "
        f"fakes {s.fakes_core_share:4.0%}, callers {s.callers_core_share:4.0%})  "
        f"turns {s.turns:4d} barge-ins {s.barge_ins:3d}  latency p50 {s.latency_p50_ms:6.1f} "
        f"p95 {s.latency_p95_ms:6.1f} max {s.latency_max_ms:6.1f} ms "
        f"(stt {s.stt_p95_ms:.1f} llm {s.llm_p95_ms:.1f} tts {s.tts_p95_ms:.1f} p95)  "
        f"pacing p99 {s.pacing_p99_ms:5.2f} ms ({s.pacing_over_2ms}/{s.pacing_frames} > 2 ms; "
        f"ticks p99 {s.tick_p99_ms:.2f}, sent p99 {s.sent_p99_ms:.2f})  "
        f"frames {s.frames_in}/{s.frames_expected}  "
        f"errors {s.errors}  load {s.load_avg:.1f}  {'held' if s.held else 'NOT held'}"
        + (f" ({'; '.join(s.notes)})" if s.notes else ""),
        flush=True,
    )


_IDLE = (
    "(select)",
    "'poll' of",
    "base_events.py",
    "(run_forever)",
    "(run_until_complete)",
    "runners.py",
)
"""The loop itself (its idle wait in ``select`` and the frames enclosing all the rest)."""


def _top(profile: cProfile.Profile, count: int, key: str = "cumtime_s") -> list[dict[str, Any]]:
    stats = pstats.Stats(profile, stream=io.StringIO())
    rows = []
    for (path, line, name), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{Path(path).name}:{line}({name})",
                "calls": nc,
                "tottime_s": tt,
                "cumtime_s": ct,
            }
        )
    rows = [r for r in rows if not any(k in r["function"] for k in _IDLE)]
    rows.sort(key=lambda r: r[key], reverse=True)
    return rows[:count]


def _by_package(profile: cProfile.Profile, count: int) -> list[dict[str, Any]]:
    """Own time (tottime) summed per package or voxtra module: who burns the CPU."""
    stats = pstats.Stats(profile, stream=io.StringIO())
    sums: dict[str, float] = {}
    for (path, _line, _name), (_cc, _nc, tt, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        parts = Path(path).parts
        if "voxtra" in parts:
            key = "/".join(parts[parts.index("voxtra") :])
        elif "site-packages" in parts:
            key = parts[parts.index("site-packages") + 1]
        elif path.startswith("~") or path.startswith("<"):
            key = "builtins (C: sockets, select, ...)"
        else:
            key = "stdlib " + (
                Path(path).parent.name if Path(path).name == "__init__.py" else Path(path).stem
            )
        sums[key] = sums.get(key, 0.0) + tt
    total = sum(sums.values()) or 1.0
    ordered = sorted(sums.items(), key=lambda kv: kv[1], reverse=True)[:count]
    return [{"where": k, "own_s": v, "share": v / total} for k, v in ordered]


async def prime(urls: tuple[str, str, str]) -> None:
    """One request through each provider before any step: the SDKs import modules and
    build their HTTP machinery on first use (measured 20-70 ms of one loop pass each,
    which would show as late ticks of a step), once per process on a real server."""
    from voxtra.media.frames import AudioChunk, Codec
    from voxtra.providers.base import ChatMessage

    dg_url, oa_url, el_url = urls
    stream = await DeepgramSTT(KEY, base_url=dg_url).stream()
    await stream.send(AudioChunk(b"\xff" * 160, 8000, Codec.ULAW))
    await stream.close()
    async for _ in OpenAILLM(KEY, base_url=oa_url).generate([ChatMessage("user", "hi")]):
        pass
    async for _ in ElevenLabsTTS(KEY, "bench-voice", base_url=el_url).synthesize("Hi."):
        pass


async def search(args: argparse.Namespace, urls: tuple[str, str, str], script: bytes) -> Any:
    if "sdk-http" in _conf(args)["experiments"]:
        return await _search(args, urls, script)
    async with shared_http():  # as a VoxtraApp holds one from start() to stop()
        return await _search(args, urls, script)


async def _search(args: argparse.Namespace, urls: tuple[str, str, str], script: bytes) -> Any:
    conf = _conf(args)
    if "wake-all" in conf["experiments"]:
        reader_wakes().slice_size = 1 << 30  # every reader of a tick in one loop pass
    if args.engine == "pipeline":
        await prime(urls)
    steps: list[Step] = []

    async def step(n: int) -> Step:
        s = await run_step(n, args.window, urls, script, conf)
        steps.append(s)
        _show(s)
        return s

    if args.profile_only:
        pass
    elif args.counts:
        for n in (int(c) for c in args.counts.split(",") if c):
            await step(n)
    elif args.quick:
        await step(args.start)
    else:
        good, bad = 0, 0
        n = args.start
        while n <= args.max:
            if (await step(n)).held:
                good, n = n, n * 2
            else:
                bad = n
                break
        if bad:
            while bad - good > max(2, good // 8):
                mid = (good + bad) // 2
                if (await step(mid)).held:
                    good = mid
                else:
                    bad = mid
    held = [s for s in steps if s.held]
    best = max(held, key=lambda s: s.n) if held else None
    prof_n = args.profile_n or (best.n if best else args.start)
    if args.no_profile and not args.profile_only:
        return steps, best, {}, None
    # CPU time, not wall time: on a shared box a wall-clock profile charges the time
    # the process spent preempted to whatever function it was in.
    profile = cProfile.Profile(time.thread_time)
    prof_step = await run_step(prof_n, args.profile_window, urls, script, conf, profile)
    if args.profile_dump:
        profile.dump_stats(args.profile_dump)
    top = _top(profile, 15)
    packages = _by_package(profile, 15)
    own = _top(profile, 15, "tottime_s")
    print(
        f"\nprofile, N={prof_n}, {args.profile_window:g} s "
        "(cProfile, CPU time, top 15 by cumulative):"
    )
    for r in top:
        print(
            f"  {r['cumtime_s']:8.3f} s cum  {r['tottime_s']:7.3f} s own  {r['calls']:8d}  "
            f"{r['function']}"
        )
    print("top 15 by own time:")
    for r in own:
        print(f"  {r['tottime_s']:7.3f} s own  {r['calls']:8d}  {r['function']}")
    print("own time by package / module (share of all profiled own time, idle wait included):")
    for r in packages:
        print(f"  {r['share']:6.1%}  {r['own_s']:7.3f} s  {r['where']}")
    return steps, best, {"top": top, "top_own": own, "by_package": packages}, prof_step


# -- what-if experiments ----------------------------------------------------------------

EXPERIMENTS = ("deflate", "stt-frames", "tts-20ms", "wake-all", "sdk-http")
"""What an earlier tree did, put back per run (see the module's doc)."""


def check_experiments(names: list[str]) -> list[str]:
    for name in names:
        if name not in EXPERIMENTS:
            raise SystemExit(f"unknown experiment {name!r} (known: {', '.join(EXPERIMENTS)})")
    return names


def _conf(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "llm_delay": args.llm_delay,
        "tts_chunk_ms": args.tts_chunk_ms,
        "stt_timeout": 5.0,
        "fakes_pid": getattr(args, "fakes_pid", None),
        "engine": getattr(args, "engine", "pipeline"),
        "experiments": tuple(x for x in getattr(args, "experiment", "").split(",") if x),
        "media": getattr(args, "media", "engine"),
        "others_cpus": getattr(args, "others_cpus", None),
        # the speech-to-speech fake: its answer, and its gap between 100 ms of audio
        "answer": ANSWER,
        "chunk_delay": 0.02,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: N=5, 5 s window")
    ap.add_argument("--window", type=float, default=20.0, help="seconds measured per step")
    ap.add_argument("--start", type=int, default=25, help="first N (then doubled)")
    ap.add_argument("--max", type=int, default=800, help="largest N tried")
    ap.add_argument("--counts", default="", help="run these N only (no search), e.g. 46,100")
    ap.add_argument("--profile-window", type=float, default=8.0)
    ap.add_argument("--profile-n", type=int, default=0, help="N profiled (default: best N)")
    ap.add_argument("--profile-dump", metavar="PATH", help="write the raw cProfile stats here")
    ap.add_argument("--profile-only", action="store_true", help="no search: profile --profile-n")
    ap.add_argument("--llm-delay", type=float, default=0.0, help="fake LLM gap between chunks")
    ap.add_argument("--tts-chunk-ms", type=int, default=100, help="fake TTS body chunk length")
    ap.add_argument(
        "--experiment",
        default="",
        help=f"comma-separated earlier behaviours put back: {', '.join(EXPERIMENTS)}",
    )
    ap.add_argument("--engine", choices=ENGINES, default="pipeline")
    ap.add_argument(
        "--media",
        choices=("rtp", "engine"),
        default="engine",
        help="calls' RTP: rows of one MediaEngine (what the app's default media.engine "
        "opens), or an RtpTransport each on the shared socket",
    )
    ap.add_argument(
        "--cpus",
        choices=("auto", "none"),
        default="auto",
        help="auto: this process on one CPU, the fakes and callers on the others",
    )
    ap.add_argument("--no-profile", action="store_true", help="skip the closing profile")
    ap.add_argument("--json", metavar="PATH")
    args = ap.parse_args()
    check_experiments([x for x in args.experiment.split(",") if x])
    if args.quick:
        args.start, args.window, args.profile_window = 5, 5.0, 2.0
    mine, others = placement(args.cpus)
    args.others_cpus = others
    pin(mine)
    ctx = mp.get_context("spawn")
    urls_q: mp.Queue[tuple[str, str, str]] = ctx.Queue()
    stop = ctx.Event()
    if args.engine == "pipeline":
        fakes = ctx.Process(target=_fakes, args=(_conf(args), urls_q, stop))
    else:
        from realtime_agents import serve_fakes

        fakes = ctx.Process(target=serve_fakes, args=("openai", _conf(args), urls_q, stop))
    fakes.start()
    args.fakes_pid = fakes.pid
    try:
        with tempfile.TemporaryDirectory(prefix="voxtra-density-") as work:
            script = asyncio.run(caller_script(Path(work)))
        urls = urls_q.get(timeout=30)
        print(
            f"caller loop {len(script) / 8000:.1f} s ({len(PHRASES)} phrases), window "
            f"{args.window:g} s per step, load {os.getloadavg()[0]:.1f}, "
            f"CPUs: this process {sorted(mine) if mine else 'any'}, fakes and callers "
            f"{sorted(others) if others else 'any'}",
            flush=True,
        )
        steps, best, top, prof_step = asyncio.run(search(args, urls, script))  # type: ignore[arg-type]
    finally:
        stop.set()
        fakes.join(10)
        if fakes.is_alive():
            fakes.terminate()
    if not steps:
        _show(prof_step)
        return
    reference = best or min(steps, key=lambda s: s.n)
    met = best is not None and best.n >= TARGET_CALLS
    line = (
        f"agent_density ({args.engine}, media {args.media}): "
        f"{best.n if best else 0} concurrent agent calls "
        f"per core held "
        f"(target >= {TARGET_CALLS}: {'MET' if met else 'NOT MET'}); at N={reference.n}: "
        f"{reference.cpu_us_per_call_s:.0f} us CPU per agent-call-second, turn latency p95 "
        f"{reference.latency_p95_ms:.1f} ms (<= {LATENCY_P95_MS:g}), pacing p99 "
        f"{reference.pacing_p99_ms:.2f} ms, at the send {reference.sent_p99_ms:.2f} ms "
        f"(<= {PACING_P99_MS:g})"
    )
    print(line)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "quick": args.quick,
                    "engine": args.engine,
                    "experiments": [x for x in args.experiment.split(",") if x],
                    "window_s": args.window,
                    "target_calls": TARGET_CALLS,
                    "steps": [asdict(s) for s in steps],
                    "best": asdict(best) if best else None,
                    "calls_per_core": best.n if best else 0,
                    "met": met,
                    "media": args.media,
                    "profile": (
                        {"n": prof_step.n, "window_s": prof_step.window_s, **top}
                        if prof_step is not None
                        else None
                    ),
                    "summary": line,
                },
                fh,
                indent=2,
            )


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
