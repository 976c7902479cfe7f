"""Benchmark: faults under live calls through a real Asterisk, with figures and targets.

* **asterisk-kill**: N echo calls with media and a recording each; Asterisk is killed
  with SIGKILL and started again. Figures: calls held (media and recording running
  at the kill), frames lost by our side before the kill and on a new call after it,
  how the handlers ended, time from Asterisk back to every old session ended and to a
  new call's first echoed frame (target <= 5 s), what is left over (asyncio tasks,
  media sockets, sessions, channels, bridges: target 0) and what became of each
  recording running at the kill.
* **storage-outage**: S3 (SeaweedFS) is down for the whole of N concurrent recorded
  calls, then comes back. Figures: recordings delivered (target N of N, each exactly
  once, each in the bucket), time from storage back to the last delivery.
* **stall ms**, for both: the event loop's longest stall while the fault ran
  (target <= 20 ms, the bound the issue sets for a live call under attack).
* **other fault tests**: every other ``test_*.py`` in ``tests/integration/faults``
  (provider hang, handler faults) runs under pytest; each test's outcome and time are
  printed, with the lines the test printed (their figures: the calls left intact, echo
  gaps, the stall, how long a hung provider held the turn).

The scenarios live in :mod:`voxtra.testing.faults` (the tests assert on the same
reports). This script starts the sandbox Asterisk itself (``AsteriskSandbox().up()``,
``VOXTRA_CACHE_DIR`` picks which one) and kills it: it refuses when other Stasis apps
are registered on it, i.e. when somebody else is using that Asterisk.

    .venv/bin/python bench/faults.py [--calls 20] [--down-for 0] [--transport rtp]
        [--storage-retries N] [--only kill,storage,others]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from xml.etree import ElementTree

from voxtra.testing.asterisk import AsteriskSandbox
from voxtra.testing.faults import KillReport, OutageReport, asterisk_kill, storage_outage

ROOT = Path(__file__).resolve().parents[1]
FAULT_TESTS = ROOT / "tests" / "integration" / "faults"
OWN_TESTS = {"test_asterisk_kill.py", "test_storage_outage.py"}
STALL_TARGET_MS = 20.0
NEW_CALL_TARGET_S = 5.0


def _mark(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def print_kill(r: KillReport) -> bool:
    leaked_sockets = {
        kind: r.sockets_after.get(kind, 0) - r.sockets_before.get(kind, 0)
        for kind in ("udp", "tcp_other", "tcp_closing")
    }
    left = (
        len(r.tasks_leaked)
        + sum(max(0, n) for n in leaked_sockets.values())
        + r.sessions_left
        + len(r.channels_left)
        + len(r.bridges_left)
    )
    recordings: dict[str, int] = {}
    for state in r.recordings.values():
        key = state if state == "in asterisk" else state.split(":")[0].split(" ")[0]
        recordings[key] = recordings.get(key, 0) + 1
    new_call = r.new_call_after_back_s
    handlers_ok = r.outcomes.get("CallEnded", 0) >= r.calls and len(r.outcomes) == 1
    print(f"asterisk-kill  calls={r.calls}  Asterisk down {r.down_s:.1f} s (kill to ARI up)")
    print(
        f"  calls held {r.attached}/{r.calls}  frames in {r.frames_in_before}  "
        f"lost before kill {r.frames_lost_before}  lost on the new call {r.new_call_frames_lost}"
    )
    kinds: dict[str, int] = {}
    for outcome, count in r.outcomes.items():
        kind = outcome.split("(")[0]
        kinds[kind] = kinds.get(kind, 0) + count
    print(f"  handlers ended: {kinds}  {_mark(handlers_ok)} (all CallEnded)")
    ended = "never" if r.ended_after_back_s is None else f"{r.ended_after_back_s:.2f} s"
    print(f"  old sessions all ended {ended} after Asterisk was back")
    shown = "none" if new_call is None else f"{new_call:.2f} s"
    print(
        f"  new call echoed {shown} after Asterisk was back (attempt {r.new_call_attempts})  "
        f"target <= {NEW_CALL_TARGET_S:.0f} s {_mark(new_call is not None and new_call <= 5)}"
        + (f"  ({r.new_call_error})" if r.new_call_error else "")
    )
    print(
        f"  left over: tasks {len(r.tasks_leaked)} sockets {leaked_sockets} "
        f"sessions {r.sessions_left} channels {len(r.channels_left)} "
        f"bridges {len(r.bridges_left)}  target 0 {_mark(left == 0)}"
    )
    print(
        f"  ARI keep-alive connections {r.sockets_before.get('tcp_ari')} -> "
        f"{r.sockets_after.get('tcp_ari')} (a pool of at most 32, plus the events socket)"
    )
    print(
        f"  recordings running at the kill: {recordings}  delivered twice {len(r.delivered_twice)}"
    )
    print(
        f"  stall {r.stall_ms:.1f} ms  target <= {STALL_TARGET_MS:.0f} ms "
        f"{_mark(r.stall_ms <= STALL_TARGET_MS)}"
    )
    for note in r.notes:
        print("  note:", note)
    return handlers_ok and new_call is not None and new_call <= 5 and left == 0


def print_outage(r: OutageReport) -> bool:
    ok = (
        r.delivered == r.calls
        and not r.delivered_twice
        and r.in_bucket == r.calls
        and r.still_spooled == 0
    )
    back = "never" if r.back_to_delivered_s is None else f"{r.back_to_delivered_s:.1f} s"
    print(f"storage-outage  calls={r.calls}  recorded {r.recorded} while storage was down")
    print(
        f"  recordings delivered {r.delivered}/{r.calls}, twice {len(r.delivered_twice)}, "
        f"in the bucket {r.in_bucket}, still spooled {r.still_spooled}  "
        f"target {r.calls}/{r.calls} exactly once {_mark(ok)}"
    )
    print(
        f"  past their fast retries while S3 was down {r.past_fast_retries} (retried on "
        f"the slow backoff, no restart); left exhausted {r.exhausted}; "
        f"failed upload attempts during the outage {r.failed_attempts}; "
        f"storage back -> last delivered {back}"
    )
    print(
        f"  stall {r.stall_ms:.1f} ms  target <= {STALL_TARGET_MS:.0f} ms "
        f"{_mark(r.stall_ms <= STALL_TARGET_MS)}"
    )
    for error in r.errors[:5]:
        print("  error:", error)
    return ok


async def run_kill(sandbox: AsteriskSandbox, calls: int, down_for: float, transport: str) -> bool:
    codec = {"rtp": "ulaw", "websocket": "ulaw", "audiosocket": "slin"}[transport]
    print(f"(media: {transport} {codec})")
    with tempfile.TemporaryDirectory(prefix="voxtra-faults-") as work:
        report = await asterisk_kill(
            sandbox,
            calls=calls,
            workdir=work,
            down_for=down_for,
            media={"transport": transport, "codec": codec},
        )
    return print_kill(report)


async def run_storage(sandbox: AsteriskSandbox, calls: int, retries: int | None) -> bool:
    from aiobotocore.session import get_session

    from voxtra.recording import RecordingMetadata, S3Sink
    from voxtra.testing.storage import SeaweedS3Server, StorageServerUnavailable

    try:
        server = SeaweedS3Server()
    except StorageServerUnavailable as exc:
        print(f"storage-outage  skipped: {exc}")
        return False
    bucket = "faults-bench"
    with tempfile.TemporaryDirectory(prefix="voxtra-faults-") as work, server:
        async with get_session().create_client(
            "s3",
            endpoint_url=server.endpoint_url,
            region_name=server.region,
            aws_access_key_id=server.access_key,
            aws_secret_access_key=server.secret_key,
        ) as s3:
            await s3.create_bucket(Bucket=bucket)
            sink = S3Sink(
                bucket,
                prefix="outage",
                endpoint_url=server.endpoint_url,
                region=server.region,
                access_key=server.access_key,
                secret_key=server.secret_key,
            )

            async def in_bucket(name: str, meta: RecordingMetadata) -> bool:
                import hashlib

                key = str(meta.location).removeprefix(f"s3://{bucket}/")
                response = await s3.get_object(Bucket=bucket, Key=key)
                async with response["Body"] as body:
                    data = await body.read()
                return hashlib.sha256(data).hexdigest() == meta.sha256

            report = await storage_outage(
                sandbox,
                server,
                sink,
                calls=calls,
                workdir=work,
                check_object=in_bucket,
                retries=retries,
                # Past their fast retries they wait on the slow backoff (<= 60 s apart).
                deliver_timeout=90.0,
            )
    return print_outage(report)


def run_others() -> bool:
    ok = True
    tests = sorted(p for p in FAULT_TESTS.glob("test_*.py") if p.name not in OWN_TESTS)
    if not tests:
        print("other fault tests: none found")
        return True
    env = {**os.environ, "VOXTRA_KEEP_ASTERISK": "1"}
    for path in tests:
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="voxtra-faults-") as work:
            # The figures are what each test prints; the JUnit report keeps them per
            # test (under -s they came out between pytest's progress dots, unlabelled).
            junit = Path(work) / "junit.xml"
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pytest",
                    str(path),
                    "-m",
                    "faults",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    f"--junitxml={junit}",
                    "-o",
                    "junit_logging=system-out",
                ],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            cases = _junit_cases(junit) if junit.exists() else []
        took = time.monotonic() - started
        lines = result.stdout.splitlines()
        summary = next((line for line in reversed(lines) if " in " in line), "")
        passed = result.returncode == 0
        ok = ok and passed
        print(f"{path.stem}: {'passed' if passed else 'FAILED'} in {took:.0f} s  ({summary})")
        for name, outcome, seconds, printed in cases:
            print(f"  {name}: {outcome} in {seconds:.1f} s")
            for line in printed:
                print(f"    {line}")
    return ok


def _junit_cases(report: Path) -> list[tuple[str, str, float, list[str]]]:
    """(test name, outcome, seconds, the non-empty lines it printed) per test case."""
    cases = []
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        outcome = "passed"
        for tag in ("failure", "error", "skipped"):
            if case.find(tag) is not None:
                outcome = {"failure": "FAILED", "error": "ERROR", "skipped": "skipped"}[tag]
        out = case.find("system-out")
        text = out.text if out is not None and out.text else ""
        # pytest heads the text with a "---- Captured Out ----" rule
        printed = [
            line.strip()
            for line in text.splitlines()
            if line.strip() and not (line.startswith("---") and line.endswith("---"))
        ]
        cases.append((case.get("name", "?"), outcome, float(case.get("time", "0")), printed))
    return cases


async def main_async(args: argparse.Namespace) -> int:
    only = set(args.only.split(","))
    # Per-call and per-recording log lines (retries, a killed Asterisk's WAV header,
    # failed teardowns) would bury the figures; the scenarios report those outcomes.
    logging.getLogger("voxtra").setLevel(logging.CRITICAL)
    sandbox = AsteriskSandbox()
    await asyncio.to_thread(sandbox.up)
    results: list[bool] = []
    if "kill" in only:
        results.append(await run_kill(sandbox, args.calls, args.down_for, args.transport))
    if "storage" in only:
        results.append(await run_storage(sandbox, args.calls, args.storage_retries))
    if "others" in only:
        results.append(await asyncio.to_thread(run_others))
    print(f"faults: {sum(results)} of {len(results)} scenario groups met their targets")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument(
        "--down-for", type=float, default=0.0, help="seconds Asterisk stays dead before restart"
    )
    parser.add_argument(
        "--storage-retries",
        type=int,
        default=None,
        help="fast delivery retries (default: the app's); 0 plays an outage longer than "
        "them (the slow retries then deliver within 60 s of S3 being back)",
    )
    parser.add_argument("--transport", default="rtp", choices=["rtp", "websocket", "audiosocket"])
    parser.add_argument("--only", default="kill,storage,others")
    raise SystemExit(asyncio.run(main_async(parser.parse_args())))


if __name__ == "__main__":
    main()
