"""SpeechToSpeechEngine: what every speech-to-speech engine does, whatever the service.

A speech-to-speech model hears the caller and answers in speech over one socket. The
service-specific engines (:class:`~voxtra.providers.openai_realtime.OpenAIRealtimeEngine`,
:class:`~voxtra.providers.gemini_live.GeminiLiveEngine`) speak their wire protocol; this
base holds the rest, the same for all of them, as a
:class:`~voxtra.pipeline.ConversationEngine`:

- the call's audio: caller frames up (converted once to the service's input format;
  passed through when the transport can deliver that format itself), the model's
  audio down to the transport, each answer's place on the playout timeline;
- barge-in: the transport flushed first, then the service told (``_cancel``) what the
  caller heard of each cut answer (milliseconds and the words that fit in them);
- ``say`` (a spoken text, through the model), ``listen`` (the service's transcription
  of the caller), ``run`` (autonomous conversation with greeting, silence and
  duration limits);
- tools (the pipeline's functions, :class:`~voxtra.pipeline.Agent`'s schema and call
  rules), each run in its own task so audio keeps flowing;
- a deadline (``llm_timeout``) for an answer that does not start: a service whose socket
  is alive but whose model never answers gets a ``ProviderErrorEvent(timed_out=True)``,
  the answer is cancelled at the service (``_abandon``), ``say`` raises
  :class:`~voxtra.pipeline.pipeline.ProviderTimeout` and a caller's turn gets
  ``fallback_text`` from ``fallback_tts``;
- the history as heard (``agent.history``), events of the pipeline's types, per-turn
  metrics, and reconnection within the call with the history restored.

A subclass implements the protocol hooks (``_open``, ``_close``, ``_next_event``,
``_handle``, ``_send_audio``, ``_request_speech``, ``_cancel``, ``_send_tool_result``,
and ``_abandon`` if its service can cancel an answer) and calls the ``_on_*`` methods as
its service's events arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, Self, TypeVar

from voxtra.errors import CallEnded, ConfigError, ProviderError
from voxtra.media.convert import ChunkConverter
from voxtra.media.frames import AudioChunk, Codec
from voxtra.pipeline.agent import Agent, Tool, ToolFunc
from voxtra.pipeline.events import (
    AgentResponseEvent,
    BargeInEvent,
    PipelineEvent,
    ProviderErrorEvent,
    SayResult,
    SpeechEndedEvent,
    SpeechStartedEvent,
    TurnMetrics,
    UserTranscriptEvent,
)
from voxtra.pipeline.heard import heard_words
from voxtra.pipeline.io import Clock, ConvertingMediaIO, MediaIO, MonotonicClock
from voxtra.pipeline.pipeline import (
    DEFAULT_FALLBACK,
    EndReason,
    PipelineInUse,
    PipelineNotAttached,
    ProviderTimeout,
)
from voxtra.providers.base import TTS, ChatMessage, ToolCall

__all__ = ["EngineOptions", "SpeechOutput", "SpeechResponse", "SpeechToSpeechEngine"]

logger = logging.getLogger(__name__)

SAY_INSTRUCTIONS = (
    "Say the following text to the caller exactly as written, word for word, "
    "adding nothing before or after it:\n{text}"
)
E = TypeVar("E", bound="SpeechToSpeechEngine")

_KEY_HEADERS = frozenset({"authorization", "proxy-authorization", "x-goog-api-key", "api-key"})
"""Request headers (lower case) whose value is a service key."""


class _HeaderKeyFilter(logging.Filter):
    """Masks the key in ``websockets``' handshake debug records.

    At DEBUG, websockets logs every header of the opening handshake in clear, one record
    each (``"> %s: %s"``): the OpenAI key (``Authorization: Bearer ...``) and the
    Gemini key (``x-goog-api-key``) went into the app's log. deepgram-sdk installs such
    a filter for ``Authorization`` when it is imported, so an app without it logged
    its OpenAI key, and every app its Gemini key."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if (
            isinstance(args, tuple)
            and len(args) == 2
            and record.msg in ("> %s: %s", "< %s: %s")
            and str(args[0]).lower() in _KEY_HEADERS
        ):
            scheme, space, _key = str(args[1]).partition(" ")
            record.args = (args[0], f"{scheme} [redacted]" if space else "[redacted]")
        return True


def _mask_keys_in_websocket_logs() -> None:
    """Install :class:`_HeaderKeyFilter` on websockets' client logger, once."""
    websockets_logger = logging.getLogger("websockets.client")
    if not any(isinstance(f, _HeaderKeyFilter) for f in websockets_logger.filters):
        websockets_logger.addFilter(_HeaderKeyFilter())


class EngineOptions(Protocol):
    """What an engine's ``factory`` reads of a call's ``VoiceConfig``."""

    system_prompt: str | None
    tools: tuple[Callable[..., Any], ...]
    greeting: str | None
    silence_timeout: float | None
    silence_prompt: str | None
    max_duration: float | None
    llm_timeout: float | None
    tts_timeout: float | None
    fallback_text: str | None
    fallback_tts: TTS | None


@dataclass(eq=False)
class SpeechOutput:
    """One spoken item of an answer and where its audio sits on the playout timeline."""

    item_id: str
    message: ChatMessage | None = None
    start_pos: float | None = None
    end_pos: float = 0.0
    audio_ms: float = 0.0
    transcript: str = ""
    done: bool = False

    def heard_ms(self, played: float) -> float:
        if self.start_pos is None:
            return 0.0
        return max(0.0, min(played, self.end_pos) - self.start_pos)

    def heard_text(self, played: float) -> str:
        heard = self.heard_ms(played)
        if self.done and heard > 0 and heard >= self.audio_ms - 1e-6:
            return self.transcript
        return heard_words(self.transcript, heard, self.audio_ms, complete=self.done)


@dataclass(eq=False)
class SpeechResponse:
    """One answer of the model, from its start to the end of its playout."""

    id: str
    say_id: str | None
    interruptible: bool = True
    outputs: list[SpeechOutput] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    tool_tasks: list[asyncio.Task[None]] = field(default_factory=list)
    metrics: TurnMetrics | None = None
    done: bool = False
    interrupted: bool = False
    lost: bool = False
    error: str | None = None
    heard: tuple[str, float] = ("", 0.0)
    """After a barge-in: what the caller heard of it (text, milliseconds)."""
    muted: bool = False
    """Not for the caller (an answer the engine did not ask for): not played, no events."""
    abandoned: bool = False
    """Given up on (it did not start within ``llm_timeout``): cancelled at the service;
    nothing of it is played, kept or run."""
    fallback: bool = False
    """``fallback_text`` spoken by ``fallback_tts``: the service knows nothing of it."""
    audible: asyncio.Event = field(default_factory=asyncio.Event)
    """Set as its first audio goes to the transport (before the send's first await)."""
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def end_pos(self) -> float:
        return max((o.end_pos for o in self.outputs), default=0.0)

    @property
    def has_audio(self) -> bool:
        return any(o.start_pos is not None for o in self.outputs)

    @property
    def text(self) -> str:
        return " ".join(o.transcript for o in self.outputs if o.transcript)

    def heard_text(self, played: float) -> str:
        return " ".join(t for t in (o.heard_text(played) for o in self.outputs) if t)

    def played_ms(self, played: float) -> float:
        return sum(o.heard_ms(played) for o in self.outputs)


class _Waiter:
    """A ``say`` waiting for its answer to start."""

    def __init__(self, interruptible: bool) -> None:
        self.interruptible = interruptible
        self.response: asyncio.Future[SpeechResponse] = asyncio.get_running_loop().create_future()


class _Late(Exception):
    """A wait passed its deadline (``SpeechToSpeechEngine._until``)."""


class _Subscriber:
    """Bounded event queue for one ``events()`` reader; drops the oldest when full."""

    def __init__(self, maxlen: int) -> None:
        self.items: deque[PipelineEvent] = deque(maxlen=maxlen)
        self.closed = False
        self.changed = asyncio.Event()

    def put(self, event: PipelineEvent) -> None:
        self.items.append(event)
        self.changed.set()

    def close(self) -> None:
        self.closed = True
        self.changed.set()

    async def get(self) -> PipelineEvent | None:
        while not self.items:
            if self.closed:
                return None
            self.changed.clear()
            await self.changed.wait()
        return self.items.popleft()


class SpeechToSpeechEngine:
    """The service-independent part of a speech-to-speech engine (see the module doc).

    ``in_format`` is what the service takes from the caller (u-law 8 kHz passes the
    phone's audio straight through), ``out_format`` what its answers come in.

    ``llm_timeout`` (s): the deadline for an answer to start, counted from the end of the
    caller's turn (in ``run``), the last tool result, or a ``say`` request, to the
    answer's first audio (a tool call also counts as an answer). The model is the
    pipeline's LLM, TTS and more: the name is the pipeline's for the model's deadline.
    Past it: ``ProviderErrorEvent(timed_out=True)``, the answer cancelled at the service
    (``_abandon``), and ``say`` raises ``ProviderTimeout`` while a caller's turn gets
    ``fallback_text`` spoken by ``fallback_tts`` (``tts_timeout`` for each of its
    chunks). Without ``fallback_tts`` nothing is spoken: the service that just hung is
    not asked for the line (that would be another ``llm_timeout`` of silence if it hangs
    again). None turns the deadline off.
    """

    name = "speech-to-speech"
    in_format: tuple[Codec, int] = (Codec.ULAW, 8000)
    out_format: tuple[Codec, int] = (Codec.ULAW, 8000)
    transcribes = True
    """Whether the service reports what the caller said (``listen`` needs it)."""

    def __init__(
        self,
        *,
        system_prompt: str | None = None,
        tools: Iterable[ToolFunc | Tool] = (),
        greeting: str | None = None,
        silence_timeout: float | None = None,
        silence_prompt: str | None = None,
        max_duration: float | None = None,
        llm_timeout: float | None = 8.0,
        tts_timeout: float | None = 5.0,
        fallback_text: str | None = DEFAULT_FALLBACK,
        fallback_tts: TTS | None = None,
        connect_timeout: float = 10.0,
        reconnect_attempts: int = 3,
        reconnect_delay: float = 0.25,
        restore_items: int = 100,
    ) -> None:
        self.system_prompt = system_prompt
        self.greeting = greeting
        self.silence_timeout = silence_timeout
        self.silence_prompt = silence_prompt
        self.max_duration = max_duration
        self.llm_timeout = llm_timeout
        self.tts_timeout = tts_timeout
        self.fallback_text = fallback_text
        self.fallback_tts = fallback_tts
        self.connect_timeout = connect_timeout
        self.reconnect_attempts = reconnect_attempts
        self.reconnect_delay = reconnect_delay
        self.restore_items = restore_items
        _mask_keys_in_websocket_logs()
        self.agent = Agent(None, system_prompt=system_prompt, tools=tools)
        """The call's history as heard (user transcripts, answers cut at the barge-in,
        tool calls and results) and its tools; restored into a new session after a
        reconnect. ``call.agent`` is this."""
        self.metrics: list[TurnMetrics] = []
        self.call_id = ""
        self.dropped_ms = 0.0
        """Caller audio not sent because the socket was down (reconnecting)."""
        self._callbacks: list[Callable[[PipelineEvent], None]] = []
        self._subscribers: list[_Subscriber] = []
        self._media: MediaIO | None = None
        self._clock: Clock = MonotonicClock()
        self._autonomous = False
        self._attached = False
        self._ended = asyncio.Event()
        self._ready = asyncio.Event()
        self._closing = False
        self._failed: ProviderError | None = None
        self._failed_event = asyncio.Event()
        self._finals: deque[UserTranscriptEvent] = deque(maxlen=16)
        self._finals_changed = asyncio.Event()
        self._speak_lock = asyncio.Lock()
        self._waiters: dict[str, _Waiter] = {}
        self._responses: dict[str, SpeechResponse] = {}
        self._active: SpeechResponse | None = None
        self._playing: SpeechResponse | None = None
        self._outputs: dict[str, SpeechOutput] = {}
        self._messages: dict[str, ChatMessage] = {}
        self._partials: dict[str, str] = {}
        self._in_speech = False
        self._awaiting_final = False
        self._last_activity = 0.0
        self._speech_start: float | None = None
        self._speech_end: float | None = None
        self._turn: TurnMetrics | None = None
        self._answer_deadline: float | None = None
        """In ``run``: when (clock) the answer the caller is owed must have started; None
        when none is owed."""
        self._given_up = False
        """An answer was given up on before it started: if it starts after all (before the
        caller's next turn), it is dropped."""
        self._sessions = 0
        """Counts the sessions moved away from (``_renew``): the reader drops what an old
        socket still delivers, and does not reconnect when it closes."""
        self._tasks: set[asyncio.Task[Any]] = set()

    @classmethod
    def factory(cls: type[E], *args: Any, **options: Any) -> Callable[[EngineOptions], E]:
        """For ``VoiceConfig(engine=...)``: a fresh engine per call, built with
        ``args``/``options`` and the call's system prompt, tools, greeting, time limits,
        deadlines and fallback from its ``VoiceConfig`` (an option given here wins)."""

        def build(config: EngineOptions) -> E:
            from_config: dict[str, Any] = {
                "system_prompt": config.system_prompt,
                "tools": config.tools,
                "greeting": config.greeting,
                "silence_timeout": config.silence_timeout,
                "silence_prompt": config.silence_prompt,
                "max_duration": config.max_duration,
                "llm_timeout": config.llm_timeout,
                "tts_timeout": config.tts_timeout,
                "fallback_text": config.fallback_text,
                "fallback_tts": config.fallback_tts,
            }
            return cls(*args, **{**from_config, **options})

        return build

    @property
    def history(self) -> list[ChatMessage]:
        return self.agent.history

    # -- the protocol hooks a service implements

    async def _open(self) -> None:
        """Connect, configure the session (``self._autonomous``: answer by itself) and
        restore ``self._restorable()``; raise ProviderError on failure."""
        raise NotImplementedError

    async def _close(self) -> None:
        """Close the connection (quietly)."""
        raise NotImplementedError

    async def _next_event(self) -> Any:
        """The service's next message; raises when the connection is lost."""
        raise NotImplementedError

    async def _handle(self, event: Any) -> None:
        """Act on one message (calling the ``_on_*`` methods)."""
        raise NotImplementedError

    async def _send_audio(self, chunk: AudioChunk) -> None:
        """Send 20 ms of caller audio (in ``in_format``)."""
        raise NotImplementedError

    async def _request_speech(self, text: str, say_id: str) -> None:
        """Ask the model to say ``text``; its answer must start as ``say_id``'s
        (``_on_response_started(..., say_id=say_id)``)."""
        raise NotImplementedError

    async def _cancel(
        self, response: SpeechResponse, cuts: list[tuple[SpeechOutput, float]]
    ) -> None:
        """After a barge-in (the transport already flushed): stop ``response`` at the
        service and tell it, for each output cut short, how much was heard (ms)."""
        raise NotImplementedError

    async def _send_tool_result(self, call: ToolCall, output: str) -> None:
        """Hand a tool's result to the service."""
        raise NotImplementedError

    async def _continue_after_tools(self, response: SpeechResponse) -> None:
        """Once every tool of ``response`` answered: ask for the next answer if the
        service needs asking (some continue by themselves)."""

    async def _abandon(self, response: SpeechResponse | None) -> None:
        """An answer did not start within ``llm_timeout``: stop it at the service
        (``response``: the answer, started without audio; None: none started yet). By
        default a move to a new session, where the hung answer cannot come: for a
        service with no message to cancel an answer."""
        self._renew("no answer in time")

    # -- events

    def on_event(
        self, callback: Callable[[PipelineEvent], None]
    ) -> Callable[[PipelineEvent], None]:
        """Call ``callback(event)`` for every event (inline: keep it quick)."""
        self._callbacks.append(callback)
        return callback

    def clear_event_handlers(self) -> None:
        """Forget every ``on_event`` callback (the call does this once it is over, so
        a handler that holds the call makes no reference cycle with it)."""
        self._callbacks.clear()

    async def events(self, maxlen: int = 256) -> AsyncIterator[PipelineEvent]:
        """Events until the engine detaches; a slow reader loses the oldest."""
        sub = _Subscriber(maxlen)
        self._subscribers.append(sub)
        try:
            while (event := await sub.get()) is not None:
                yield event
        finally:
            self._subscribers.remove(sub)

    def _emit(self, event: PipelineEvent) -> None:
        for callback in list(self._callbacks):
            try:
                callback(event)
            except Exception:
                logger.exception("event callback failed")
        for sub in self._subscribers:
            sub.put(event)

    def _now(self) -> float:
        return self._clock.now()

    def _report(self, message: str, *, stage: str = "realtime", timed_out: bool = False) -> None:
        logger.warning("call %s: %s: %s", self.call_id, self.name, message)
        self._emit(ProviderErrorEvent(self.name, message, self._now(), stage, timed_out))

    # -- attach / run

    def attach(
        self, media: MediaIO, *, clock: Clock | None = None, call_id: str = ""
    ) -> contextlib.AbstractAsyncContextManager[Self]:
        """Connect and stream the call's audio both ways for the block's duration; the
        model answers only when asked (``say``), ``listen`` hears the caller."""
        return self._attach(media, clock, call_id, autonomous=False)

    async def run(
        self, media: MediaIO, *, clock: Clock | None = None, call_id: str = ""
    ) -> EndReason:
        """Converse autonomously (the model answers each turn) until the call ends,
        ``max_duration`` passes or the caller is silent past ``silence_timeout``."""
        async with self._attach(media, clock, call_id, autonomous=True):
            if self.greeting:
                await self._say_quietly(self.greeting)
            return await self._converse()

    async def _say_quietly(self, text: str) -> None:
        """Say something the engine itself chose (the greeting, the silence prompt): a
        failure, a hung answer among them, is reported, not raised (the conversation goes
        on; an engine whose reconnect failed ends it at the loop's next step)."""
        try:
            await self.say(text)
        except CallEnded:
            pass
        except ProviderError as exc:
            logger.warning("call %s: %s: could not say %r: %s", self.call_id, self.name, text, exc)

    async def _converse(self) -> EndReason:
        start = self._now()
        prompts = 0
        self._last_activity = self._now()
        while True:
            if self._ended.is_set():
                return EndReason.HANGUP
            if self._failed is not None:
                raise self._failed
            now = self._now()
            if self.max_duration is not None and now - start >= self.max_duration:
                return EndReason.MAX_DURATION
            due = self._answer_deadline
            if due is not None and self.llm_timeout is not None and not self._in_speech:
                if self._still_playing():
                    # An earlier answer still plays (one the caller could not cut): the
                    # caller's wait for this one has not begun.
                    self._answer_deadline = now + self.llm_timeout
                elif now >= due:
                    await self._answer_late()
                    continue
            busy = (
                self._in_speech
                or self._active is not None
                or self._still_playing()
                or self._answer_deadline is not None
            )
            if busy:
                self._last_activity = now
            elif (
                self.silence_timeout is not None
                and now - self._last_activity >= self.silence_timeout
            ):
                if self.silence_prompt and prompts < 1:
                    prompts += 1
                    await self._say_quietly(self.silence_prompt)
                    self._last_activity = self._now()
                else:
                    return EndReason.SILENCE_TIMEOUT
            await self._clock.sleep(0.05)

    @asynccontextmanager
    async def _attach(
        self, media: MediaIO, clock: Clock | None, call_id: str, *, autonomous: bool
    ) -> AsyncIterator[Self]:
        if self._attached:
            raise PipelineInUse("the engine is already attached to a call")
        self._attached = True
        self._media = media
        self._clock = clock or MonotonicClock()
        self.call_id = call_id
        self._autonomous = autonomous
        self._ended = asyncio.Event()
        self._closing = False
        self._failed = None
        self._failed_event = asyncio.Event()
        self._last_activity = self._now()
        self._answer_deadline = None
        previous: tuple[Codec, int] | None = None
        if isinstance(media, ConvertingMediaIO):
            # Ask the transport for the service's own format: for u-law at 8 kHz no
            # frame is decoded or resampled on the way up; otherwise the transport's
            # converter does it once (the RTP transport batches it for all its calls).
            previous = media.inbound_format
            media.set_inbound_format(*self.in_format)
        try:
            await self._connect()
            reader = self._spawn(self._read(), "s2s-reader")
            sender = self._spawn(self._pump(media), "s2s-sender")
            try:
                yield self
            finally:
                self._closing = True
                for task in (sender, reader, *self._tasks):
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
                self._tasks.clear()
        finally:
            self._closing = True
            self._ended.set()
            self._wake_all()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._close(), 2.0)
            self._ready.clear()
            if previous is not None and isinstance(media, ConvertingMediaIO):
                media.set_inbound_format(*previous)
            self._media = None
            self._attached = False
            for sub in self._subscribers:
                sub.close()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{name}-{self.call_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _connect(self) -> None:
        self._ready.clear()
        self._given_up = False  # (a new session: the answer given up on cannot come)
        try:
            await asyncio.wait_for(self._open(), self.connect_timeout)
        except ProviderError:
            with contextlib.suppress(Exception):
                await self._close()
            raise
        except Exception as exc:
            with contextlib.suppress(Exception):
                await self._close()
            raise ProviderError(self.name, f"cannot connect: {describe(exc)}") from exc
        self._ready.set()

    def _restorable(self) -> list[ChatMessage]:
        """The history to restore into a new session: the last ``restore_items``
        messages with content, never starting with a tool result whose call was cut."""
        messages = [
            m
            for m in self.agent.history
            if m.role != "system" and (m.content or m.tool_calls or m.role == "tool")
        ]
        messages = messages[-self.restore_items :] if self.restore_items else []
        while messages and messages[0].role == "tool":
            messages.pop(0)
        return messages

    def _quiet(self) -> bool:
        """No answer in flight or asked for, the caller not speaking, no tool running: a
        moment where moving to a new session loses nothing."""
        return (
            self._active is None
            and not self._waiters
            and not self._in_speech
            and not any(t.get_name().startswith("tool-") for t in self._tasks)
        )

    def _renew(self, why: str) -> None:
        """Move to a new session (the service is about to close this one, or hung): no
        error event; if that fails, as for a lost connection. The socket is marked gone
        here and now (``say`` waits for the new one, the reader drops what the old one
        still delivers); the move itself runs in a task of its own."""
        if not self._ready.is_set() or self._closing:
            return  # (already moving or reconnecting)
        logger.info("call %s: %s: moving to a new session (%s)", self.call_id, self.name, why)
        self._ready.clear()
        self._sessions += 1
        self._spawn(self._move(), "s2s-move")

    async def _move(self) -> None:
        with contextlib.suppress(Exception):
            await self._close()
        self._end_responses()
        try:
            await self._connect()
        except ProviderError as exc:
            await self._reconnect(exc)

    async def _reconnect(self, exc: BaseException) -> None:
        message = f"connection lost: {describe(exc)}"
        self._report(message)
        self._ready.clear()
        with contextlib.suppress(Exception):
            await self._close()
        self._end_responses()
        self._in_speech = False
        last: BaseException = exc
        for attempt in range(self.reconnect_attempts):
            if self._closing:
                return
            await asyncio.sleep(self.reconnect_delay * (2**attempt))
            try:
                await self._connect()
                logger.info("call %s: %s reconnected", self.call_id, self.name)
                return
            except ProviderError as err:
                last = err
        self._failed = ProviderError(self.name, f"reconnect failed: {describe(last)}")
        self._report(str(self._failed))
        self._wake_all()

    # -- the loops

    async def _pump(self, media: MediaIO) -> None:
        """Caller audio up, converted once (or passed through) to ``in_format``."""
        converter = ChunkConverter(*self.in_format)
        try:
            async for frame in media.frames():
                chunk = converter.convert(frame)  # the same object when already right
                if not chunk.data:
                    continue
                if not self._ready.is_set():
                    self.dropped_ms += chunk.duration_ms
                    continue
                try:
                    await self._send_audio(chunk)
                except Exception:
                    self.dropped_ms += chunk.duration_ms  # the reader sees the socket go
        finally:
            self._ended.set()
            self._wake_all()

    async def _read(self) -> None:
        while not self._closing:
            if not self._ready.is_set():
                if self._failed is not None:
                    return
                await asyncio.sleep(0.01)
                continue
            session = self._sessions
            try:
                event = await self._next_event()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._closing:
                    return
                if session != self._sessions:
                    continue  # (closed by a move: the new session comes without a reconnect)
                await self._reconnect(exc)
                if self._failed is not None:
                    return
                continue
            if session != self._sessions:
                continue  # (the last words of a session moved away from)
            try:
                await self._handle(event)
            except Exception:
                logger.exception("call %s: %s: an event failed", self.call_id, self.name)

    # -- answers and their audio (called by the subclass)

    def _on_response_started(self, response_id: str, say_id: str | None) -> SpeechResponse:
        waiter = self._waiters.pop(say_id, None) if say_id else None
        response = SpeechResponse(
            response_id,
            say_id=say_id if waiter is not None else None,
            interruptible=waiter.interruptible if waiter is not None else True,
        )
        if waiter is None and (say_id is not None or self._given_up):
            # An answer given up on that started after all (its cancel crossed it, or came
            # before it): not for the caller any more, stopped at the service too.
            self._given_up = False
            self._responses[response.id] = response
            self._drop_late(response)
            self._spawn(self._abandon_quietly(response), "s2s-abandon")
            return response
        if waiter is None and self._speech_end is not None:
            # An answer to the caller's turn: its metrics run from the end of speech.
            response.metrics = TurnMetrics(speech_end=self._speech_end)
            if self._turn is not None:
                response.metrics.stt_final = self._turn.stt_final
            self._speech_end = None
        self._turn = None
        self._responses[response.id] = response
        self._active = response
        if waiter is not None and not waiter.response.done():
            waiter.response.set_result(response)
        return response

    def _output(self, response: SpeechResponse, item_id: str) -> SpeechOutput:
        out = self._outputs.get(item_id)
        if out is None:
            out = SpeechOutput(item_id, self._messages.get(item_id))
            self._outputs[item_id] = out
            response.outputs.append(out)
        return out

    async def _on_audio(self, response: SpeechResponse, item_id: str, data: bytes) -> None:
        media = self._media
        if media is None or not data or response.interrupted:
            return  # (an interrupted answer's late audio was never to be played)
        out = self._output(response, item_id)
        chunk = AudioChunk(data, self.out_format[1], self.out_format[0])
        received = self._now()
        if response.say_id is None:
            self._answer_deadline = None  # (the answer the caller was owed: it started)
        # Marked started before the send's await, as the deadline above is cleared: a
        # say whose deadline passes during the send sees its answer started, not late.
        response.audible.set()
        await media.send(chunk)
        end = media.played_ms + media.queued_ms
        if out.start_pos is None:
            out.start_pos = end - chunk.duration_ms
        out.end_pos = end
        out.audio_ms += chunk.duration_ms
        self._playing = response
        metrics = response.metrics
        if metrics is not None and metrics.first_frame_out is None:
            metrics.tts_first_byte = received
            metrics.first_frame_out = self._now()

    def _on_transcript_delta(self, response: SpeechResponse, item_id: str, delta: str) -> None:
        if response.interrupted:
            return
        out = self._output(response, item_id)
        out.transcript += delta
        metrics = response.metrics
        if metrics is not None and metrics.llm_first_token is None:
            metrics.llm_first_token = self._now()

    def _on_transcript_done(self, response: SpeechResponse, item_id: str, text: str) -> None:
        if response.interrupted:
            return
        out = self._output(response, item_id)
        out.transcript = text or out.transcript
        if out.message is None and self._messages.get(item_id) is None:
            out.message = self._add_message(item_id, "assistant")
        if out.message is not None:
            out.message.content = out.transcript

    def _on_audio_done(self, item_id: str) -> None:
        out = self._outputs.get(item_id)
        if out is not None:
            out.done = True

    async def _on_response_done(self, response: SpeechResponse, error: str | None = None) -> None:
        if response.done:
            return
        response.done = True
        if self._active is response:
            self._active = None
        if error is not None:
            response.error = error
            self._report(f"response failed: {error}")
        if response.muted:
            response.metrics = None
        elif not response.interrupted:
            self._emit(AgentResponseEvent(response.text, tuple(response.calls), self._now()))
        if response.metrics is not None:
            metrics = response.metrics
            metrics.interrupted = response.interrupted
            metrics.at = self._now()
            self.metrics.append(metrics)
            self._emit(metrics)
        if response.calls and not response.interrupted:
            self._spawn(self._after_tools(response), "s2s-tools")
        response.finished.set()
        if not response.has_audio:
            self._responses.pop(response.id, None)

    def _still_playing(self) -> bool:
        response, media = self._playing, self._media
        if response is None or media is None:
            return False
        return media.queued_ms > 0 and media.played_ms < response.end_pos - 1e-6

    def _end_responses(self) -> None:
        """The socket went: no more events for the answers in flight, nor the transcript
        of the caller's last turn (the old session was transcribing it: kept due, it held
        every ``listen(timeout)`` after a reconnect until the caller spoke again)."""
        self._awaiting_final = False
        for response in list(self._responses.values()):
            if not response.done:
                response.done = True
                response.lost = True
                response.finished.set()
        self._active = None
        for waiter in self._waiters.values():
            if not waiter.response.done():
                waiter.response.set_exception(
                    ProviderError(self.name, "connection lost before the answer started")
                )
        self._waiters.clear()

    def _on_say_dropped(self, say_id: str) -> None:
        """The service dropped ``say_id``'s answer before it started, for the caller's
        speech: that ``say`` returns now, interrupted with nothing heard (as for an answer
        the caller cut before its audio), instead of waiting for an answer that does not
        come until ``llm_timeout`` gives it up."""
        waiter = self._waiters.pop(say_id, None)
        if waiter is None or waiter.response.done():
            return
        response = SpeechResponse(f"dropped-{say_id}", say_id, interrupted=True, done=True)
        response.finished.set()
        waiter.response.set_result(response)
        self._emit(BargeInEvent("", 0.0, self._now()))

    def _fail_say(self, key: str, message: str) -> bool:
        """The service refused the request ``key`` was sent with: its ``say`` raises."""
        waiter = self._waiters.pop(key, None)
        if waiter is None:
            return False
        if not waiter.response.done():
            waiter.response.set_exception(ProviderError(self.name, message))
        return True

    # -- the caller's side (called by the subclass)

    async def _on_speech_started(self) -> None:
        now = self._now()
        self._in_speech = True
        self._awaiting_final = False
        self._answer_deadline = None  # (the caller took the turn again)
        self._last_activity = now
        self._speech_start = now
        target = self._active
        if target is None and self._still_playing():
            target = self._playing
        if (
            target is not None
            and target.interruptible
            and not target.interrupted
            and not target.muted
        ):
            await self._barge_in(target, now)
        self._emit(SpeechStartedEvent(now))

    async def _barge_in(self, response: SpeechResponse, now: float) -> None:
        media = self._media
        assert media is not None
        # The answer is marked cut before the flush's first await: while the flush is
        # suspended, say() must not see an empty queue on an answer still marked
        # whole (a clean-clone CI run returned one as played to its end), and audio
        # arriving meanwhile must not be queued behind it. The bookkeeping up to the
        # flush is synchronous, so the caller stops hearing the agent no later.
        played = media.played_ms
        response.interrupted = True
        heard_text = response.heard_text(played)
        played_ms = response.played_ms(played)
        cuts: list[tuple[SpeechOutput, float]] = []
        for out in response.outputs:
            if out.start_pos is None:
                continue
            heard_ms, text = out.heard_ms(played), out.heard_text(played)
            if heard_ms < out.audio_ms - 1e-6:
                cuts.append((out, heard_ms))  # (one heard to its end was not cut)
            out.transcript, out.audio_ms, out.done = text, heard_ms, True
            if out.message is not None:
                out.message.content = text
                if not text and not out.message.tool_calls:
                    self._drop_message(out.message)
        response.heard = (heard_text, played_ms)
        await media.flush()
        if not response.fallback:
            with contextlib.suppress(Exception):
                await self._cancel(response, cuts)
        self._emit(BargeInEvent(heard_text, played_ms, now))
        response.finished.set()

    def _on_speech_stopped(self) -> None:
        now = self._now()
        self._in_speech = False
        self._awaiting_final = self.transcribes
        self._last_activity = now
        self._speech_end = now
        self._turn = TurnMetrics(speech_end=now)
        self._given_up = False  # (an answer starting now is this turn's)
        self._expect_answer()
        started = self._speech_start
        self._emit(SpeechEndedEvent(now, (now - started) * 1000.0 if started is not None else 0.0))

    def _add_message(self, item_id: str, role: str) -> ChatMessage | None:
        """A history entry for the service's conversation item ``item_id``."""
        if item_id in self._messages or role not in ("user", "assistant"):
            return self._messages.get(item_id)
        message = ChatMessage(role="user" if role == "user" else "assistant")
        self._messages[item_id] = message
        self.agent.history.append(message)
        out = self._outputs.get(item_id)
        if out is not None:
            out.message = message
        return message

    def _on_input_delta(self, item_id: str, delta: str) -> None:
        text = self._partials.get(item_id, "") + delta
        self._partials[item_id] = text
        if text.strip():
            self._emit(UserTranscriptEvent(text.strip(), is_final=False, at=self._now()))

    def _on_input_done(self, item_id: str, transcript: str) -> None:
        self._partials.pop(item_id, None)
        self._awaiting_final = False
        text = transcript.strip()
        message = self._messages.get(item_id)
        if message is None and text:
            message = self._add_message(item_id, "user")
        if message is not None:
            if text:
                message.content = text
            else:
                self._drop_message(message)
        if not text:
            return
        now = self._now()
        if self._turn is not None:
            self._turn.stt_final = now
        active = self._active
        if active is not None and active.metrics is not None and active.metrics.stt_final is None:
            active.metrics.stt_final = now
        final = UserTranscriptEvent(text, is_final=True, at=now)
        self._emit(final)
        self._finals.append(final)
        self._finals_changed.set()

    def _drop_message(self, message: ChatMessage) -> None:
        history = self.agent.history
        for i, m in enumerate(history):
            if m is message:
                del history[i]
                return

    # -- tools

    def _on_function_call(
        self, response: SpeechResponse | None, call_id: str, name: str, arguments: Any
    ) -> None:
        """The model asked for a tool: ``arguments`` as JSON text or an object."""
        if response is not None and response.abandoned:
            logger.info("call %s: %s: %s asked too late: not run", self.call_id, self.name, name)
            return
        # The model answered (a tool's run is not the model's: the deadline starts again
        # once every result is in, _run_tool).
        self._answer_deadline = None
        if isinstance(arguments, str):
            try:
                args = json.loads(arguments or "{}")
            except ValueError:
                args = None
        else:
            args = arguments
        call = ToolCall(call_id, name, args if isinstance(args, dict) else {})
        self.agent.history.append(ChatMessage(role="assistant", tool_calls=[call]))
        task = self._spawn(self._run_tool(call, bad_args=not isinstance(args, dict)), "tool")
        if response is not None:
            response.calls.append(call)
            response.tool_tasks.append(task)

    async def _run_tool(self, call: ToolCall, *, bad_args: bool) -> None:
        """Run one tool (its own task: audio and events keep flowing); send its result."""
        if bad_args:
            result: Any = "error: the arguments are not a JSON object"
        else:
            result = await self.agent.call_tool(call)
        output = result if isinstance(result, str) else json.dumps(result, default=str)
        self.agent.history.append(ChatMessage(role="tool", content=output, tool_call_id=call.id))
        await self._ready.wait()
        try:
            await self._send_tool_result(call, output)
        except Exception as exc:
            logger.warning("call %s: tool result not sent: %s", self.call_id, exc)
        current = asyncio.current_task()
        if not any(
            t is not current and not t.done() and t.get_name().startswith("tool-")
            for t in self._tasks
        ):
            self._expect_answer()  # (the last result: the model's answer to them is due)

    async def _after_tools(self, response: SpeechResponse) -> None:
        await asyncio.gather(*response.tool_tasks, return_exceptions=True)
        if self._in_speech or self._active is not None or self._closing:
            return  # the caller took the turn: their answer comes instead
        try:
            await self._continue_after_tools(response)
        except Exception as exc:
            logger.warning("call %s: could not continue after tools: %s", self.call_id, exc)

    # -- the session API

    def _check(self) -> None:
        if not self._attached or self._media is None:
            raise PipelineNotAttached("the engine is not attached to a call")
        if self._failed is not None:
            raise self._failed
        if self._ended.is_set():
            raise CallEnded(self.call_id)

    async def say(self, text: str, *, interruptible: bool = True) -> SayResult:
        """Have the model say ``text``; return once played or cut by the caller.

        Raises ``ProviderTimeout`` (a ``ProviderError`` and a ``TimeoutError``) when the
        answer's first audio does not come within ``llm_timeout`` of the request (after a
        ``ProviderErrorEvent(timed_out=True)``; the answer is cancelled at the service),
        ``ProviderError`` when the service fails it."""
        self._check()
        async with self._speak_lock:
            while self._active is not None:  # one answer at a time
                await self._until(self._active.finished.wait())
            # During a reconnect, wait for the new session (or its failure) rather
            # than send on a socket that is gone.
            await self._until(self._ready.wait())
            say_id = uuid.uuid4().hex[:16]
            waiter = _Waiter(interruptible)
            self._waiters[say_id] = waiter
            deadline = None if self.llm_timeout is None else self._now() + self.llm_timeout
            response: SpeechResponse | None = None
            late = False
            try:
                try:
                    await self._request_speech(text, say_id)
                    response = await self._until(waiter.response, deadline)
                finally:
                    self._waiters.pop(say_id, None)
                assert response is not None
                await self._until(self._audible(response), deadline)
            except _Late:
                # The deadline and the first audio can come in the same moment: the
                # audio on its way to the transport (in its send, or sent with the
                # wake-ups up to _audible's return still to run) while the timer wins
                # the wait. It started in time then. Given up, it played in part (its
                # first chunk: 100 ms from the fake) and say raised ProviderTimeout too.
                late = response is None or not response.audible.is_set()
            if late:
                message = await self._give_up(response, turn=False)
                raise ProviderTimeout(self.name, message)
            assert response is not None
            await self._until(response.finished.wait())
            if response.error is not None and not response.has_audio:
                raise ProviderError(self.name, f"response failed: {response.error}")
            media = self._media
            assert media is not None
            while (
                not response.interrupted
                and response.has_audio
                and media.queued_ms > 0
                and media.played_ms < response.end_pos - 1e-6
                and not self._ended.is_set()
            ):
                await self._clock.sleep(0.02)
            if response.interrupted:
                return SayResult(True, *response.heard)
            if self._ended.is_set() and media.queued_ms > 0:
                raise CallEnded(self.call_id)
            return SayResult(False, response.text, sum(o.audio_ms for o in response.outputs))

    async def _until(self, aw: Any, deadline: float | None = None) -> Any:
        """Await ``aw``; CallEnded if the call ends first, the failure if the engine fails,
        ``_Late`` at ``deadline`` (engine clock)."""
        task = asyncio.ensure_future(aw)
        ended = asyncio.ensure_future(self._ended.wait())
        failed = asyncio.ensure_future(self._failed_event.wait())
        waits = {task, ended, failed}
        timer = None
        if deadline is not None:
            timer = asyncio.ensure_future(self._clock.sleep(deadline - self._now()))
            waits.add(timer)
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
            failed.cancel()
            if timer is not None:
                timer.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if task.done() and not task.cancelled():
            return task.result()
        if self._failed is not None:
            raise self._failed
        if self._ended.is_set():
            raise CallEnded(self.call_id)
        raise _Late

    @staticmethod
    async def _audible(response: SpeechResponse) -> None:
        """Until ``response``'s first audio, or its end (without any)."""
        waits = {
            asyncio.ensure_future(response.audible.wait()),
            asyncio.ensure_future(response.finished.wait()),
        }
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    # -- answers that do not come

    def _expect_answer(self) -> None:
        """In ``run``: the service owes the caller an answer; its deadline starts now."""
        if self._autonomous and self.llm_timeout is not None and not self._in_speech:
            self._answer_deadline = self._now() + self.llm_timeout

    async def _answer_late(self) -> None:
        """The caller's turn got no answer within ``llm_timeout``: give it up (here and at
        the service) and speak ``fallback_text`` with ``fallback_tts``."""
        self._answer_deadline = None
        self._speech_end, self._turn = None, None  # (a later answer's metrics are its own)
        active = self._active  # (a say's answer in flight has its own deadline)
        await self._give_up(
            active if active is not None and active.say_id is None else None, turn=True
        )
        await self._say_fallback()
        self._last_activity = self._now()

    async def _give_up(self, response: SpeechResponse | None, *, turn: bool) -> str:
        """Report an answer that did not start in time and stop it (``response``: started
        without audio; None: not started, and ``turn``: it was owed to the caller's turn,
        so an unasked answer starting later is it). Returns the report's message."""
        message = f"TimeoutError: no answer within {self.llm_timeout or 0.0:g} s"
        self._report(message, timed_out=True)
        if response is not None:
            self._drop_late(response)
        elif turn:
            self._given_up = True
        await self._abandon_quietly(response)
        return message

    def _drop_late(self, response: SpeechResponse) -> None:
        """Nothing more of ``response`` is played, kept in the history, or run."""
        response.abandoned = response.interrupted = response.muted = True
        for out in response.outputs:
            if out.message is not None and out.start_pos is None:
                self._drop_message(out.message)
        if self._active is response:
            self._active = None
        response.finished.set()

    async def _abandon_quietly(self, response: SpeechResponse | None) -> None:
        try:
            await self._abandon(response)
        except Exception as exc:
            logger.warning(
                "call %s: %s: the late answer not cancelled: %s", self.call_id, self.name, exc
            )

    async def _say_fallback(self) -> None:
        """Speak ``fallback_text`` with ``fallback_tts`` straight to the caller (the
        service is not asked: it just hung). Interruptible; kept in the history as heard."""
        text, tts, media = self.fallback_text, self.fallback_tts, self._media
        if not text or tts is None or media is None:
            return
        async with self._speak_lock:
            response = SpeechResponse(f"fallback-{uuid.uuid4().hex[:12]}", None, fallback=True)
            out = SpeechOutput(response.id, transcript=text)
            response.outputs.append(out)
            audio = tts.synthesize(text)
            try:
                while not response.interrupted:
                    deadline = None if self.tts_timeout is None else self._now() + self.tts_timeout
                    try:
                        chunk: AudioChunk = await self._until(anext(audio), deadline)
                    except StopAsyncIteration:
                        break
                    if not chunk.data or response.interrupted:
                        continue
                    await media.send(chunk)
                    end = media.played_ms + media.queued_ms
                    if out.start_pos is None:
                        out.start_pos = end - chunk.duration_ms
                    out.end_pos = end
                    out.audio_ms += chunk.duration_ms
                    self._playing = response
                out.done = True
                while (
                    not response.interrupted
                    and media.queued_ms > 0
                    and media.played_ms < response.end_pos - 1e-6
                    and not self._ended.is_set()
                ):
                    await self._clock.sleep(0.02)
            except CallEnded:
                return
            except ProviderError as exc:
                if self._failed is not None:
                    return  # (the service's connection is gone: the loop ends the call)
                # The fallback TTS's own failure (ElevenLabs, espeak raise these): what
                # of the line played is still the caller's, in the history below.
                logger.warning("call %s: the fallback TTS failed: %s", self.call_id, exc)
            except _Late:
                logger.warning("call %s: the fallback TTS did not answer in time", self.call_id)
            except Exception as exc:
                logger.warning("call %s: the fallback TTS failed: %s", self.call_id, exc)
            finally:
                close = getattr(audio, "aclose", None)
                if close is not None:
                    with contextlib.suppress(Exception):
                        await close()
            heard = (
                response.heard[0] if response.interrupted else response.heard_text(media.played_ms)
            )
            if heard:
                self.agent.history.append(ChatMessage(role="assistant", content=heard))

    def _wake_all(self) -> None:
        self._finals_changed.set()
        if self._failed is not None:
            self._failed_event.set()

    async def listen(self, timeout: float | None = None) -> UserTranscriptEvent | None:
        """The caller's next final transcript; None after ``timeout`` s of silence.

        Finals heard while nobody listens are kept (the last 16). The timeout counts
        silence: it does not run out while the caller speaks or a transcript is due."""
        self._check()
        if not self.transcribes:
            raise ConfigError(f"{type(self).__name__}.listen() needs the input transcription")
        start = self._now()
        while True:
            if self._finals:
                return self._finals.popleft()
            if self._failed is not None:
                raise self._failed
            if self._ended.is_set():
                raise CallEnded(self.call_id)
            now = self._now()
            if (
                timeout is not None
                and not self._in_speech
                and not self._awaiting_final
                and now >= max(start, self._last_activity) + timeout
            ):
                return None
            self._finals_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._finals_changed.wait(), 0.05)

    async def interrupt(self) -> None:
        """Stop the agent's current speech now (as a barge-in would)."""
        target = self._active
        if target is None and self._still_playing():
            target = self._playing
        if target is not None and not target.interrupted and self._media is not None:
            await self._barge_in(target, self._now())


def describe(exc: BaseException) -> str:
    """A short text for a provider's exception (HTTP status first when it has one)."""
    if isinstance(exc, ProviderError):
        return str(exc).removeprefix(f"{exc.provider}: ")
    status = getattr(exc, "status_code", None)
    if status is None and not type(exc).__module__.startswith("websockets"):
        status = getattr(exc, "code", None)  # google-genai's APIError (websockets': deprecated)
    message = str(exc) or type(exc).__name__
    if isinstance(status, int):
        return f"HTTP {status}: {message}" if status < 1000 else f"{status}: {message}"
    return f"{type(exc).__name__}: {message}"
