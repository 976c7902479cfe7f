"""``voxtra console``: talk to an app's handlers from a terminal, with no PBX at all.

The app runs unchanged on :class:`~voxtra.testing.FakeAsterisk`; one call comes in to
the extension asked for. What you type is what the caller says: each line becomes a
stretch of caller speech on the call's media (so the app's VAD and turn-taking see a
turn) and that line is its transcript. What the agent says is printed (its TTS is
replaced by one that prints), with the turn's latency split when the app runs a
conversation. The app's LLM, tools and handler logic are the real ones.

Commands: ``/dtmf 12#`` presses keys, ``/hangup`` hangs up, an empty line or
end of input ends the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any, TextIO

from voxtra.app import VoxtraApp
from voxtra.media.frames import AudioChunk
from voxtra.pipeline.events import PipelineEvent, TurnMetrics
from voxtra.pipeline.io import MonotonicClock
from voxtra.pipeline.pipeline import VoicePipeline
from voxtra.testing.doubles import EnergyVAD, ScriptedSTT, ScriptedTTS
from voxtra.testing.fake_asterisk import FakeAsterisk, FakeAsteriskError, FakeCall

__all__ = ["ConsoleTTS", "run_console"]

SPEECH = b"\x80\x00" * 2000
"""Half a second of loud mu-law: the caller speaking one typed line."""
ANSWER_WAIT = 10.0
"""Seconds a typed line waits for the agent's answer before the next line is spoken."""
SETTLE = 0.3
"""Seconds of nothing new (no playback, no speech) that make the app count as waiting."""


class ConsoleTTS(ScriptedTTS):
    """Prints what the agent says, and plays a quiet stand-in for its audio (about as
    long as speech would be, so barge-in still has something to cut)."""

    name = "console-tts"

    def __init__(self, clock: MonotonicClock, say: Callable[[str], None]) -> None:
        super().__init__(clock, ms_per_char=20.0, first_byte=0.0)
        self.say = say
        self.quiet_at = 0.0
        """Clock time when the agent's last words have played."""

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        self.say(f"agent: {text}")
        start = max(self.clock.now(), self.quiet_at)
        self.quiet_at = start + len(text) * self.ms_per_char / 1000.0
        async for chunk in super().synthesize(text):
            yield chunk


async def _stdin_lines() -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        yield line.rstrip("\n")


async def run_console(
    app: VoxtraApp,
    *,
    extension: str = "1000",
    caller: str = "console",
    lines: AsyncIterator[str] | None = None,
    out: TextIO | None = None,
) -> int:
    """Run ``app`` on FakeAsterisk, place one call to ``extension`` and drive it from
    ``lines`` (default: standard input). Returns 0 once the call ended."""
    output = out or sys.stdout

    def show(text: str) -> None:
        print(text, file=output, flush=True)

    clock = MonotonicClock()
    stt = ScriptedSTT([], clock, delay=0.0)
    previous = app.voice.on_pipeline

    def on_pipeline(call: Any, pipeline: VoicePipeline) -> None:
        if previous is not None:
            previous(call, pipeline)
        pipeline.on_event(lambda event: _turn_line(event, show))

    tts = ConsoleTTS(clock, show)
    app.voice = replace(
        app.voice,
        stt=stt,
        tts=tts,
        vad=EnergyVAD(),
        on_pipeline=on_pipeline,
    )
    fake = FakeAsterisk()
    async with fake.serve(app):
        call = await fake.incoming(extension=extension, caller=caller)
        show(f"[call {call.id} to {extension}: type what the caller says; /dtmf 1, /hangup]")
        watcher = asyncio.ensure_future(_watch(call, show))
        try:
            async for line in lines if lines is not None else _stdin_lines():
                if call.ended:
                    break
                with contextlib.suppress(FakeAsteriskError):
                    await call.wait_answered(timeout=ANSWER_WAIT)
                await _settle(call, tts, clock)
                text = line.strip()
                if not text:
                    break
                if text == "/hangup":
                    await call.hang_up()
                    break
                if text.startswith("/dtmf "):
                    await call.press(text.removeprefix("/dtmf ").strip())
                    continue
                # Spoken once the app listens (its media is up).
                await fake.wait_until(lambda: bool(call.media_ends) or not call.in_app, 10.0)
                if not call.in_app:
                    break
                show(f"caller: {text}")
                stt.finals.append(text)
                answers = len(tts.requests)
                call.send_audio(SPEECH)
                # The turn ends after the app's end-of-speech silence; wait for the answer.
                with contextlib.suppress(FakeAsteriskError):
                    await fake.wait_until(_answered(call, tts, answers), ANSWER_WAIT)
            if call.in_app and not call.ended:
                await _settle(call, tts, clock)  # what the last line started plays out
                if call.in_app and not call.ended:
                    await call.hang_up()
                    await call.wait_ended()
        finally:
            watcher.cancel()
            _report(call, show, *_seen)
    show("[call ended]" if call.ended else "[the call left the app]")
    return 0


def _answered(call: FakeCall, tts: ConsoleTTS, before: int) -> Callable[[], bool]:
    """True once the agent said something new, or the call left the app."""
    return lambda: len(tts.requests) > before or not call.in_app


async def _settle(call: FakeCall, tts: ConsoleTTS, clock: MonotonicClock) -> None:
    """Until the app is quiet: nothing new played or said for a moment (a person waits
    for the prompt before answering), at most ``ANSWER_WAIT`` seconds."""
    deadline = clock.now() + ANSWER_WAIT
    seen = (len(call.played), len(tts.requests))
    quiet_since = clock.now()
    while clock.now() < deadline and call.in_app:
        now_seen = (len(call.played), len(tts.requests))
        if now_seen != seen:
            seen, quiet_since = now_seen, clock.now()
        if clock.now() >= max(quiet_since + SETTLE, tts.quiet_at + SETTLE):
            return
        await asyncio.sleep(0.02)


_seen: list[int] = [0, 0]
"""Playbacks and transfers already printed (the watcher's, then the final report's)."""


async def _watch(call: FakeCall, show: Callable[[str], None]) -> None:
    """Print what the call hears and does as it happens: playbacks, transfers."""
    _seen[:] = [0, 0]
    while True:
        _report(call, show, *_seen)
        await asyncio.sleep(0.02)


def _report(call: FakeCall, show: Callable[[str], None], played: int, transfers: int) -> None:
    for media in call.played[played:]:
        show(f"[plays {media}]")
    _seen[0] = len(call.played)
    if call.transferred_to and not transfers:
        show(f"[transferred to {call.transferred_to}]")
        _seen[1] = 1


def _turn_line(event: PipelineEvent, show: Callable[[str], None]) -> None:
    if isinstance(event, TurnMetrics) and event.total_ms is not None:
        parts = ", ".join(
            f"{name} {value:.0f}"
            for name, value in (("stt", event.stt_ms), ("llm", event.llm_ms), ("tts", event.tts_ms))
            if value is not None
        )
        show(f"  (turn: {event.total_ms:.0f} ms; {parts})")
