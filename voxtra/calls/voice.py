"""Speech for a call: the app's providers, one VoicePipeline per call.

``VoiceConfig`` holds the (shareable) provider objects and conversation options; each
call gets its own :class:`~voxtra.pipeline.VoicePipeline` (its own agent history, VAD
session and STT stream), attached to the call's media for the call's lifetime.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from voxtra.calls.context import CallContext
from voxtra.calls.control import CallControl
from voxtra.errors import CallEnded
from voxtra.media.transport import MediaTransport
from voxtra.pipeline import VoicePipeline
from voxtra.pipeline.engine import ClearsEventHandlers, ConversationEngine
from voxtra.pipeline.pipeline import DEFAULT_FALLBACK, EndReason
from voxtra.pipeline.turn import END_SILENCE_MS, MIN_SPEECH_MS
from voxtra.providers.base import LLM, STT, TTS, VAD

__all__ = ["CallVoice", "VoiceConfig"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VoiceConfig:
    """Providers and conversation options; ``replace()`` it per route or call."""

    stt: STT | None = None
    llm: LLM | None = None
    tts: TTS | None = None
    vad: VAD | None = None
    system_prompt: str | None = None
    tools: tuple[Callable[..., Any], ...] = ()
    greeting: str | None = None
    silence_timeout: float | None = None
    silence_prompt: str | None = None
    max_duration: float | None = None
    min_speech_ms: float = MIN_SPEECH_MS
    """Caller speech needed before it counts (and barges in); see
    :data:`voxtra.pipeline.turn.MIN_SPEECH_MS`."""
    end_silence_ms: float = END_SILENCE_MS
    stt_timeout: float | None = 5.0
    llm_timeout: float | None = 8.0
    tts_timeout: float | None = 5.0
    """Deadlines (s) for a provider's answer: the final transcript after the caller
    stops, each LLM token, each TTS chunk (a speech-to-speech engine: ``llm_timeout``
    for its answer's first audio, ``tts_timeout`` for ``fallback_tts``). A hung provider
    then ends the turn with a ``ProviderErrorEvent(timed_out=True)`` and
    ``fallback_text``. None: no deadline."""
    fallback_text: str | None = DEFAULT_FALLBACK
    fallback_tts: TTS | None = None
    """Speaks ``fallback_text`` when ``tts`` is the provider that hung or failed."""
    options: dict[str, Any] = field(default_factory=dict)
    """Further keyword arguments for :class:`VoicePipeline`."""
    on_pipeline: Callable[[Any, VoicePipeline], None] | None = None
    """Called with each call's session (a :class:`~voxtra.CallSession`) and its new
    pipeline, before the pipeline runs: one place to subscribe every call's pipeline
    events (``pipeline.on_event``) for logs and metrics. (A handler can also reach its
    own call's pipeline as ``call.pipeline``.)"""
    engine: Callable[[VoiceConfig], ConversationEngine] | None = None
    """Builds each call's conversation engine from this config (its system prompt,
    tools, greeting...) instead of the STT -> LLM -> TTS pipeline: how a
    speech-to-speech model is plugged in. The providers above are then not needed."""

    @property
    def configured(self) -> bool:
        return self.engine is not None or any(p is not None for p in (self.stt, self.llm, self.tts))

    def with_tools(self, tools: Iterable[Callable[..., Any]]) -> VoiceConfig:
        return replace(self, tools=(*self.tools, *tools))

    def build(self) -> ConversationEngine:
        """A fresh engine for one call (no state shared with other calls): ``engine``'s,
        else the STT -> LLM -> TTS pipeline."""
        if self.engine is not None:
            return self.engine(self)
        return VoicePipeline(
            self.stt,
            self.llm,
            self.tts,
            self.vad,
            system_prompt=self.system_prompt,
            tools=self.tools,
            greeting=self.greeting,
            silence_timeout=self.silence_timeout,
            silence_prompt=self.silence_prompt,
            max_duration=self.max_duration,
            min_speech_ms=self.min_speech_ms,
            end_silence_ms=self.end_silence_ms,
            **{
                "stt_timeout": self.stt_timeout,
                "llm_timeout": self.llm_timeout,
                "tts_timeout": self.tts_timeout,
                "fallback_text": self.fallback_text,
                "fallback_tts": self.fallback_tts,
                **self.options,  # (options set before these fields existed still win)
            },
        )


class CallVoice:
    """A call's conversation engine, attached to its media by a task the call owns.

    Typed against :class:`~voxtra.pipeline.ConversationEngine`: the STT -> LLM -> TTS
    :class:`~voxtra.pipeline.VoicePipeline` is one engine, a speech-to-speech model
    wrapped in the same protocol is another, and nothing here changes between them.
    """

    def __init__(self, context: CallContext, control: CallControl, config: VoiceConfig) -> None:
        self.context = context
        self.control = control
        """The call's backend: its media transport is what the engine hears and feeds."""
        self.config = config
        self.engine: ConversationEngine = config.build()
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._failed: BaseException | None = None
        self._task: asyncio.Task[Any] | None = None
        self._cleanup_added = False
        # Added now, so it runs after every clean-up added later, the voice's own (at
        # attach) among them: the engine has detached by then, and no event comes.
        context.add_cleanup("voice event handlers", self._clear_event_handlers)

    async def attach(self) -> ConversationEngine:
        """Attach the listening side (VAD, STT, barge-in) to the call's media."""
        if self._task is None:
            media = await self.control.media()
            if not self._cleanup_added:
                # Added after the media's: torn down before it (reverse order).
                self._cleanup_added = True
                self.context.add_cleanup("voice", self.close)
            self._task = self.context.spawn(self._hold(media), name=f"voice-{self.context.id}")
        ready = asyncio.ensure_future(self._ready.wait())
        try:
            await asyncio.wait({ready, self._task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if self._failed is not None:
            raise self._failed
        if not self._ready.is_set():
            raise CallEnded(self.context.id)
        return self.engine

    async def _hold(self, media: MediaTransport) -> None:
        try:
            async with self.engine.attach(media, call_id=self.context.id):
                self._ready.set()
                # Detach on hangup too: the media transport only ends at teardown, after
                # the handler, so a listen() would otherwise wait for the handler's
                # cancellation instead of raising CallEnded at once.
                await _first(self._stop.wait(), self.context.wait_ended())
        except Exception as exc:
            self._failed = exc
            logger.exception("call %s: voice pipeline failed", self.context.id)

    async def converse(self) -> EndReason:
        """Run the autonomous conversation until the call or the pipeline ends it."""
        media = await self.control.media()
        await self.detach()  # run() attaches by itself; the agent's history is kept
        run = asyncio.ensure_future(self.engine.run(media, call_id=self.context.id))
        ended = asyncio.ensure_future(self.context.wait_ended())
        try:
            await asyncio.wait({run, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
            if not run.done():  # hung up: the pipeline would only notice at teardown
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await run
        if run.cancelled():
            return EndReason.HANGUP
        reason = run.result()
        return reason if isinstance(reason, EndReason) else EndReason.HANGUP

    async def detach(self) -> None:
        if self._task is not None:
            self._stop.set()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 2.0)
            self._task = None
            self._ready.clear()
            self._stop.clear()

    async def close(self) -> None:
        await self.detach()

    async def _clear_event_handlers(self) -> None:
        """The call is over: let go of the handlers subscribed to the engine's events.

        Such a handler usually holds the call (``VoiceConfig.on_pipeline``'s closure,
        the tracer's, the recorder's), which holds this voice and its engine: kept, a
        reference cycle per call, freed only by the cyclic collector
        (tests/unit/test_call_garbage.py). The engine itself stays, for its history.
        """
        if isinstance(self.engine, ClearsEventHandlers):
            self.engine.clear_event_handlers()


async def _first(*waits: Awaitable[Any]) -> None:
    """Wait until one of ``waits`` is done; cancel the others (and them all if cancelled)."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
