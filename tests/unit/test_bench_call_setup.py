"""bench/call_setup.py against FakeAsterisk: a smoke run, not a measurement (10 calls,
about 3 s). Only what the printed figures say about the run is checked, never timing."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_saturated_run_is_labelled_with_the_concurrency_it_ran_at() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "call_setup.py"),
            *("--target", "fake", "--directions", "outbound", "--calls", "10"),
            *("--concurrency", "5", "--rate", "0", "--no-faults"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line, verdict = proc.stdout.strip().splitlines()[-2:]
    # "50 busy" was printed whatever --concurrency said
    assert line.startswith("fake    outbound plain   5 busy  10/10 calls"), line
    assert verdict.startswith("targets: CPU <= 0.3 ms/call "), verdict
    # A tail within the run's own figures: with 10 calls, statistics.quantiles' default
    # ("exclusive") method put the p99 beyond the slowest dispatch.
    found = re.search(r"p50 ([\d.]+) p99 ([\d.]+) ms \(max ([\d.]+),", line)
    assert found is not None, line
    p50, p99, most = map(float, found.groups())
    assert p50 <= p99 <= most, line
