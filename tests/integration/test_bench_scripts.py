"""The benches that need the real Asterisk run end to end at their smallest sizes and
print their figures, each target and its MET / NOT MET. Smoke runs, not measurements:
only the structure of what they print is checked, never a figure against its target
(that is the benches' job, on a quiet box)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from voxtra.testing.pytest_plugin import AsteriskTarget

pytestmark = pytest.mark.asterisk

ROOT = Path(__file__).resolve().parents[2]


def run_bench(asterisk: AsteriskTarget, script: str, *args: str) -> list[str]:
    env = {
        **os.environ,
        "VOXTRA_ARI_URL": asterisk.ari_url,
        "VOXTRA_USERNAME": asterisk.username,
        "VOXTRA_PASSWORD": asterisk.password,
    }
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()


def test_echo_calls_takes_its_calls_on_a_stasis_app_of_its_own(
    asterisk: AsteriskTarget,
) -> None:
    # The sandbox's default app ("voxtra") belongs to whoever runs an example or a test
    # there: the bench registered it too, and took that one's calls or lost its own.
    *_, figures, verdict = run_bench(asterisk, "echo_calls.py", "--calls", "1", "--seconds", "1")
    assert "calls=   1 (media attached 1," in figures, figures
    found = re.fullmatch(
        r"echo_calls: rtp echo 1 calls, \d+ frames lost, \d+ dropped by our side "
        r"\(target 0: (MET|NOT MET)\), \d+ us CPU per call-second, RTP sockets 1, "
        r"Stasis app (\S+)",
        verdict,
    )
    assert found is not None, verdict
    assert found[2].startswith("voxtra-bench-echo-"), verdict


@pytest.mark.sip
def test_turn_latency_prints_a_verdict_for_each_of_its_targets(
    asterisk: AsteriskTarget,
) -> None:
    pytest.importorskip("pjsua2")
    pytest.importorskip("faster_whisper")
    lines = run_bench(
        asterisk, "turn_latency.py", "--calls", "1", "--turns", "1", "--barge-ins", "1"
    )
    verdicts = [line for line in lines if line.startswith("target: ")]
    pattern = r"target: {} p{} <= {} ms: (MET|NOT MET) \(\d+\.\d ms\)"
    assert len(verdicts) == 3, lines
    for line, (what, q, limit) in zip(
        verdicts,
        [
            (r"end of turn on the line \(caller's last word -> turn ended\)", 50, 400),
            ("framework-added time per turn", 95, 20),
            (r"barge-in stop time \(caller onset -> agent silent\)", 95, 150),
        ],
        strict=True,
    ):
        assert re.fullmatch(pattern.format(what, q, limit), line), line
