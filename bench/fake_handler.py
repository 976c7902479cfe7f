"""Benchmark: how long a user's handler test takes against FakeAsterisk. Target < 50 ms.

One "test" is what a user writes with the ``fake_asterisk`` fixture: build the app
with its handler, ``async with fake.serve(app)`` (start, events connected), an incoming
call, the handler answers, plays a prompt, reads a key the test presses, plays it back
and hangs up; the test waits for the end; the app stops. Timed from creating the fake
to the app stopped (pytest's own per-test overhead is not in it). The first run pays
for imports and caches and is reported apart; the target applies to the median and
p95 of the runs after it.

    .venv/bin/python bench/fake_handler.py [--runs 50]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from voxtra import VoxtraApp
from voxtra.testing import FakeAsterisk

TARGET_MS = 50.0


def build_app(tmp: Path) -> VoxtraApp:
    app = VoxtraApp(
        "http://asterisk.invalid:8088",
        "user",
        "secret",
        app_name="bench",
        instance_id="bench",
        spool_dir=str(tmp / "spool"),
        recordings_dir=str(tmp / "recordings"),
    )

    @app.route("1000")
    async def menu(call):  # type: ignore[no-untyped-def]
        await call.answer()
        await call.play_and_wait("sound:main-menu")
        digit = await call.listen_dtmf(timeout=5)
        await call.play_and_wait(f"digits:{digit}")
        await call.hangup()

    return app


async def one_test(tmp: Path) -> float:
    began = time.perf_counter()
    fake = FakeAsterisk()
    app = build_app(tmp)
    async with fake.serve(app):
        call = await fake.incoming(extension="1000", caller="+4930123")
        await call.wait_until(lambda c: len(c.played) == 1)
        await call.press("5")
        await call.wait_ended()
    await fake.aclose()
    elapsed = (time.perf_counter() - began) * 1000
    assert call.played == ["sound:main-menu", "digits:5"], call.played
    return elapsed


async def main(runs: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        first = await one_test(Path(tmp))
        times = [await one_test(Path(tmp)) for _ in range(runs)]
    times.sort()
    median = statistics.median(times)
    p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
    print(f"first run (cold): {first:.1f} ms")
    print(
        f"{runs} runs: median {median:.1f} ms, p95 {p95:.1f} ms, "
        f"min {times[0]:.1f} ms, max {times[-1]:.1f} ms"
    )
    ok = p95 < TARGET_MS
    print(f"target: a handler test under {TARGET_MS:.0f} ms (p95): {'MET' if ok else 'NOT MET'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    asyncio.run(main(parser.parse_args().runs))
