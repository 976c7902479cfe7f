"""A phone assistant on embedded providers: no API keys, no downloads.

Every call, to any extension, is answered by a voice agent that hears the caller
(WebRTC VAD cuts the utterances, Whisper tiny.en transcribes each one in a worker
thread: open vocabulary, so callers may ask in their own words), decides what to say
(the rule agent: opening hours, weather through a ``get_weather`` tool, a long story
you can interrupt, goodbye; anything else gets "sorry, could you say it again") and
speaks (espeak-ng). ``build_assistant(stt="pocketsphinx")`` hears with pocketsphinx in
keyword mode instead (built from the agent's own example phrases: only those are
understood, since its open vocabulary is poor on 8 kHz audio); it is also the fallback
when the ``whisper`` extra is not installed. The conversation is logged: who said what, and each
turn's latency from the end of the caller's speech to the first audio of the answer.

Run it against the sandbox (``python -m voxtra.testing.asterisk up``) or any Asterisk
whose ARI settings are in the environment::

    VOXTRA_ARI_URL=http://127.0.0.1:8088 VOXTRA_USERNAME=voxtra VOXTRA_PASSWORD=voxtra \\
        python examples/assistant.py        # or: voxtra run examples/assistant.py:build_assistant

then call any extension, e.g. ``python -m voxtra.testing.sipcaller dial 100 ...`` or a
softphone. ``examples/demo.py`` (the README's ``./scripts/demo``, also ``voxtra demo``)
does all of this, including the call, in one command.

:func:`build_assistant` is the whole application. It is a factory rather than a
module-level ``app`` so that the demo can build the assistant with its own options.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from voxtra import CallSession, VoiceConfig, VoxtraApp
from voxtra.errors import ConfigError
from voxtra.pipeline import (
    AgentResponseEvent,
    BargeInEvent,
    PipelineEvent,
    ProviderErrorEvent,
    TurnMetrics,
    UserTranscriptEvent,
    VoicePipeline,
)
from voxtra.providers.espeak_tts import EspeakTTS
from voxtra.providers.pocketsphinx_stt import PocketSphinxSTT
from voxtra.providers.rules import RulesAgent
from voxtra.providers.webrtc_vad import WebRtcVAD
from voxtra.providers.whisper_stt import WhisperSTT

logger = logging.getLogger(__name__)

GREETING = "Hello, this is the Voxtra demo assistant. How can I help you?"

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
    stt: Literal["whisper", "pocketsphinx"] = "whisper",
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
    ``stt`` chooses the recogniser (Whisper, open vocabulary, by default), with
    ``stt_workers`` decoders (threads for Whisper, processes for pocketsphinx).
    """
    agent = RulesAgent()
    out = write or logger.info
    recogniser = _recogniser(stt, agent, stt_workers, out)

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
        stt=recogniser, llm=agent, tts=EspeakTTS(), vad=WebRtcVAD(), voice=voice, **app_options
    )

    @app.on_startup
    async def warm_up() -> None:
        # The model (Whisper) or the decoder processes (pocketsphinx) are loaded before
        # the first caller speaks, not during their first question.
        await recogniser.warm_up()

    @app.on_shutdown
    async def close() -> None:
        await recogniser.aclose()

    app.route()(assistant_handler(out))
    return app


def _recogniser(
    kind: str, agent: RulesAgent, workers: int, write: Writer
) -> WhisperSTT | PocketSphinxSTT:
    if kind == "whisper":
        try:
            # One decoder thread per worker, one core each: on this 2-core machine a
            # phone utterance decodes in ~0.28 s (tiny.en, int8; 2 cores per decode were
            # no faster), and the event loop keeps running (CTranslate2 drops the GIL).
            return WhisperSTT(workers=workers)
        except ConfigError as exc:
            write(f"(Whisper is not available, hearing with pocketsphinx keywords: {exc})")
    elif kind != "pocketsphinx":
        raise ConfigError(f"build_assistant: stt must be 'whisper' or 'pocketsphinx', not {kind!r}")
    # The keyword grammar only accepts sequences of whole example phrases; the default
    # examples lack "what is the weather in <city>" for most cities, so add ours.
    phrases = [*agent.vocabulary(), *(f"what is the weather in {city}" for city in _WEATHER)]
    return PocketSphinxSTT(keywords=phrases, workers=workers)


def assistant_handler(write: Writer) -> Callable[[CallSession], Awaitable[None]]:
    """The assistant's route handler: answer, then let the voice pipeline converse."""

    async def assistant(call: CallSession) -> None:
        await call.answer()
        write(f"[{call.id}] call from {call.caller_id or 'unknown'} to {call.called_number}")
        reason = await call.converse()
        write(f"[{call.id}] conversation ended: {reason}")

    return assistant


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # The ARI connection comes from VOXTRA_ARI_URL / VOXTRA_USERNAME / VOXTRA_PASSWORD /
    # VOXTRA_APP_NAME, defaulting to the sandbox (http://127.0.0.1:8088, voxtra/voxtra).
    build_assistant().run()
