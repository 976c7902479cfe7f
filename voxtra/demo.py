"""The demo phone assistant on embedded providers, and ``voxtra demo``: a real call to it.

:func:`build_assistant` is the whole application of ``examples/assistant.py``: offline
speech recognition (pocketsphinx in keyword mode, built from the agent's own example
phrases, since open vocabulary is poor on 8 kHz audio), the rule agent, espeak-ng speech
and WebRTC VAD. Nothing needs an API key or a download.

:func:`run_demo` is the README's first command: it finds an Asterisk (``VOXTRA_ARI_URL``,
else the sandbox), starts the assistant, dials it from a scripted SIP phone that asks
spoken questions, prints the conversation with per-turn latency as it happens, and
reports where the phone's recording of the call is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voxtra.app import VoxtraApp
from voxtra.call import CallSession
from voxtra.errors import CallEnded, VoxtraError
from voxtra.pipeline import (
    AgentResponseEvent,
    BargeInEvent,
    PipelineEvent,
    ProviderErrorEvent,
    TurnMetrics,
    UserTranscriptEvent,
    VoicePipeline,
)
from voxtra.voice import VoiceConfig

__all__ = [
    "DEMO_QUESTIONS",
    "GREETING",
    "ConversationLog",
    "DemoError",
    "assistant_handler",
    "build_assistant",
    "get_weather",
    "run_demo",
    "synthesize_wav",
]

logger = logging.getLogger(__name__)

GREETING = "Hello, this is the Voxtra demo assistant. How can I help you?"
DEMO_QUESTIONS: tuple[tuple[str, str], ...] = (
    ("what are your opening hours", "Monday"),
    ("what is the weather in berlin", "rainy"),
    ("that is all goodbye", "Goodbye"),
)
"""(what the demo caller says, a word the right answer contains)."""

_WEATHER = {
    "london": "cloudy, twelve degrees",
    "paris": "sunny, eighteen degrees",
    "berlin": "rainy, nine degrees",
}


def get_weather(city: str) -> str:
    """Today's weather in a city (canned: the demo runs offline).

    Args:
        city: the city name, e.g. London.
    """
    return _WEATHER.get(city.strip().lower(), "mild, fifteen degrees")


Writer = Callable[[str], None]


class ConversationLog:
    """Turns one call's pipeline events into readable lines: who said what, how fast.

    Latency is the caller's wait: from the end of their speech (as the VAD detected it)
    to the first audio of the answer handed to the transport, with the per-stage split.
    """

    def __init__(self, call_id: str, write: Writer) -> None:
        self.call_id = call_id
        self.write = write
        self.turns: list[TurnMetrics] = []
        self.answers: list[str] = []
        self.heard: list[str] = []
        self.errors: list[ProviderErrorEvent] = []

    def attach(self, pipeline: VoicePipeline) -> None:
        pipeline.on_event(self.on_event)
        if pipeline.greeting:
            self.write(f"agent:  {pipeline.greeting}")

    def on_event(self, event: PipelineEvent) -> None:
        if isinstance(event, UserTranscriptEvent) and event.is_final:
            self.heard.append(event.text)
            self.write(f"caller: {event.text}")
        elif isinstance(event, AgentResponseEvent):
            if event.tool_calls:
                calls = ", ".join(f"{c.name}({c.arguments})" for c in event.tool_calls)
                self.write(f"agent:  [tool] {calls}")
            if event.text:
                self.answers.append(event.text)
                self.write(f"agent:  {event.text}")
        elif isinstance(event, BargeInEvent):
            self.write(
                f"        (interrupted by the caller after {event.played_ms:.0f} ms; "
                f"heard: {event.heard_text!r})"
            )
        elif isinstance(event, ProviderErrorEvent):
            self.errors.append(event)
            self.write(f"        (provider {event.provider} failed: {event.message})")
        elif isinstance(event, TurnMetrics):
            self.turns.append(event)
            self.write(f"        {format_latency(event)}")


def format_latency(m: TurnMetrics) -> str:
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.0f}"

    return (
        f"turn latency {ms(m.total_ms)} ms (end of speech -> first answer audio): "
        f"stt {ms(m.stt_ms)}, agent {ms(m.llm_ms)}, tts {ms(m.tts_ms)}, send {ms(m.send_ms)}"
    )


def build_assistant(
    *,
    on_pipeline: Callable[[CallSession, VoicePipeline], None] | None = None,
    write: Writer | None = None,
    stt_workers: int = 1,
    greeting: str | None = GREETING,
    voice_options: dict[str, Any] | None = None,
    **app_options: Any,
) -> VoxtraApp:
    """The demo assistant: answers every extension and converses on embedded providers.

    ARI settings come from ``app_options`` or, as for any VoxtraApp, ``VOXTRA_*``
    environment variables (``VOXTRA_ARI_URL``, ``VOXTRA_USERNAME``,
    ``VOXTRA_PASSWORD``, ``VOXTRA_APP_NAME``), defaulting to the sandbox. Each call's
    conversation is written line by line to ``write`` (default: this module's logger).
    """
    from voxtra.providers.espeak_tts import EspeakTTS
    from voxtra.providers.pocketsphinx_stt import PocketSphinxSTT
    from voxtra.providers.rules import RulesAgent
    from voxtra.providers.webrtc_vad import WebRtcVAD

    agent = RulesAgent()
    # The keyword grammar only accepts sequences of whole example phrases; the default
    # examples lack "what is the weather in <city>" for most cities, so add ours.
    phrases = [*agent.vocabulary(), *(f"what is the weather in {city}" for city in _WEATHER)]
    stt = PocketSphinxSTT(keywords=phrases, workers=stt_workers)
    out = write or logger.info

    def setup(call: CallSession, pipeline: VoicePipeline) -> None:
        ConversationLog(call.id, lambda line: out(f"[{call.id}] {line}")).attach(pipeline)
        if on_pipeline is not None:
            on_pipeline(call, pipeline)

    voice = VoiceConfig(
        greeting=greeting,
        tools=(get_weather,),
        on_pipeline=setup,
        options=dict(voice_options or {}),
    )
    app = VoxtraApp(
        stt=stt, llm=agent, tts=EspeakTTS(), vad=WebRtcVAD(), voice=voice, **app_options
    )

    @app.on_startup
    async def warm_up() -> None:
        await stt.warm_up()  # decoder processes up before the first caller speaks

    @app.on_shutdown
    async def close() -> None:
        await stt.aclose()

    app.route()(assistant_handler(out))
    return app


def assistant_handler(write: Writer) -> Callable[[CallSession], Awaitable[None]]:
    """The assistant's route handler: answer, then let the voice pipeline converse."""

    async def assistant(call: CallSession) -> None:
        await call.answer()
        write(f"[{call.id}] call from {call.caller_id or 'unknown'} to {call.called_number}")
        reason = await call.converse()
        write(f"[{call.id}] conversation ended: {reason}")

    return assistant


async def synthesize_wav(text: str, path: str | Path, *, rate: int = 8000, wpm: int = 150) -> Path:
    """Speak ``text`` with the in-process espeak-ng into a 16-bit WAV at ``rate`` Hz.

    The demo caller's questions; no espeak-ng program is needed (the pip wheel's
    library does it), and 150 words per minute is what pocketsphinx hears best.
    """
    import soxr

    from voxtra.providers.espeak_tts import EspeakTTS
    from voxtra.testing.audio import write_wav

    pieces: list[bytes] = []
    src_rate = EspeakTTS.sample_rate
    async for chunk in EspeakTTS(voice="en-us", rate=wpm).synthesize(text):
        pieces.append(chunk.data)
        src_rate = chunk.sample_rate
    samples = np.frombuffer(b"".join(pieces), dtype="<i2")
    if src_rate != rate:
        samples = soxr.resample(samples, src_rate, rate)
    return write_wav(path, np.asarray(samples, dtype=np.int16), rate)


# -- voxtra demo -----------------------------------------------------------------------


class DemoError(VoxtraError):
    """The demo could not complete; the message says which step failed."""


@dataclass
class _Watch:
    """What the demo sees of the assistant's side of its call."""

    pipeline: VoicePipeline | None = None
    turns: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_event(self, event: PipelineEvent) -> None:
        if isinstance(event, TurnMetrics):
            self.turns += 1
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
    from voxtra.testing.asterisk import AsteriskSandbox, SandboxUnavailable

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
) -> Path:
    """Place one real call to the assistant; return the caller's recording.

    Raises :class:`DemoError` naming the step that failed. An answer that misses its
    expected word (the offline STT misheard) is only reported, unless ``strict``.
    With an ``app_name`` other than the dialplan's (``voxtra``), Asterisk places the
    call to the phone instead, so the demo never competes with another app for calls.
    """
    from voxtra.testing.sipcaller import SipCaller, SipCallerError

    write = write or _printer()
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
    app = build_assistant(on_pipeline=on_pipeline, write=write, **settings)
    originate = app.app_name != "voxtra"
    try:
        try:
            await app.start()
        except (VoxtraError, OSError) as exc:
            raise DemoError(f"cannot connect to ARI at {app.settings.ari_url}: {exc}") from exc
        recording = work / "caller-heard.wav"
        try:
            async with SipCaller(workdir=work / "phone") as phone:
                if originate:
                    # The dialplan hands SIP calls to its own app name only: with another
                    # one, Asterisk calls the phone instead, into this app.
                    write(f"calling the SIP phone from the app {app.app_name!r}")
                    await phone.listen(record=True)
                    endpoint = f"PJSIP/sipcaller/sip:demo@127.0.0.1:{phone.port}"
                    await app.originate(endpoint, handler=assistant_handler(write))
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
                    await watch.until_turn(turns + 1, 20, f"an answer to {text!r}")
                    answer = pipeline.agent.history[-1].content if pipeline.agent.history else ""
                    if expect.lower() not in answer.lower():
                        problem = f"the assistant misunderstood {text!r}: it answered {answer!r}"
                        if strict:
                            raise DemoError(problem)
                        write(f"(note: {problem}; offline recognition is limited)")
                await call.hangup()
                await call.wait_ended(10)
                if call.recording_path is not None:
                    recording = call.recording_path
        except SipCallerError as exc:
            raise DemoError(f"the SIP call failed: {exc}") from exc
        except CallEnded as exc:
            raise DemoError(f"the call ended early: {exc}") from exc
        write(f"the caller's recording of the call: {recording}")
        return recording
    finally:
        await app.stop()
        if stop_asterisk is not None and not keep_asterisk:
            await asyncio.to_thread(stop_asterisk)
