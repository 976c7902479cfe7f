"""The seam between the session API and whatever holds the conversation.

:class:`~voxtra.pipeline.pipeline.VoicePipeline` chains separate STT, LLM and TTS
providers. A speech-to-speech model (OpenAI Realtime: u-law in, u-law out, server-side
VAD, ``response.cancel`` on barge-in) does all three in one service; an engine wrapping
it implements this same protocol, so ``CallSession.say/listen`` and ``VoxtraApp`` drive
either without knowing which. What such an engine must do to fit:

- ``attach(media)``: stream ``media.frames()`` up to the service and the service's
  audio down through ``media.send``; on the service's "speech started" event, call
  ``media.flush()`` and cancel the response (that is its barge-in), and report
  ``played_ms`` of the cut answer so its transcript can be truncated server-side.
- ``say(text)``: ask the service to speak a given text (or synthesise it locally).
- ``listen()``: return the service's input transcription as a final transcript.
- ``events()`` / ``on_event``: emit the same event types (UserTranscriptEvent,
  BargeInEvent, TurnMetrics, ProviderErrorEvent ...).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, runtime_checkable

from voxtra.pipeline.events import PipelineEvent, SayResult, UserTranscriptEvent
from voxtra.pipeline.io import Clock, MediaIO

__all__ = ["ClearsEventHandlers", "ConversationEngine"]


@runtime_checkable
class ConversationEngine(Protocol):
    """Holds one call's spoken conversation; VoicePipeline is the reference engine."""

    def attach(
        self, media: MediaIO, *, clock: Clock | None = None, call_id: str = ""
    ) -> AbstractAsyncContextManager[Any]:
        """Listen to ``media`` for the block's duration, so say/listen work."""

    async def run(self, media: MediaIO, *, clock: Clock | None = None, call_id: str = "") -> Any:
        """Converse autonomously until the call ends; return why it ended."""

    async def say(self, text: str, *, interruptible: bool = True) -> SayResult:
        """Speak; return when played or interrupted. Needs ``attach``."""

    async def listen(self, timeout: float | None = None) -> UserTranscriptEvent | None:
        """Next final transcript, None on timeout, CallEnded on hangup. Needs ``attach``."""

    async def interrupt(self) -> None:
        """Stop the agent's current speech now."""

    def events(self, maxlen: int = 256) -> AsyncIterator[PipelineEvent]:
        """Events until the engine detaches."""

    def on_event(
        self, callback: Callable[[PipelineEvent], None]
    ) -> Callable[[PipelineEvent], None]:
        """Register a quick, non-blocking callback for every event."""


@runtime_checkable
class ClearsEventHandlers(Protocol):
    """An engine that can let go of the callbacks ``on_event`` registered.

    The call does so once it is over (``voxtra.calls.voice``): a handler that holds
    its call (to log with the call's id, to count its turns) would otherwise make
    call -> engine -> handler -> call a reference cycle, which only the cyclic
    collector frees. Both reference engines have it; a user's engine may.
    """

    def clear_event_handlers(self) -> None:
        """Forget every ``on_event`` callback: no event reaches them after this."""
