"""bench/agent_density.py --quick runs end to end and writes sensible JSON, with the
pipeline (Deepgram, OpenAI, ElevenLabs fakes) and with the speech-to-speech engine
(OpenAIRealtimeEngine against FakeOpenAIRealtime).

A smoke run, not a measurement: 5 calls for a 5 s window (plus start-up, a warm-up
and a 2 s profile: about 20 s each, because the fakes and the callers are real
processes and the window must hold a few turns). Only structure and plausibility are
checked, never timing targets.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("deepgram")
pytest.importorskip("openai")
pytest.importorskip("elevenlabs")
pytest.importorskip("webrtcvad")


def run_bench(tmp_path: Path, *args: str) -> tuple[str, dict[str, Any]]:
    """``bench/agent_density.py --quick *args``: its last line and its JSON."""
    out = tmp_path / "density.json"
    bench = str(ROOT / "bench" / "agent_density.py")
    proc = subprocess.run(
        [sys.executable, bench, "--quick", *args, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1], json.loads(out.read_text())


@pytest.mark.parametrize(
    ("engine", "module"),
    [("pipeline", "pipeline.py"), ("openai-realtime", "speech_to_speech.py")],
)
def test_quick_run_writes_the_figures(tmp_path: Path, engine: str, module: str) -> None:
    last, data = run_bench(tmp_path, "--engine", engine)
    assert last.startswith(f"agent_density ({engine}, media engine): ") and ("MET" in last)
    assert data["quick"] is True and data["target_calls"] == 200 and data["engine"] == engine
    assert isinstance(data["met"], bool) and data["summary"] == last
    [step] = data["steps"]  # --quick: one step, N=5
    assert step["n"] == 5 and step["window_s"] >= 4.5
    assert step["errors"] == 0
    # the calls conversed: turns answered, caller audio moved
    assert step["turns"] >= 1
    assert step["frames_in"] > 0.5 * step["frames_expected"] > 0
    assert step["pacing_frames"] > 0  # answer audio went out through the transports
    assert step["cpu_us_per_call_s"] > 0 and 0 < step["core_share"] < 2
    assert 0 < step["latency_p50_ms"] <= step["latency_p95_ms"] <= step["latency_max_ms"]
    assert step["pacing_p99_ms"] >= 0 and step["tick_p99_ms"] >= 0
    # each tick's send is timed from its deadline, and no sooner than its wake allows
    assert step["sent_p99_ms"] >= step["tick_p99_ms"] - 1.0
    if data["calls_per_core"]:
        assert data["best"]["n"] == data["calls_per_core"] and data["best"]["held"]
    top = data["profile"]["top"]
    assert 1 <= len(top) <= 15
    assert all(r["cumtime_s"] >= 0 and r["calls"] > 0 for r in top)
    assert [r["cumtime_s"] for r in top] == sorted((r["cumtime_s"] for r in top), reverse=True)
    # the agent's own code is in the profile (the work measured is the agent's)
    assert any(module in r["function"] for r in top)


def test_quick_run_on_per_call_rtp_transports(tmp_path: Path) -> None:
    # --media rtp: an RtpTransport per call on the shared socket instead of the
    # engine's rows, the same conversations; --no-profile: no closing profile (~15 s)
    last, data = run_bench(tmp_path, "--media", "rtp", "--no-profile")
    assert last.startswith("agent_density (pipeline, media rtp): ")
    assert data["media"] == "rtp" and data["profile"] is None
    [step] = data["steps"]
    assert step["errors"] == 0 and step["turns"] >= 1
    assert step["frames_in"] > 0.5 * step["frames_expected"] > 0
    assert step["pacing_frames"] > 0  # the answers' audio went out through the transports
