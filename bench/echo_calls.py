"""K concurrent real echo calls through the sandbox Asterisk.

Each call is a Local channel whose far end echoes (so the call lasts as long as the
bench needs); the app answers, attaches ExternalMedia RTP and echoes
``audio_stream()`` back with ``send_audio()``. Reports, per run: frames received and
lost by our side (RTP sequence gaps, late packets, inbound drops), pacing jitter of the
shared 20 ms clock, and CPU used by this process.

    python bench/echo_calls.py --calls 100 --seconds 8 [--arrival-rate 20] [--json out.json]
        [--engine off|on|both --rounds 3] [--handler echo|listen]

Calls are placed all at once, or ``--arrival-rate`` per second. The figures are taken
once every call is up, while all of them run. The Local callers are 8 kHz ``slin``
(``place_local_call``'s default): left to Asterisk they were ``slin192``, resampled on
every frame, and the co-located Asterisk could not carry 100 calls on two cores.

Needs the sandbox (``python -m voxtra.testing.asterisk up``) or ``VOXTRA_ARI_URL``.
Prints figures and a one-line verdict per run (target: 0 frames lost by our side);
``--json`` writes them. RTP calls share the app's one socket (``RtpEndpoint``): the
endpoint's figures (datagrams from strangers, ``recvmmsg``/``sendmmsg`` calls) are
reported too. ``--engine on`` runs the calls' RTP on the app's ``MediaEngine``
(``media.engine``), ``--engine both`` runs each size both ways, alternated
``--rounds`` times (CPU figures of a shared box drift: compare pairs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import time
import uuid
from typing import Any

from voxtra import CallSession, VoxtraApp
from voxtra.media.transport import MediaTransport
from voxtra.testing.local_caller import place_local_call


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _place(app: VoxtraApp, n: int, delay: float) -> Any:
    await asyncio.sleep(delay)
    return await place_local_call(
        app.ari,
        str(6000 + n),
        behaviour="play",
        # VOXTRA_APP: the dialplan hands the call to this run's own Stasis app
        variables={"PLAYFILE": "&".join(["demo-congrats"] * 6), "VOXTRA_APP": app.app_name},
    )


async def run(
    calls: int,
    seconds: float,
    transport: str,
    arrival_rate: float,
    engine: bool = False,
    handler: str = "echo",
) -> dict[str, Any]:
    transports: list[MediaTransport] = []
    answered = asyncio.Event()

    app = VoxtraApp(
        os.environ.get("VOXTRA_ARI_URL", "http://127.0.0.1:8088"),
        os.environ.get("VOXTRA_USERNAME", "voxtra"),
        os.environ.get("VOXTRA_PASSWORD", "voxtra"),
        # A name of its own: the sandbox's default app ("voxtra") may be someone else's
        # (an example or a test running there), whose calls the bench would take.
        app_name=f"voxtra-bench-echo-{uuid.uuid4().hex[:6]}",
        media={"transport": transport, "codec": "ulaw", "engine": engine},
    )

    failures: list[str] = []

    @app.default
    async def echo(call: CallSession) -> None:
        try:
            await call.answer()
            media = await call.media()
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
            raise
        finally:
            if len(transports) + len(failures) + 1 >= calls:
                answered.set()
        transports.append(media)
        if handler == "listen":  # an agent while the caller speaks: 16 kHz PCM in, silence out
            async for _chunk in call.audio_stream(codec="pcm16", sample_rate=16000):
                pass
            return
        async for chunk in call.audio_stream():
            await call.send_audio(chunk)

    await app.start()
    try:
        setup_started = time.monotonic()
        spacing = 1.0 / arrival_rate if arrival_rate > 0 else 0.0
        placed = await asyncio.gather(*(_place(app, n, n * spacing) for n in range(calls)))
        await asyncio.wait_for(answered.wait(), 300)
        setup = time.monotonic() - setup_started
        app.ticker.lateness.clear()
        for media in transports:
            media.stats.frames_in = media.stats.frames_out = media.stats.silence_out = 0
        # the engine's transports count silence from its counters: take a baseline
        silence0 = sum(m.stats.silence_out for m in transports)
        lost0 = sum(m.stats.lost for m in transports)
        late0 = sum(m.stats.late for m in transports)
        cpu0, wall0 = _cpu(), time.monotonic()
        await asyncio.sleep(seconds)
        cpu, wall = _cpu() - cpu0, time.monotonic() - wall0
        lateness = sorted(abs(x) for x in app.ticker.lateness)  # early wakes are negative
        stats = [m.stats for m in transports]
        endpoints: dict[int, Any] = {
            id(e): e for m in transports if (e := getattr(m, "endpoint", None))
        }
        endpoints.update(
            {id(h.engine): h.engine for m in transports if (h := getattr(m, "hub", None))}
        )
        expected = calls * wall * 50
        result = {
            "app_name": app.app_name,
            "handler": handler,
            "engine": engine,
            "load_avg_1m": os.getloadavg()[0],
            "calls": calls,
            "attached": len(transports),
            "failed": failures,
            "setup_s": setup,
            "seconds": wall,
            "frames_in": sum(s.frames_in for s in stats),
            "frames_expected": expected,
            "lost": sum(s.lost for s in stats) - lost0,
            "late": sum(s.late for s in stats) - late0,
            "inbound_dropped": sum(s.inbound_dropped for s in stats),
            "underruns": sum(s.underruns for s in stats),
            "frames_out": sum(s.frames_out for s in stats),
            "silence_out": sum(s.silence_out for s in stats) - silence0,
            "cpu_us_per_call_s": cpu * 1e6 / (calls * wall),
            "pacing_p50_ms": statistics.median(lateness) * 1000 if lateness else 0.0,
            "pacing_p99_ms": lateness[int(len(lateness) * 0.99) - 1] * 1000 if lateness else 0.0,
            "rtp_sockets": len(endpoints),
            "dropped_foreign_source": sum(
                e.stats.dropped_foreign_source for e in endpoints.values()
            ),
        }
        for call in placed:
            await call.hangup()  # (LocalCall.hangup ignores ARI errors)
    finally:
        await app.stop(deadline=2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="*", default=[10, 100])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--transport", default="rtp", choices=["rtp", "websocket", "audiosocket"])
    parser.add_argument(
        "--arrival-rate", type=float, default=0.0, help="calls placed per second (0: at once)"
    )
    parser.add_argument("--engine", default="off", choices=["off", "on", "both"])
    parser.add_argument("--rounds", type=int, default=1, help="with --engine both: pairs")
    parser.add_argument(
        "--handler",
        default="echo",
        choices=["echo", "listen"],
        help="listen: read 16 kHz PCM, send nothing (an agent hearing the caller)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON here")
    args = parser.parse_args()
    runs = []
    modes = {"off": [False], "on": [True], "both": [False, True] * args.rounds}[args.engine]
    for calls in args.calls:
        for engine in modes:
            r = asyncio.run(
                run(calls, args.seconds, args.transport, args.arrival_rate, engine, args.handler)
            )
            runs.append(r)
            name = args.transport + ("+engine" if engine else "") + f" {args.handler}"
            print(
                f"{name:11s} calls={r['calls']:4d} (media attached {r['attached']}, "
                f"set up in {r['setup_s']:.1f} s)  frames in {r['frames_in']:7d} "
                f"(~{r['frames_expected']:.0f} expected)  lost {r['lost']}  late {r['late']}  "
                f"dropped {r['inbound_dropped']}  underruns {r['underruns']}  "
                f"out {r['frames_out']} + {r['silence_out']} silence  "
                f"CPU {r['cpu_us_per_call_s']:.0f} us/call-s  "
                f"pacing p50 {r['pacing_p50_ms']:.2f} ms p99 {r['pacing_p99_ms']:.2f} ms  "
                f"load {r['load_avg_1m']:.1f}"
            )
            for failure in r["failed"][:5]:
                print("  call failed:", failure)
            ok = r["lost"] == 0 and r["inbound_dropped"] == 0 and not r["failed"]
            r["met"] = ok
            print(
                f"echo_calls: {name} {r['calls']} calls, {r['lost']} frames lost, "
                f"{r['inbound_dropped']} dropped by our side (target 0: "
                f"{'MET' if ok else 'NOT MET'}), {r['cpu_us_per_call_s']:.0f} us CPU per "
                f"call-second, RTP sockets {r.get('rtp_sockets', 0)}, Stasis app {r['app_name']}"
            )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(runs, fh, indent=2)


if __name__ == "__main__":
    main()
