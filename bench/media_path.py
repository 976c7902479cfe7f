"""Benchmark: N concurrent calls through the whole per-frame media path in one process.

Per call and per 20 ms frame: RTP parse -> jitter buffer -> G.711 decode -> resample
8 -> 16 kHz -> app (identity) -> resample 16 -> 8 kHz -> G.711 encode -> framing ->
RTP build -> paced UDP send on loopback, with one shared 20 ms ticker for all calls.

"numpy": the transport converts (``set_inbound_format(PCM16, 16000)``, 16 kHz PCM
sent back), batched across calls each tick. "per-call": the app converts each frame
with numpy G.711 and its own resamplers, as a reader without the transport's help.

A separate process plays Asterisk: it sends every call's inbound RTP at the 20 ms pace
and swallows what comes back, so its CPU is not counted. The same path is then run
with the pure-Python per-sample G.711 codec, for the ratio, and as "wire-echo" with
an app that echoes wire frames untouched: the transport's own share of the cost.

    .venv/bin/python bench/media_path.py [--counts 1,100,500] [--seconds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import multiprocessing as mp
import socket
import statistics
import time
from dataclasses import dataclass

import numpy as np

from voxtra.media import g711
from voxtra.media.frames import AudioChunk, Codec
from voxtra.media.pacer import Pacer, Ticker
from voxtra.media.resample import StreamResampler
from voxtra.media.rtp import RtpSender
from voxtra.media.rtp_transport import RtpTransport


def _swallow(sock: socket.socket) -> int:
    """Read and drop every datagram waiting (the peer's half of the echo)."""
    n = 0
    while True:
        try:
            sock.recv(2048)
        except BlockingIOError:
            return n
        n += 1


def _asterisk(ports: list[int], seconds: float, ready: mp.synchronize.Event, out: mp.Queue) -> None:  # type: ignore[type-arg]
    """Child process: one socket sends one RTP stream to each port every 20 ms.

    It swallows what comes back by draining its socket once per tick (not a callback
    per packet) so that it takes as little as possible of the CPU the measured
    process shares with it.
    """

    async def main() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.setblocking(False)
        sock.bind(("127.0.0.1", 0))
        t = np.arange(160)
        tone = (6000 * np.sin(2 * np.pi * 440 * t / 8000)).astype("<i2").tobytes()
        payload = g711.pcm16_to_ulaw(tone)
        senders = [(RtpSender(0), ("127.0.0.1", port)) for port in ports]
        received = 0
        ready.set()
        pacer = Pacer()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await pacer.wait()
            for s, addr in senders:
                sock.sendto(s.build(payload), addr)
            received += _swallow(sock)
        await asyncio.sleep(0.2)
        out.put(received + _swallow(sock))
        sock.close()

    asyncio.run(main())


@dataclass
class Result:
    n: int
    codec: str
    cpu_us_per_call_s: float
    p50_ms: float
    p99_ms: float
    frames_in: int
    frames_out: int
    underruns: int


async def _echo(tr: RtpTransport) -> None:
    """The transport alone: wire frames straight back (no decode, resample, encode)."""
    async for frame in tr:
        await tr.send(frame)


async def _app16k(tr: RtpTransport) -> None:
    """The framework converts: frames arrive as 16 kHz PCM, 16 kHz PCM is sent back.

    Decode + resample up (inbound) and resample down + encode (outbound) run in the
    transport, batched across all calls once per tick.
    """
    tr.set_inbound_format(Codec.PCM16, 16000)
    async for chunk in tr:
        await tr.send(chunk)  # the app: identity


async def _call(tr: RtpTransport, pure: bool) -> None:
    """The app converts each frame itself (per call, no batching)."""
    up = StreamResampler(8000, 16000)
    down = StreamResampler(16000, 8000)
    dec = g711.ulaw_to_pcm16_pure if pure else g711.ulaw_to_pcm16
    enc = g711.pcm16_to_ulaw_pure if pure else g711.pcm16_to_ulaw
    async for frame in tr:
        pcm16k = up.process(dec(frame.data))
        app_out = pcm16k  # the app: identity
        pcm8k = down.process(app_out)
        if pcm8k:
            await tr.send(AudioChunk(enc(pcm8k), 8000, Codec.ULAW))


async def run(n: int, seconds: float, mode: str, freeze: bool = True) -> Result:
    ticker = Ticker()
    transports = [
        # The fake Asterisk's address is not known in advance: symmetric RTP (opt-in).
        await RtpTransport.open(
            "ulaw", bind_host="127.0.0.1", ticker=ticker, name=f"c{i}", learn_remote=True
        )
        for i in range(n)
    ]
    ports = [tr.local_address[1] for tr in transports]
    if freeze:
        # What a long-running server should do once started: move everything alive
        # (modules, the calls' objects) out of the collector's reach. Without it a
        # full collection scans the whole heap every few seconds (measured: ~23 ms
        # at N=500, which is the p99 pacing lateness).
        gc.collect()
        gc.freeze()
    warm = 1.0
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    out: mp.Queue[int] = ctx.Queue()
    child = ctx.Process(target=_asterisk, args=(ports, warm + seconds + 0.5, ready, out))
    child.start()
    while not ready.is_set():
        await asyncio.sleep(0.01)
    tasks = [
        asyncio.create_task(
            _echo(tr)
            if mode == "wire-echo"
            else _app16k(tr)
            if mode == "numpy"
            else _call(tr, mode == "pure-python")
        )
        for tr in transports
    ]
    await asyncio.sleep(warm)
    for tr in transports:
        tr.stats.pacing_lateness_s.clear()
    ticker.lateness.clear()
    f_in0 = sum(tr.stats.frames_in for tr in transports)
    f_out0 = sum(tr.stats.frames_out for tr in transports)
    u0 = sum(tr.stats.underruns for tr in transports)
    c0, w0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - c0, time.monotonic() - w0
    late = sorted(abs(x) for x in ticker.lateness)  # |wake - deadline|: early counts too
    res = Result(
        n,
        mode,
        cpu * 1e6 / (n * wall),
        statistics.quantiles(late, n=100)[49] * 1000 if len(late) > 2 else 0.0,
        statistics.quantiles(late, n=100)[98] * 1000 if len(late) > 2 else 0.0,
        sum(tr.stats.frames_in for tr in transports) - f_in0,
        sum(tr.stats.frames_out for tr in transports) - f_out0,
        sum(tr.stats.underruns for tr in transports) - u0,
    )
    child.join()
    for tr in transports:
        await tr.close()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await ticker.aclose()
    gc.unfreeze()  # the next run starts from the same state
    return res


async def idle_tick_cost(seconds: float) -> float:
    """CPU microseconds per second of a Ticker with one no-op callback.

    The fixed price of waking every 20 ms (on this VM ~1-3 ms CPU per second, mostly
    the sleep/wake itself); at N=1 it dominates the per-call figure, at N=500 it is
    spread thin.
    """
    ticker = Ticker()
    ticker.add(lambda skipped: None)
    await asyncio.sleep(0.2)
    c0, w0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    cpu, wall = time.process_time() - c0, time.monotonic() - w0
    await ticker.aclose()
    return cpu * 1e6 / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--counts", default="1,100,500")
    ap.add_argument("--pure-counts", default="1,100")
    ap.add_argument(
        "--percall-counts", default="100,500", help="numpy codecs, converted per call by the app"
    )
    ap.add_argument(
        "--echo-counts", default="100,500", help="transport-only runs (wire frames echoed)"
    )
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument(
        "--no-gc-freeze", action="store_true", help="leave the start-up heap to the collector"
    )
    args = ap.parse_args()
    idle = asyncio.run(idle_tick_cost(min(args.seconds, 2.0)))
    print(f"idle 20 ms ticker alone: {idle:.0f} us CPU per second (fixed, not per call)")
    results: list[Result] = []
    runs = (
        ("numpy", args.counts),
        ("per-call", args.percall_counts),
        ("pure-python", args.pure_counts),
        ("wire-echo", args.echo_counts),
    )
    for mode, counts in runs:
        for n in (int(c) for c in counts.split(",") if c):
            r = asyncio.run(run(n, args.seconds, mode, not args.no_gc_freeze))
            results.append(r)
            expected = n * 50 * args.seconds
            print(
                f"{r.codec:11s} N={r.n:4d}  CPU {r.cpu_us_per_call_s:8.1f} us/call-s  "
                f"(core {r.cpu_us_per_call_s * r.n / 1e4:3.0f}% busy)  "
                f"streams/core {1e6 / r.cpu_us_per_call_s:8.0f}  "
                f"pacing p50 {r.p50_ms:5.2f} ms p99 {r.p99_ms:5.2f} ms  "
                f"frames in {r.frames_in}/{expected:.0f} out {r.frames_out}  "
                f"underruns {r.underruns}",
                flush=True,
            )
    fast = {r.n: r for r in results if r.codec == "numpy"}
    per_call = {r.n: r for r in results if r.codec == "per-call"}
    for r in results:
        if r.codec != "pure-python":
            continue
        for name, other in (("numpy", fast), ("per-call", per_call)):
            if r.n in other:
                ratio = r.cpu_us_per_call_s / other[r.n].cpu_us_per_call_s
                print(f"pure-python / {name} CPU at N={r.n}: {ratio:.1f}x")
    big = fast.get(max(fast)) if fast else None
    if big is not None:
        ok_cpu = big.cpu_us_per_call_s <= 300
        ok_jit = big.p99_ms <= 2.0
        print(
            f"targets at N={big.n}: CPU <= 300 us/call-s {'MET' if ok_cpu else 'NOT MET'}, "
            f"p99 pacing jitter <= 2 ms {'MET' if ok_jit else 'NOT MET'}"
        )


if __name__ == "__main__":
    main()
