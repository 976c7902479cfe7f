"""``./scripts/demo`` (and ``voxtra demo``): a real phone call to the demo assistant.

It finds an Asterisk (``VOXTRA_ARI_URL``, else the sandbox, started if it is not
running), starts the assistant of ``examples/assistant.py``, dials it from a scripted
SIP phone (pjsua2) that asks spoken questions, prints the conversation with per-turn
latency as it happens, and reports where the phone's recording of the call is::

    python examples/demo.py [--rules] [--extension 100] [--workdir DIR] [--keep-asterisk] [--strict]

The assistant thinks with a local LLM (:mod:`voxtra.local`: llama-server and
Qwen2.5-Coder-1.5B, prepared by ``scripts/bootstrap``, started for the call and stopped
after it); ``--rules`` uses the rule agent instead (no model, exact answers).

This is test tooling at work (the sandbox, the SIP caller), which is why it lives here
and not in the ``voxtra`` package: the runtime never imports :mod:`voxtra.testing`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from voxtra import CallEnded, CallSession, VoxtraError
from voxtra.local import LocalLLM
from voxtra.pipeline import PipelineEvent, TurnMetrics, VoicePipeline
from voxtra.testing.asterisk import AsteriskSandbox, SandboxUnavailable
from voxtra.testing.audio import synthesize_wav
from voxtra.testing.modules import import_file
from voxtra.testing.sipcaller import SipCaller, SipCallerError


def _load_assistant() -> ModuleType:
    """``examples/assistant.py``, beside this file (``examples/`` is scripts, not a package)."""
    return import_file(
        Path(__file__).resolve().with_name("assistant.py"), "voxtra_example_assistant"
    )


assistant = _load_assistant()
GREETING: str = assistant.GREETING
Writer = Callable[[str], None]

DEMO_QUESTIONS: tuple[tuple[str, str], ...] = (
    ("what are your opening hours", "Monday"),
    ("what is the weather in berlin", "rainy"),
    ("that is all goodbye", "Goodbye"),
)
"""(what the demo caller says, a word the right answer contains): the rule agent's."""

LOCAL_DEMO_QUESTIONS: tuple[tuple[str, str], ...] = (
    ("what are your opening hours", "nine"),
    ("is it raining in berlin today", "rain"),
    ("can I talk to a person please", ""),
)
"""The local LLM's: in the caller's own words, ending with a hand-off to a person."""


class DemoError(VoxtraError):
    """The demo could not complete; the message says which step failed."""


class _Watch:
    """What the demo sees of the assistant's side of its call."""

    def __init__(self) -> None:
        self.pipeline: VoicePipeline | None = None
        self.turns = 0
        self.latencies: list[float] = []
        """Each answered turn's end of speech -> first answer audio, ms."""
        self.changed = asyncio.Event()

    def on_event(self, event: PipelineEvent) -> None:
        if isinstance(event, TurnMetrics):
            self.turns += 1
            if event.total_ms is not None:
                self.latencies.append(event.total_ms)
        self.changed.set()

    async def until_turn(self, n: int, timeout: float, what: str) -> None:
        await self.until(lambda: self.turns >= n, timeout, what)

    async def until(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(left, 0.05))


def _printer(stream: Any = None) -> Writer:
    start = time.monotonic()

    def write(line: str) -> None:
        print(f"{time.monotonic() - start:6.2f}s  {line}", file=stream or sys.stdout, flush=True)

    return write


async def _asterisk(write: Writer) -> tuple[dict[str, Any], Callable[[], None] | None]:
    """ARI settings for the app; bring the sandbox up unless VOXTRA_ARI_URL says where."""
    if os.environ.get("VOXTRA_ARI_URL"):
        write(f"using the Asterisk at {os.environ['VOXTRA_ARI_URL']} (VOXTRA_ARI_URL)")
        return {}, None
    sandbox = AsteriskSandbox()
    was_running = sandbox.pid() is not None and sandbox.ari_ready()
    settings: dict[str, Any] = {
        "ari_url": sandbox.ari_url,
        "username": sandbox.username,
        "password": sandbox.password,
    }
    if was_running:
        # Not up(): on a running sandbox it reloads the config, which drops the media
        # bridges of calls in progress (someone else's, perhaps).
        write("using the running Asterisk sandbox")
        return settings, None
    write("starting the Asterisk sandbox")
    try:
        await asyncio.to_thread(sandbox.up)
    except SandboxUnavailable as exc:
        raise DemoError(
            f"no Asterisk: set VOXTRA_ARI_URL to an Asterisk with ARI, or run as root on "
            f"Linux for the sandbox ({exc})"
        ) from exc
    return settings, sandbox.down


async def run_demo(
    *,
    extension: str = "100",
    questions: Sequence[tuple[str, str]] = DEMO_QUESTIONS,
    workdir: str | Path | None = None,
    write: Writer | None = None,
    keep_asterisk: bool = False,
    strict: bool = False,
    app_name: str | None = None,
    agent: str = "rules",
) -> Path:
    """Place one real call to the assistant; return the caller's recording.

    Raises :class:`DemoError` naming the step that failed. An answer that misses its
    expected word (the offline STT misheard) is only reported, unless ``strict``.
    With an ``app_name`` other than the dialplan's (``voxtra``), Asterisk places the
    call to the phone instead, so the demo never competes with another app for calls.
    ``agent``: ``"rules"`` or ``"local"`` (the local LLM, with
    :data:`LOCAL_DEMO_QUESTIONS` unless ``questions`` is given; the command line's
    default).
    """
    write = write or _printer()
    local = agent == "local"
    if local and questions is DEMO_QUESTIONS:
        questions = LOCAL_DEMO_QUESTIONS
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="voxtra-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    wavs = [
        await synthesize_wav(text, work / f"question-{i + 1}.wav")
        for i, (text, _) in enumerate(questions)
    ]
    settings, stop_asterisk = await _asterisk(write)
    watch = _Watch()

    def on_pipeline(call: CallSession, pipeline: VoicePipeline) -> None:
        watch.pipeline = pipeline
        pipeline.on_event(watch.on_event)

    if app_name is not None:
        settings["app_name"] = app_name
    brain: str | LocalLLM = agent
    if local:
        brain = LocalLLM(tool_preamble=assistant.TOOL_PREAMBLES)
        try:
            # Cached by scripts/bootstrap; on a fresh machine ~30 s (download, chroot).
            await asyncio.to_thread(brain.prepare, AsteriskSandbox().tarball, write)
        except VoxtraError as exc:
            raise DemoError(f"the local LLM is not available ({exc}); try --rules") from exc
        write("starting the local LLM (llama-server, Qwen2.5-Coder-1.5B)")
    app = assistant.build_assistant(on_pipeline=on_pipeline, write=write, agent=brain, **settings)
    originate = app.app_name != "voxtra"
    try:
        try:
            await app.start()
        except (VoxtraError, OSError) as exc:
            raise DemoError(f"cannot start the assistant ({app.settings.ari_url}): {exc}") from exc
        if isinstance(brain, LocalLLM) and brain.server.load_seconds is not None:
            write(
                f"local LLM ready: model loaded in {brain.server.load_seconds:.1f} s, "
                f"prompt head {brain.warm_source} in {brain.warm_seconds or 0:.1f} s"
            )
        recording = work / "caller-heard.wav"
        try:
            async with SipCaller(workdir=work / "phone") as phone:
                if originate:
                    # The dialplan hands SIP calls to its own app name only: with another
                    # one, Asterisk calls the phone instead, into this app.
                    write(f"calling the SIP phone from the app {app.app_name!r}")
                    await phone.listen(record=True)
                    endpoint = f"PJSIP/sipcaller/sip:demo@127.0.0.1:{phone.port}"
                    await app.originate(endpoint, handler=assistant.assistant_handler(write))
                    call = await phone.next_incoming_call(10)
                    await call.wait_answered(10)
                else:
                    write(f"dialing extension {extension} from a SIP phone")
                    call = await phone.dial(extension, record=recording)
                    await call.wait_answered(10)
                await watch.until(lambda: watch.pipeline is not None, 10, "the assistant")
                pipeline = watch.pipeline
                assert pipeline is not None
                if pipeline.greeting:
                    await watch.until(lambda: pipeline.speaking, 10, "the greeting")
                    await watch.until(lambda: not pipeline.speaking, 20, "the greeting to end")
                for (text, expect), wav in zip(questions, wavs, strict=True):
                    await asyncio.sleep(0.3)
                    write(f"(the caller plays: {text!r})")
                    turns = watch.turns
                    await call.play(wav)
                    await call.wait_play_done(15)
                    # A local LLM's turn on a loaded 2-core box: up to ~10 s measured.
                    await watch.until_turn(turns + 1, 60, f"an answer to {text!r}")
                    answer = pipeline.agent.history[-1].content if pipeline.agent.history else ""
                    if expect.lower() not in answer.lower():
                        problem = f"the assistant misunderstood {text!r}: it answered {answer!r}"
                        if strict:
                            raise DemoError(problem)
                        write(f"(note: {problem}; offline recognition is limited)")
                if local:
                    await asyncio.sleep(2.0)  # the person answers: "hello?"
                await call.hangup()
                await call.wait_ended(10)
                if call.recording_path is not None:
                    recording = call.recording_path
        except SipCallerError as exc:
            raise DemoError(f"the SIP call failed: {exc}") from exc
        except CallEnded as exc:
            raise DemoError(f"the call ended early: {exc}") from exc
        if watch.latencies:
            write(
                f"turn latency p50 {statistics.median(watch.latencies):.0f} ms over "
                f"{len(watch.latencies)} turns (end of speech -> first answer audio; "
                f"max {max(watch.latencies):.0f} ms)"
            )
        write(f"the caller's recording of the call: {recording}")
        return recording
    finally:
        await app.stop()
        if stop_asterisk is not None and not keep_asterisk:
            await asyncio.to_thread(stop_asterisk)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: prints ``voxtra demo: OK`` and returns 0 when the call worked."""
    parser = argparse.ArgumentParser(
        prog="voxtra demo", description="call the embedded demo assistant from a SIP phone"
    )
    parser.add_argument("--extension", default="100", help="extension to dial (default 100)")
    parser.add_argument("--workdir", default=None, help="where WAVs and recordings go")
    parser.add_argument(
        "--keep-asterisk", action="store_true", help="leave a sandbox it started running"
    )
    parser.add_argument(
        "--strict", action="store_true", help="fail when an answer misses its expected word"
    )
    parser.add_argument(
        "--rules",
        action="store_true",
        help="the rule agent instead of the local LLM (no model needed, exact answers)",
    )
    parser.add_argument(
        "--app-name",
        default=None,
        help="Stasis app name; other than the dialplan's 'voxtra', Asterisk calls the phone",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(
            run_demo(
                extension=args.extension,
                workdir=args.workdir,
                keep_asterisk=args.keep_asterisk,
                strict=args.strict,
                app_name=args.app_name,
                agent="rules" if args.rules else "local",
            )
        )
    except DemoError as exc:
        print(f"voxtra demo failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print("voxtra demo: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
