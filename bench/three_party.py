"""Benchmark: how long the three-party commands take on a real Asterisk.

Asterisk calls a pjsua2 phone (the caller); the handler attaches media, then
``connect()`` dials a second phone (the callee, answering at once), switches the
agent's mode ``--switches`` times (barge -> whisper(callee) -> whisper(caller) -> spy
-> ...), then ``close()``. Reported: connect (from the request to the parties being
bridged with the agent seated; the callee's answer included), each mode switch (a
snoop created, in Stasis, bridged, the old one hung up: four ARI steps), and close.

Run against the sandbox (``python -m voxtra.testing.asterisk up``)::

    python bench/three_party.py --calls 3 --switches 20
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from voxtra import CallSession
from voxtra.app import VoxtraApp
from voxtra.testing.sipcaller import SipCaller


def summary(name: str, values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p90 = ms[min(len(ms) - 1, round(0.9 * (len(ms) - 1)))]
    return (
        f"{name:<14} n={len(ms):<4} median {statistics.median(ms):7.1f} ms"
        f"   p90 {p90:7.1f} ms   max {ms[-1]:7.1f} ms"
    )


async def main(calls: int, switches: int, url: str) -> None:
    app = VoxtraApp(url, "voxtra", "voxtra", f"voxtra-bench-3p-{uuid.uuid4().hex[:6]}", environ={})
    await app.start()
    connects: list[float] = []
    modes: list[float] = []
    closes: list[float] = []
    work = Path(tempfile.mkdtemp(prefix="bench-3p-"))
    try:
        async with (
            SipCaller(workdir=work / "caller") as caller,
            SipCaller(workdir=work / "callee") as callee,
        ):
            await caller.listen(record=False)
            await callee.listen(record=False)
            callee_endpoint = f"PJSIP/sipcaller/sip:callee@127.0.0.1:{callee.port}"
            for _ in range(calls):
                done = asyncio.Event()

                async def handler(call: CallSession, done: asyncio.Event = done) -> None:
                    await call.media()
                    begun = time.perf_counter()
                    await call.connect(ring_time=10, to=callee_endpoint, ringback=False)
                    connects.append(time.perf_counter() - begun)
                    cycle = [
                        lambda: call.whisper(to="callee"),
                        lambda: call.whisper(to="caller"),
                        call.spy,
                        call.barge,
                    ]
                    for i in range(switches):
                        begun = time.perf_counter()
                        await cycle[i % len(cycle)]()
                        modes.append(time.perf_counter() - begun)
                    begun = time.perf_counter()
                    await call.close()
                    closes.append(time.perf_counter() - begun)
                    done.set()

                await app.originate(
                    f"PJSIP/sipcaller/sip:caller@127.0.0.1:{caller.port}",
                    handler=handler,
                    timeout=10,
                )
                phone = await caller.next_incoming_call(10)
                other = await callee.next_incoming_call(10)
                await asyncio.wait_for(done.wait(), 60)
                await other.hangup()
                await phone.wait_ended(10)
    finally:
        await app.stop()
    print(summary("connect", connects))
    print(summary("mode switch", modes))
    print(summary("close", closes))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--switches", type=int, default=20)
    parser.add_argument("--url", default="http://127.0.0.1:8088")
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.switches, args.url))
