"""Benchmark: the local LLM (llama-server, Qwen2.5-Coder-1.5B-Instruct Q4_K_M, JSON tool
mode) as the demo assistant uses it.

Figures, each with its target:

* **load**: server start -> ``/health`` 200 (model mapped and ready). Target <= 10 s.
* **warm-up**: the prompt head (the assistant's system prompt + tool list) computed
  into the server's prompt cache, once at start. Reported, no target.
* **first token, fresh vs cached**: the same question, once with a prompt head the
  cache does not hold (a nonce at its start) and once after the warm-up. Targets:
  cached <= 0.5 s; cached at least 4x faster than fresh.
* **tokens/s**: generation speed reported by the server (``timings``), median over the
  questions; also tokens per CPU-second of the server process (the box is shared: wall
  figures move with the load, CPU figures much less). Target >= 15 tokens/s.
* **per-turn latency**: through the demo assistant's real pipeline on FakeAsterisk,
  text in (``voxtra console``'s harness): the pipeline's ``TurnMetrics.total_ms``,
  end of the caller's turn -> first answer audio handed to the transport, LLM and tool
  rounds included; STT and TTS are stand-ins here (the demo prints the full figure with
  Whisper and espeak-ng). Target p50 <= 1500 ms.

* **where a turn's time goes**: per model request of the turns, the seconds to its
  first spoken text (a tool preamble counts) and to its end, and from llama-server's
  own log the prompt tokens it had to compute (the rest came from its cache) and
  their time, and the tokens it generated.

    .venv/bin/python bench/llm_local.py [--threads 1] [--json] [--turns-only]
        [--no-preamble] [--server-arg=-fa --server-arg=on ...]

Needs root (the server runs in a chroot) and the prepared runtime and weights
(``scripts/bootstrap``, or ``python -m voxtra.local prepare``).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import statistics
import time
import urllib.request
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

from voxtra.local import LocalLLM
from voxtra.pipeline import TurnMetrics, VoicePipeline, tool_spec
from voxtra.providers.base import ChatMessage
from voxtra.testing import console
from voxtra.testing.modules import import_file

QUESTIONS = (
    "hi, at what time do you open in the morning",
    "is it sunny over in Paris right now",
    "should I take an umbrella in London",
    "are you open on Sunday",
    "blue cheese hovercraft seventeen",
    "could you connect me to a real human",
)
"""Worded unlike the system prompt's examples and the demo's own questions."""

TARGETS = {
    "load_s": ("<=", 10.0),
    "first_token_cached_s": ("<=", 0.5),
    "cache_speedup": (">=", 4.0),
    "tokens_per_s": (">=", 15.0),
    "turn_p50_ms": ("<=", 1500.0),
}


def _load_assistant() -> ModuleType:
    return import_file(
        Path(__file__).resolve().parents[1] / "examples" / "assistant.py",
        "voxtra_example_assistant",
    )


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (and its reaped children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(v) for v in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def _post(url: str, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """A streamed chat completion: (seconds to the first content delta, the timings)."""
    request = urllib.request.Request(
        url,
        data=json.dumps({**body, "stream": True, "timings_per_token": False}).encode(),
        headers={"Content-Type": "application/json"},
    )
    started = time.monotonic()
    first: float | None = None
    timings: dict[str, Any] = {}
    with urllib.request.urlopen(request, timeout=300) as response:
        for raw in response:
            line = raw.decode().strip()
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            if first is None and any(c["delta"].get("content") for c in data.get("choices", ())):
                first = time.monotonic() - started
            timings = data.get("timings", timings)
    return (first if first is not None else time.monotonic() - started), timings


_TIMING = re.compile(r"task (\d+) \|\s+(prompt eval|eval) time =\s+([\d.]+) ms /\s+(\d+) tokens")


def server_requests(log: str) -> dict[int, dict[str, float]]:
    """llama-server's own timings per task (request), from its log: prompt tokens it
    computed (not taken from its cache) and their ms, tokens generated and their ms."""
    tasks: dict[int, dict[str, float]] = {}
    for m in _TIMING.finditer(log):
        task = tasks.setdefault(int(m.group(1)), {})
        kind = "prompt" if m.group(2) == "prompt eval" else "gen"
        task[f"{kind}_ms"] = float(m.group(3))
        task[f"{kind}_tokens"] = int(m.group(4))
    return tasks


class _Timed:
    """Wraps the provider's ``generate``: per request, seconds to the first spoken
    text and to the end, and whether it was a tool call."""

    def __init__(self, local: LocalLLM) -> None:
        self.rows: list[dict[str, Any]] = []
        self.inner = local.llm.generate
        local.llm.generate = self.generate  # type: ignore[method-assign]

    async def generate(self, messages: Any, tools: Any = ()) -> Any:
        t0 = time.monotonic()
        row: dict[str, Any] = {
            "first_text_s": None,
            "tool": None,
            "after_tool": bool(messages and messages[-1].role == "tool"),
        }
        self.rows.append(row)
        async for chunk in self.inner(messages, tools):
            if chunk.text and row["first_text_s"] is None:
                row["first_text_s"] = round(time.monotonic() - t0, 3)
            if chunk.tool_calls:
                row["tool"] = chunk.tool_calls[0].name
                row["tool_call_s"] = round(time.monotonic() - t0, 3)
            yield chunk
        row["end_s"] = round(time.monotonic() - t0, 3)


async def _turns(
    local: LocalLLM, assistant: ModuleType, voice_options: dict[str, Any] | None = None
) -> tuple[list[float], str]:
    """The assistant's pipeline, text in; each turn's TurnMetrics.total_ms."""
    monkey = console.ANSWER_WAIT
    console.ANSWER_WAIT = 120.0  # a loaded box: never cut a slow turn short
    metrics: list[float] = []

    def on_pipeline(call: Any, pipeline: VoicePipeline) -> None:
        pipeline.on_event(
            lambda e: (
                metrics.append(e.total_ms)
                if isinstance(e, TurnMetrics) and e.total_ms is not None
                else None
            )
        )

    app = assistant.build_assistant(
        agent=local,
        write=lambda line: None,
        greeting=None,
        on_pipeline=on_pipeline,
        voice_options=voice_options,
        app_name=f"bench-llm-{uuid.uuid4().hex[:6]}",
        instance_id="bench",
        spool_dir=f"/tmp/voxtra-bench-llm-{os.getpid()}",
        ari_url="http://asterisk.invalid:8088",
    )

    async def lines():  # type: ignore[no-untyped-def]
        for n, q in enumerate(QUESTIONS):
            # The console sends the next line once the app is quiet for 0.3 s; a tool
            # turn is quiet between its preamble and its answer: wait for the turn.
            deadline = time.monotonic() + 120.0
            while len(metrics) < n and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            yield q
        deadline = time.monotonic() + 120.0  # the last turn too, before the hang-up
        while len(metrics) < len(QUESTIONS) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    out = io.StringIO()
    try:
        await console.run_console(app, extension="100", lines=lines(), out=out)
    finally:
        console.ANSWER_WAIT = monkey
    return metrics, out.getvalue()


async def run(
    threads: int,
    *,
    preamble: bool = True,
    server_args: tuple[str, ...] = (),
    turns_only: bool = False,
    voice_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    assistant = _load_assistant()
    tools = [tool_spec(t).spec for t in assistant.TOOLS]
    local = LocalLLM(
        threads=threads,
        tool_preamble=assistant.TOOL_PREAMBLES if preamble else None,
        server_args=server_args,
    )
    local.prepare()
    load0 = os.getloadavg()[0]
    await local.start(system_prompt=assistant.SYSTEM_PROMPT, tools=tools)
    server = local.server
    pid = server.pid()
    assert pid is not None
    fresh_s: list[float] = []
    cached_s: list[float] = []
    rates: list[float] = []
    per_cpu: list[float] = []
    try:
        url = f"{server.url}/v1/chat/completions"
        question = [ChatMessage("system", assistant.SYSTEM_PROMPT), ChatMessage("user", "")]
        for q in () if turns_only else QUESTIONS[:3]:
            question[1] = ChatMessage("user", q)
            body = local.llm.json_request(question, tools)
            # Fresh: a nonce at the very start, so no cached prefix applies.
            cold = json.loads(json.dumps(body))
            cold["messages"][0]["content"] = (
                f"[{uuid.uuid4().hex}] " + cold["messages"][0]["content"]
            )
            first, _ = await asyncio.to_thread(_post, url, cold)
            fresh_s.append(first)
            # Cached: the warm head again (the fresh request evicted it: warm it back).
            await local.llm.warm_up(assistant.SYSTEM_PROMPT, tools)
            cpu0 = _cpu_seconds(pid)
            first, timings = await asyncio.to_thread(_post, url, body)
            cpu = _cpu_seconds(pid) - cpu0
            cached_s.append(first)
            if timings.get("predicted_per_second"):
                rates.append(float(timings["predicted_per_second"]))
                if cpu > 0:
                    per_cpu.append(int(timings.get("predicted_n", 0)) / cpu)
        if not turns_only:
            await local.llm.warm_up(assistant.SYSTEM_PROMPT, tools)
        log_at = server.log_file.stat().st_size
        timed = _Timed(local)
        cpu0 = _cpu_seconds(pid)
        wall0 = time.monotonic()
        turns, transcript = await _turns(local, assistant, voice_options)
        turn_cpu = _cpu_seconds(pid) - cpu0
        turn_wall = time.monotonic() - wall0
    finally:
        await local.aclose()
    with server.log_file.open(errors="replace") as log:
        log.seek(log_at)
        tasks = server_requests(log.read())
    for row, task in zip(timed.rows, [tasks[k] for k in sorted(tasks)], strict=False):
        row.update(task)
    ordered = sorted(turns)
    figures: dict[str, Any] = {
        "threads": threads,
        "load_s": server.load_seconds,
        "warm_up_s": local.warm_seconds,
        "warm_up_source": local.warm_source,
        "preamble": preamble,
        "server_args": list(server_args),
        "voice_options": voice_options or {},
        "first_token_fresh_s": statistics.median(fresh_s) if fresh_s else None,
        "first_token_cached_s": statistics.median(cached_s) if cached_s else None,
        "cache_speedup": statistics.median(fresh_s) / max(statistics.median(cached_s), 1e-6)
        if fresh_s
        else None,
        "tokens_per_s": statistics.median(rates) if rates else None,
        "tokens_per_cpu_s": statistics.median(per_cpu) if per_cpu else None,
        "turns": len(ordered),
        "turn_p50_ms": statistics.median(ordered) if ordered else None,
        "turn_p95_ms": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        if ordered
        else None,
        "turn_ms": [round(t) for t in turns],
        "server_cpu_s_during_turns": turn_cpu,
        "wall_s_during_turns": turn_wall,
        "requests": timed.rows,
        "load_average_start": load0,
        "load_average": os.getloadavg()[0],
        "transcript": transcript,
    }
    return figures


def _met(name: str, value: float | None) -> bool | None:
    """Whether ``value`` meets its target; None without a figure or a target."""
    if name not in TARGETS or value is None:
        return None
    op, target = TARGETS[name]
    return value <= target if op == "<=" else value >= target


def _verdict(name: str, value: float | None) -> str:
    ok = _met(name, value)
    if ok is None:
        return ""
    op, target = TARGETS[name]
    return f"(target {op} {target:g}: {'MET' if ok else 'NOT MET'})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="llama-server -t/-tb (1)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--no-preamble", action="store_true", help="no tool preamble (what it saves)"
    )
    parser.add_argument(
        "--server-arg", action="append", default=[], help="an extra llama-server argument"
    )
    parser.add_argument(
        "--turns-only", action="store_true", help="skip the fresh/cached first-token runs"
    )
    parser.add_argument(
        "--min-comma-chars", type=int, help="the pipeline's min_comma_chars (a comma ends a piece)"
    )
    args = parser.parse_args(argv)
    options = {} if args.min_comma_chars is None else {"min_comma_chars": args.min_comma_chars}
    figures = asyncio.run(
        run(
            args.threads,
            preamble=not args.no_preamble,
            server_args=tuple(args.server_arg),
            turns_only=args.turns_only,
            voice_options=options,
        )
    )
    if args.json:
        out = {k: v for k, v in figures.items() if k != "transcript"}
        # The targets and verdicts too, so a run's JSON says what it met on its own.
        out["targets"] = {
            name: {"op": op, "target": target, "met": _met(name, figures.get(name))}
            for name, (op, target) in TARGETS.items()
        }
        print(json.dumps(out, indent=2))
        return 0
    print(figures["transcript"])
    print(
        f"local LLM, {args.threads} thread(s), load average {figures['load_average']:.1f}, "
        f"prompt head {figures['warm_up_source']}:"
    )
    for name, unit in (
        ("load_s", "s"),
        ("warm_up_s", "s"),
        ("first_token_fresh_s", "s"),
        ("first_token_cached_s", "s"),
        ("cache_speedup", "x"),
        ("tokens_per_s", "tokens/s"),
        ("tokens_per_cpu_s", "tokens per server CPU-second"),
        ("turn_p50_ms", "ms"),
        ("turn_p95_ms", "ms"),
    ):
        value = figures[name]
        shown = "-" if value is None else f"{value:.2f}"
        print(f"  {name:22} {shown:>9} {unit:30} {_verdict(name, value)}")
    print(f"  turns (ms): {figures['turn_ms']}")
    for row in figures["requests"]:
        print(f"  request: {row}")
    print(
        f"  server CPU during the turns: {figures['server_cpu_s_during_turns']:.1f} s "
        f"of {figures['wall_s_during_turns']:.1f} s wall"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
