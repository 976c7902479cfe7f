"""OpenAIRealtimeEngine: a whole call's conversation on one OpenAI Realtime socket.

A :class:`~voxtra.pipeline.ConversationEngine` (what ``call.say``, ``call.listen`` and
``converse()`` drive), so a speech-to-speech model replaces the STT -> LLM -> TTS
pipeline without the handler changing::

    VoiceConfig(
        system_prompt="You answer the phone for a bakery.",
        tools=(opening_hours,),
        engine=OpenAIRealtimeEngine.factory(api_key=key, voice="marin"),
    )

It runs on the ``openai`` SDK's realtime client (``client.realtime.connect()``, the GA
protocol: ``response.output_audio.delta`` and so on). What it does per call:

- Audio: the caller's u-law 8 kHz goes up untouched (``audio/pcmu`` in and out; the
  transport is asked for u-law 8 kHz when it can convert, so an RTP call pays no decode
  and no resample), and the answer's u-law comes back straight into the transport.
  ``audio_format="pcm"`` (24 kHz PCM16) converts once each way instead.
- Turn-taking: the service's server VAD. ``speech_started`` is the barge-in: the
  transport is flushed first (the caller stops hearing the agent within a frame), then
  ``response.cancel``, then ``conversation.item.truncate`` of the cut answer at the
  milliseconds the caller actually heard (the transport's ``played_ms`` at the flush
  minus where that answer started on the playout timeline), so the model's history
  matches the call. The service's own ``interrupt_response`` is off: the engine decides
  (a ``say(interruptible=False)`` is not cut).
- ``say(text)``: a ``response.create`` whose instructions ask the model to say the text
  as written; it returns once the audio has played (or was cut).
- ``listen()``: the service's input transcription, as a final ``UserTranscriptEvent``.
  While attached for ``say``/``listen`` the model does not answer by itself
  (``create_response`` off); ``converse()`` (``run``) turns that on.
- Tools: the same Python functions as the pipeline's agent (schema from signature and
  docstring, :func:`voxtra.pipeline.tool_spec`), run in their own task when the
  service sends ``response.function_call_arguments.done``; their results go back as
  ``function_call_output`` items and a new ``response.create``. Audio keeps flowing
  while a slow tool runs.
- Events: the pipeline's types (UserTranscriptEvent, AgentResponseEvent, SpeechStarted,
  SpeechEnded, BargeInEvent, TurnMetrics with speech end -> first audio out,
  ProviderErrorEvent).
- A dropped socket is reconnected within the call (``reconnect_attempts``), the session
  configured again and the conversation so far (``history``, as heard) restored as
  items, the last ``restore_items`` of them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import SecretStr

from voxtra.config import secret_value
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
from voxtra.pipeline.io import Clock, ConvertingMediaIO, MediaIO, MonotonicClock
from voxtra.pipeline.pipeline import EndReason, PipelineInUse, PipelineNotAttached
from voxtra.providers.base import ChatMessage, ToolCall

__all__ = ["OpenAIRealtimeEngine", "RealtimeOptions"]

logger = logging.getLogger(__name__)

SAY_INSTRUCTIONS = (
    "Say the following text to the caller exactly as written, word for word, "
    "adding nothing before or after it:\n{text}"
)
_FORMATS = {"pcmu": (Codec.ULAW, 8000), "pcma": (Codec.ALAW, 8000), "pcm": (Codec.PCM16, 24000)}
_MS_PER_CHAR = 65.0
"""Speech rate used to guess how much of an answer's text a cut covers while its audio
is still arriving (the same figure as the pipeline's)."""
_QUIET_ERRORS = {"response_cancel_not_active"}
"""Error codes that are a race, not a failure: the engine cancels on barge-in and the
response may have ended a moment before the cancel arrived."""


class RealtimeOptions(Protocol):
    """What :meth:`OpenAIRealtimeEngine.factory` reads of a call's ``VoiceConfig``."""

    system_prompt: str | None
    tools: tuple[Callable[..., Any], ...]
    greeting: str | None
    silence_timeout: float | None
    silence_prompt: str | None
    max_duration: float | None


@dataclass(eq=False)
class _Output:
    """One assistant audio item and where its audio sits on the playout timeline."""

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
        if heard <= 0:
            return ""
        if self.done and heard >= self.audio_ms - 1e-6:
            return self.transcript
        total = self.audio_ms if self.done else max(self.audio_ms, len(self.transcript) * 65.0)
        return _prefix_words(self.transcript, heard / total if total else 0.0)


def _prefix_words(text: str, fraction: float) -> str:
    """The words of ``text`` that fit entirely in its first ``fraction`` (by characters)."""
    limit = fraction * len(text)
    words: list[str] = []
    pos = 0
    for word in text.split():
        pos = text.index(word, pos) + len(word)
        if pos > limit:
            break
        words.append(word)
    return " ".join(words)


@dataclass(eq=False)
class _Response:
    """One response of the model, from ``response.created`` to playout."""

    id: str
    say_id: str | None
    interruptible: bool = True
    outputs: list[_Output] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    tool_tasks: list[asyncio.Task[None]] = field(default_factory=list)
    metrics: TurnMetrics | None = None
    done: bool = False
    interrupted: bool = False
    lost: bool = False
    error: str | None = None
    heard: tuple[str, float] = ("", 0.0)
    """After a barge-in: what the caller heard of it (text, milliseconds)."""
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def end_pos(self) -> float:
        return max((o.end_pos for o in self.outputs), default=0.0)

    @property
    def has_audio(self) -> bool:
        return any(o.start_pos is not None for o in self.outputs)

    def heard_text(self, played: float) -> str:
        return " ".join(t for t in (o.heard_text(played) for o in self.outputs) if t)

    def played_ms(self, played: float) -> float:
        return sum(o.heard_ms(played) for o in self.outputs)


class _Waiter:
    """A ``say`` waiting for its response to be created."""

    def __init__(self, interruptible: bool) -> None:
        self.interruptible = interruptible
        self.response: asyncio.Future[_Response] = asyncio.get_running_loop().create_future()


class OpenAIRealtimeEngine:
    """One call's conversation on OpenAI Realtime (create one per call: the
    ``factory`` does, for ``VoiceConfig(engine=...)``).

    ``api_key``: the key (a local server takes any). ``model``: the realtime model.
    ``voice``: the output voice. ``base_url`` / ``websocket_base_url``: where the SDK
    connects (a proxy, Azure-compatible gateway or ``FakeOpenAIRealtime``).
    ``transcription_model``: transcribes the caller (``listen()`` and the history
    need it; None turns it off). ``turn_detection``: overrides of the server VAD's
    settings (``threshold``, ``silence_duration_ms``, ``prefix_padding_ms``, or
    ``{"type": "semantic_vad"}``). ``session``: further ``session.update`` fields.
    """

    name = "openai-realtime"

    def __init__(
        self,
        api_key: str | SecretStr,
        model: str = "gpt-realtime",
        *,
        voice: str = "marin",
        system_prompt: str | None = None,
        tools: Iterable[ToolFunc | Tool] = (),
        greeting: str | None = None,
        silence_timeout: float | None = None,
        silence_prompt: str | None = None,
        max_duration: float | None = None,
        audio_format: str = "pcmu",
        transcription_model: str | None = "gpt-4o-mini-transcribe",
        language: str | None = None,
        turn_detection: dict[str, Any] | None = None,
        session: dict[str, Any] | None = None,
        base_url: str | None = None,
        websocket_base_url: str | None = None,
        connect_timeout: float = 10.0,
        reconnect_attempts: int = 3,
        reconnect_delay: float = 0.25,
        restore_items: int = 100,
    ) -> None:
        if not secret_value(api_key):
            raise ConfigError(
                "OpenAIRealtimeEngine needs an api_key (any string for local servers)"
            )
        if audio_format not in _FORMATS:
            raise ConfigError(
                f"OpenAIRealtimeEngine audio_format must be one of {sorted(_FORMATS)}"
            )
        try:
            from openai import AsyncOpenAI
        except ImportError as exc:
            raise ConfigError("OpenAIRealtimeEngine needs: pip install 'voxtra[openai]'") from exc
        self.model = model
        self.voice = voice
        self.greeting = greeting
        self.silence_timeout = silence_timeout
        self.silence_prompt = silence_prompt
        self.max_duration = max_duration
        self.audio_format = audio_format
        self.codec, self.rate = _FORMATS[audio_format]
        self.transcription_model = transcription_model
        self.language = language
        self.turn_detection = dict(turn_detection or {})
        self.session_options = dict(session or {})
        self.connect_timeout = connect_timeout
        self.reconnect_attempts = reconnect_attempts
        self.reconnect_delay = reconnect_delay
        self.restore_items = restore_items
        self.agent = Agent(None, system_prompt=system_prompt, tools=tools)
        """The call's history as heard (user transcripts, assistant answers cut at the
        barge-in, tool calls and results) and its tools. Restored into a new session
        after a reconnect."""
        self.system_prompt = system_prompt
        self.metrics: list[TurnMetrics] = []
        self.call_id = ""
        self.dropped_ms = 0.0
        """Caller audio not sent because the socket was down (reconnecting)."""
        self._client = AsyncOpenAI(
            api_key=secret_value(api_key),
            base_url=base_url,
            websocket_base_url=websocket_base_url,
            max_retries=0,
        )
        if getattr(self._client, "realtime", None) is None:
            raise ConfigError(
                "OpenAIRealtimeEngine needs an openai SDK with client.realtime (>= 1.107)"
            )
        self._callbacks: list[Callable[[PipelineEvent], None]] = []
        self._subscribers: list[_Subscriber] = []
        self._conn: Any = None
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
        self._responses: dict[str, _Response] = {}
        self._active: _Response | None = None
        self._playing: _Response | None = None
        self._outputs: dict[str, _Output] = {}
        self._messages: dict[str, ChatMessage] = {}
        self._own_items: set[str] = set()
        self._partials: dict[str, str] = {}
        self._in_speech = False
        self._awaiting_final = False
        self._last_activity = 0.0
        self._speech_start: float | None = None
        self._speech_end: float | None = None
        self._turn: TurnMetrics | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- construction

    @classmethod
    def factory(
        cls, api_key: str | SecretStr, model: str = "gpt-realtime", **options: Any
    ) -> Callable[[RealtimeOptions], OpenAIRealtimeEngine]:
        """For ``VoiceConfig(engine=...)``: a fresh engine per call, with the call's
        system prompt, tools, greeting and time limits from its ``VoiceConfig``."""

        def build(config: RealtimeOptions) -> OpenAIRealtimeEngine:
            return cls(
                api_key,
                model,
                system_prompt=config.system_prompt,
                tools=config.tools,
                greeting=config.greeting,
                silence_timeout=config.silence_timeout,
                silence_prompt=config.silence_prompt,
                max_duration=config.max_duration,
                **options,
            )

        return build

    @property
    def history(self) -> list[ChatMessage]:
        return self.agent.history

    # -- events

    def on_event(
        self, callback: Callable[[PipelineEvent], None]
    ) -> Callable[[PipelineEvent], None]:
        """Call ``callback(event)`` for every event (inline: keep it quick)."""
        self._callbacks.append(callback)
        return callback

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

    # -- attach / run

    def attach(
        self, media: MediaIO, *, clock: Clock | None = None, call_id: str = ""
    ) -> contextlib.AbstractAsyncContextManager[OpenAIRealtimeEngine]:
        """Connect and stream the call's audio both ways for the block's duration;
        the model answers only when asked (``say``), ``listen`` hears the caller."""
        return self._attach(media, clock, call_id, autonomous=False)

    async def run(
        self, media: MediaIO, *, clock: Clock | None = None, call_id: str = ""
    ) -> EndReason:
        """Converse autonomously (the model answers each turn) until the call ends,
        ``max_duration`` passes or the caller is silent past ``silence_timeout``."""
        async with self._attach(media, clock, call_id, autonomous=True):
            if self.greeting:
                with contextlib.suppress(CallEnded):
                    await self.say(self.greeting)
            return await self._converse()

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
            busy = self._in_speech or self._active is not None or self._still_playing()
            if busy:
                self._last_activity = now
            elif (
                self.silence_timeout is not None
                and now - self._last_activity >= self.silence_timeout
            ):
                if self.silence_prompt and prompts < 1:
                    prompts += 1
                    with contextlib.suppress(CallEnded):
                        await self.say(self.silence_prompt)
                    self._last_activity = self._now()
                else:
                    return EndReason.SILENCE_TIMEOUT
            await self._clock.sleep(0.05)

    @asynccontextmanager
    async def _attach(
        self, media: MediaIO, clock: Clock | None, call_id: str, *, autonomous: bool
    ) -> AsyncIterator[OpenAIRealtimeEngine]:
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
        previous: tuple[Codec, int] | None = None
        if isinstance(media, ConvertingMediaIO):
            # The service takes the telephone's own u-law: ask the transport for it, so
            # no frame is decoded or resampled on the way up.
            previous = media.inbound_format
            media.set_inbound_format(self.codec, self.rate)
        try:
            await self._connect()
            reader = self._spawn(self._read(), "realtime-reader")
            sender = self._spawn(self._send_audio(media), "realtime-sender")
            try:
                yield self
            finally:
                self._closing = True
                for task in (sender, reader):
                    task.cancel()
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)
                self._tasks.clear()
        finally:
            self._closing = True
            self._ended.set()
            self._wake_all()
            await self._close_conn()
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

    # -- the connection

    async def _connect(self) -> None:
        """Open the socket, configure the session, restore the conversation."""
        self._ready.clear()
        manager = self._client.realtime.connect(model=self.model)
        try:
            conn = await asyncio.wait_for(manager.enter(), self.connect_timeout)
        except Exception as exc:
            raise ProviderError(self.name, f"cannot connect: {_describe(exc)}") from exc
        self._conn = conn
        try:
            await self._send({"type": "session.update", "session": self._session_config()})
            for item in self._restore():
                await self._send({"type": "conversation.item.create", "item": item})
        except Exception as exc:
            await self._close_conn()
            raise ProviderError(self.name, f"cannot configure: {_describe(exc)}") from exc
        self._ready.set()

    async def _close_conn(self) -> None:
        conn, self._conn = self._conn, None
        self._ready.clear()
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2.0)

    async def _send(self, event: dict[str, Any]) -> None:
        conn = self._conn
        if conn is None:
            raise ProviderError(self.name, "not connected")
        await conn.send(event)

    def _session_config(self) -> dict[str, Any]:
        detection: dict[str, Any] = {
            "type": "server_vad",
            **self.turn_detection,
            # The engine decides what a barge-in cuts (a non-interruptible say is not),
            # and whether the model answers on its own (only in converse()).
            "create_response": self._autonomous,
            "interrupt_response": False,
        }
        audio_in: dict[str, Any] = {
            "format": _format(self.audio_format),
            "turn_detection": detection,
        }
        if self.transcription_model:
            transcription: dict[str, Any] = {"model": self.transcription_model}
            if self.language:
                transcription["language"] = self.language
            audio_in["transcription"] = transcription
        session: dict[str, Any] = {
            "type": "realtime",
            "output_modalities": ["audio"],
            "instructions": self.system_prompt or "",
            "audio": {
                "input": audio_in,
                "output": {"format": _format(self.audio_format), "voice": self.voice},
            },
        }
        if self.agent.tools:
            session["tools"] = [
                {
                    "type": "function",
                    "name": spec.name,
                    "description": spec.description,
                    "parameters": spec.parameters,
                }
                for spec in self.agent.tool_specs
            ]
            session["tool_choice"] = "auto"
        session.update(self.session_options)
        return session

    def _restore(self) -> list[dict[str, Any]]:
        """The history (as the caller heard it) as items for a new session."""
        items: list[dict[str, Any]] = []
        for message in self.agent.history:
            if message.role == "user" and message.content:
                items.append(_message("user", "input_text", message.content))
            elif message.role == "assistant":
                if message.content:
                    items.append(_message("assistant", "output_text", message.content))
                for call in message.tool_calls:
                    items.append(
                        {
                            "type": "function_call",
                            "call_id": call.id,
                            "name": call.name,
                            "arguments": json.dumps(call.arguments),
                        }
                    )
            elif message.role == "tool" and message.tool_call_id:
                items.append(
                    {
                        "type": "function_call_output",
                        "call_id": message.tool_call_id,
                        "output": message.content,
                    }
                )
        items = items[-self.restore_items :] if self.restore_items else []
        while items and items[0]["type"] == "function_call_output":
            items.pop(0)  # its call was cut off by the limit: the service would refuse it
        for item in items:
            item["id"] = self._own_id()
        return items

    def _own_id(self) -> str:
        item_id = f"vx_{uuid.uuid4().hex[:24]}"
        self._own_items.add(item_id)
        return item_id

    async def _reconnect(self, exc: BaseException) -> None:
        message = f"connection lost: {_describe(exc)}"
        logger.warning("call %s: %s: %s; reconnecting", self.call_id, self.name, message)
        self._emit(ProviderErrorEvent(self.name, message, self._now(), "realtime"))
        await self._close_conn()
        self._end_responses(lost=True)
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
        self._failed = ProviderError(self.name, f"reconnect failed: {_describe(last)}")
        self._emit(ProviderErrorEvent(self.name, str(self._failed), self._now(), "realtime"))
        self._wake_all()

    # -- input: the caller's audio

    async def _send_audio(self, media: MediaIO) -> None:
        converter = ChunkConverter(self.codec, self.rate)
        try:
            async for frame in media.frames():
                chunk = converter.convert(frame)  # the same object for u-law at 8 kHz
                if not chunk.data:
                    continue
                if not self._ready.is_set():
                    self.dropped_ms += chunk.duration_ms
                    continue
                try:
                    await self._send(
                        {
                            "type": "input_audio_buffer.append",
                            "audio": base64.b64encode(chunk.data).decode("ascii"),
                        }
                    )
                except Exception:
                    self.dropped_ms += chunk.duration_ms  # the reader sees the socket go
        finally:
            self._ended.set()
            self._wake_all()

    # -- the service's events

    async def _read(self) -> None:
        while not self._closing:
            conn = self._conn
            if conn is None:
                if self._failed is not None:
                    return
                await asyncio.sleep(0.01)
                continue
            try:
                raw = await conn.recv_bytes()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._closing:
                    return
                await self._reconnect(exc)
                if self._failed is not None:
                    return
                continue
            try:
                event = json.loads(raw)
            except ValueError:
                logger.warning("%s: a message that is not JSON", self.name)
                continue
            try:
                await self._handle(event)
            except Exception:
                logger.exception("call %s: %s: handling %s failed", self.call_id, self.name,
                                 event.get("type"))  # fmt: skip

    async def _handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type", "")
        if kind == "response.output_audio.delta":
            await self._on_audio(event)
        elif kind == "input_audio_buffer.speech_started":
            await self._on_speech_started(event)
        elif kind == "input_audio_buffer.speech_stopped":
            self._on_speech_stopped()
        elif kind == "response.created":
            self._on_response_created(event.get("response") or {})
        elif kind == "response.output_audio_transcript.delta":
            self._on_transcript_delta(event)
        elif kind == "response.output_audio_transcript.done":
            self._on_transcript_done(event)
        elif kind == "response.output_audio.done":
            out = self._outputs.get(str(event.get("item_id")))
            if out is not None:
                out.done = True
        elif kind == "conversation.item.added":
            self._on_item_added(event.get("item") or {})
        elif kind == "conversation.item.input_audio_transcription.delta":
            self._on_input_delta(event)
        elif kind == "conversation.item.input_audio_transcription.completed":
            self._on_input_done(event)
        elif kind == "conversation.item.input_audio_transcription.failed":
            self._awaiting_final = False
            error = event.get("error") or {}
            self._report(f"transcription failed: {error.get('message', '')}", stage="stt")
        elif kind == "response.function_call_arguments.done":
            self._on_function_call(event)
        elif kind == "response.done":
            await self._on_response_done(event.get("response") or {})
        elif kind == "error":
            self._on_error(event.get("error") or {})

    def _report(self, message: str, *, stage: str = "realtime") -> None:
        logger.warning("call %s: %s: %s", self.call_id, self.name, message)
        self._emit(ProviderErrorEvent(self.name, message, self._now(), stage))

    def _on_error(self, error: dict[str, Any]) -> None:
        code = error.get("code")
        if code in _QUIET_ERRORS:
            return
        message = f"{error.get('type', 'error')}: {error.get('message', '')}"
        if code:
            message += f" ({code})"
        event_id = str(error.get("event_id") or "")
        waiter = self._waiters.pop(event_id, None) if event_id else None
        if waiter is not None and not waiter.response.done():
            waiter.response.set_exception(ProviderError(self.name, message))
        self._report(message)

    # -- responses and their audio

    def _on_response_created(self, data: dict[str, Any]) -> None:
        metadata = data.get("metadata") or {}
        say_id = metadata.get("voxtra_say") if isinstance(metadata, dict) else None
        waiter = self._waiters.pop(str(say_id), None) if say_id else None
        response = _Response(
            str(data.get("id") or uuid.uuid4().hex),
            say_id=str(say_id) if say_id else None,
            interruptible=waiter.interruptible if waiter is not None else True,
        )
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

    def _response_of(self, event: dict[str, Any]) -> _Response | None:
        return self._responses.get(str(event.get("response_id")))

    def _output_of(self, event: dict[str, Any]) -> tuple[_Response | None, _Output | None]:
        response = self._response_of(event)
        item_id = str(event.get("item_id"))
        out = self._outputs.get(item_id)
        if out is None and response is not None:
            out = _Output(item_id, self._messages.get(item_id))
            self._outputs[item_id] = out
            response.outputs.append(out)
        return response, out

    async def _on_audio(self, event: dict[str, Any]) -> None:
        response, out = self._output_of(event)
        media = self._media
        if response is None or out is None or media is None:
            return
        if response.interrupted:
            return  # sent before the service saw our cancel: never played
        try:
            data = base64.b64decode(event.get("delta") or "")
        except ValueError:
            return
        if not data:
            return
        chunk = AudioChunk(data, self.rate, self.codec)
        now = self._now()
        await media.send(chunk)
        end = media.played_ms + media.queued_ms
        if out.start_pos is None:
            out.start_pos = end - chunk.duration_ms
        out.end_pos = end
        out.audio_ms += chunk.duration_ms
        self._playing = response
        metrics = response.metrics
        if metrics is not None and metrics.first_frame_out is None:
            metrics.tts_first_byte = now
            metrics.first_frame_out = self._now()

    def _on_transcript_delta(self, event: dict[str, Any]) -> None:
        response, out = self._output_of(event)
        if out is None or (response is not None and response.interrupted):
            return
        out.transcript += str(event.get("delta") or "")
        metrics = response.metrics if response is not None else None
        if metrics is not None and metrics.llm_first_token is None:
            metrics.llm_first_token = self._now()

    def _on_transcript_done(self, event: dict[str, Any]) -> None:
        response, out = self._output_of(event)
        if out is None or (response is not None and response.interrupted):
            return
        out.transcript = str(event.get("transcript") or out.transcript)
        if out.message is not None:
            out.message.content = out.transcript

    async def _on_response_done(self, data: dict[str, Any]) -> None:
        response = self._responses.get(str(data.get("id")))
        if response is None:
            return
        response.done = True
        if self._active is response:
            self._active = None
        status = data.get("status")
        if status == "failed":
            details = data.get("status_details") or {}
            error = details.get("error") or {}
            response.error = str(error.get("message") or "the response failed")
            self._report(f"response failed: {response.error}")
        text = " ".join(o.transcript for o in response.outputs if o.transcript)
        if not response.interrupted:
            self._emit(AgentResponseEvent(text, tuple(response.calls), self._now()))
        if response.metrics is not None:
            metrics = response.metrics
            metrics.interrupted = response.interrupted
            metrics.at = self._now()
            self.metrics.append(metrics)
            self._emit(metrics)
        if response.calls and not response.interrupted:
            self._spawn(self._after_tools(response), "realtime-tools")
        response.finished.set()
        if not response.has_audio:
            self._responses.pop(response.id, None)

    def _still_playing(self) -> bool:
        response, media = self._playing, self._media
        if response is None or media is None:
            return False
        return media.queued_ms > 0 and media.played_ms < response.end_pos - 1e-6

    def _end_responses(self, *, lost: bool) -> None:
        """The socket went: no more events for the responses in flight."""
        for response in list(self._responses.values()):
            if not response.done:
                response.done = True
                response.lost = lost
                response.finished.set()
        self._active = None
        for waiter in self._waiters.values():
            if not waiter.response.done():
                waiter.response.set_exception(
                    ProviderError(self.name, "connection lost before the answer started")
                )
        self._waiters.clear()

    # -- the caller's side

    async def _on_speech_started(self, event: dict[str, Any]) -> None:
        now = self._now()
        self._in_speech = True
        self._awaiting_final = False
        self._last_activity = now
        self._speech_start = now
        target = self._active
        if target is None and self._still_playing():
            target = self._playing
        if target is not None and target.interruptible and not target.interrupted:
            await self._barge_in(target, now)
        self._emit(SpeechStartedEvent(now))

    async def _barge_in(self, response: _Response, now: float) -> None:
        media = self._media
        assert media is not None
        # Flush first: the caller must stop hearing the agent before anything else.
        played = media.played_ms
        await media.flush()
        response.interrupted = True
        if not response.done:
            with contextlib.suppress(Exception):
                await self._send({"type": "response.cancel", "response_id": response.id})
        heard_text = response.heard_text(played)
        played_ms = response.played_ms(played)
        for out in response.outputs:
            if out.start_pos is None:
                continue
            heard_ms, text = out.heard_ms(played), out.heard_text(played)
            if heard_ms < out.audio_ms - 1e-6:
                with contextlib.suppress(Exception):
                    await self._send(
                        {
                            "type": "conversation.item.truncate",
                            "item_id": out.item_id,
                            "content_index": 0,
                            "audio_end_ms": int(heard_ms),
                        }
                    )
            out.transcript, out.audio_ms, out.done = text, heard_ms, True
            if out.message is not None:
                out.message.content = text
                if not text and not out.message.tool_calls:
                    self._drop_message(out.message)
        response.heard = (heard_text, played_ms)
        self._emit(BargeInEvent(heard_text, played_ms, now))
        response.finished.set()

    def _on_speech_stopped(self) -> None:
        now = self._now()
        self._in_speech = False
        self._awaiting_final = bool(self.transcription_model)
        self._last_activity = now
        self._speech_end = now
        self._turn = TurnMetrics(speech_end=now)
        started = self._speech_start
        self._emit(SpeechEndedEvent(now, (now - started) * 1000.0 if started is not None else 0.0))

    def _on_item_added(self, item: dict[str, Any]) -> None:
        item_id = str(item.get("id") or "")
        if not item_id or item_id in self._own_items or item_id in self._messages:
            return
        if item.get("type") == "message" and item.get("role") in ("user", "assistant"):
            message = ChatMessage(role=item["role"])
            self._messages[item_id] = message
            self.agent.history.append(message)
            out = self._outputs.get(item_id)
            if out is not None:
                out.message = message

    def _on_input_delta(self, event: dict[str, Any]) -> None:
        item_id = str(event.get("item_id"))
        text = self._partials.get(item_id, "") + str(event.get("delta") or "")
        self._partials[item_id] = text
        if text.strip():
            self._emit(UserTranscriptEvent(text.strip(), is_final=False, at=self._now()))

    def _on_input_done(self, event: dict[str, Any]) -> None:
        item_id = str(event.get("item_id"))
        self._partials.pop(item_id, None)
        self._awaiting_final = False
        text = str(event.get("transcript") or "").strip()
        message = self._messages.get(item_id)
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

    def _on_function_call(self, event: dict[str, Any]) -> None:
        response = self._response_of(event)
        name = str(event.get("name") or "")
        call_id = str(event.get("call_id") or "")
        try:
            args = json.loads(event.get("arguments") or "{}")
        except ValueError:
            args = None
        call = ToolCall(call_id, name, args if isinstance(args, dict) else {})
        self.agent.history.append(ChatMessage(role="assistant", tool_calls=[call]))
        task = self._spawn(self._run_tool(call, bad_args=not isinstance(args, dict)), "tool")
        if response is not None:
            response.calls.append(call)
            response.tool_tasks.append(task)

    async def _run_tool(self, call: ToolCall, *, bad_args: bool) -> None:
        """Run one tool (in its own task: audio and events keep flowing) and send its
        result back as a ``function_call_output`` item."""
        if bad_args:
            result: Any = "error: the arguments are not a JSON object"
        else:
            result = await self.agent.call_tool(call)
        output = result if isinstance(result, str) else json.dumps(result, default=str)
        self.agent.history.append(ChatMessage(role="tool", content=output, tool_call_id=call.id))
        await self._ready.wait()
        item = {
            "id": self._own_id(),
            "type": "function_call_output",
            "call_id": call.id,
            "output": output,
        }
        try:
            await self._send({"type": "conversation.item.create", "item": item})
        except Exception as exc:
            logger.warning("call %s: tool result not sent: %s", self.call_id, exc)

    async def _after_tools(self, response: _Response) -> None:
        """Once every tool of ``response`` has answered, ask for the next response
        (unless the caller has started another turn meanwhile)."""
        await asyncio.gather(*response.tool_tasks, return_exceptions=True)
        if self._in_speech or self._active is not None or self._closing:
            return
        try:
            await self._send({"type": "response.create"})
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
        """Have the model say ``text``; return once played or cut by the caller."""
        self._check()
        async with self._speak_lock:
            await self._wait_idle()
            say_id = uuid.uuid4().hex[:16]
            event_id = f"vx_say_{say_id}"
            waiter = _Waiter(interruptible)
            self._waiters[say_id] = waiter
            self._waiters[event_id] = waiter
            try:
                await self._send(
                    {
                        "type": "response.create",
                        "event_id": event_id,
                        "response": {
                            "instructions": SAY_INSTRUCTIONS.format(text=text),
                            "metadata": {"voxtra_say": say_id},
                        },
                    }
                )
                response = await self._until(waiter.response)
            finally:
                self._waiters.pop(say_id, None)
                self._waiters.pop(event_id, None)
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
            text_out = " ".join(o.transcript for o in response.outputs if o.transcript)
            return SayResult(False, text_out, sum(o.audio_ms for o in response.outputs))

    async def _wait_idle(self) -> None:
        """Wait for the model's current response to end (one response at a time)."""
        while self._active is not None:
            await self._until(self._active.finished.wait())

    async def _until(self, aw: Any) -> Any:
        """Await ``aw``; CallEnded if the call ends first, the failure if the engine fails."""
        task = asyncio.ensure_future(aw)
        ended = asyncio.ensure_future(self._ended.wait())
        failed = asyncio.ensure_future(self._failed_event.wait())
        try:
            await asyncio.wait({task, ended, failed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
            failed.cancel()
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if task.done() and not task.cancelled():
            return task.result()
        if self._failed is not None:
            raise self._failed
        raise CallEnded(self.call_id)

    def _wake_all(self) -> None:
        self._finals_changed.set()
        if self._failed is not None:
            self._failed_event.set()

    async def listen(self, timeout: float | None = None) -> UserTranscriptEvent | None:
        """The caller's next final transcript; None after ``timeout`` s of silence.

        Finals heard while nobody listens are kept (the last 16). The timeout counts
        silence: it does not run out while the caller speaks or a transcript is due."""
        self._check()
        if not self.transcription_model:
            raise ConfigError("listen() needs OpenAIRealtimeEngine(transcription_model=...)")
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


def _format(name: str) -> dict[str, Any]:
    return {"type": "audio/pcm", "rate": 24000} if name == "pcm" else {"type": f"audio/{name}"}


def _message(role: str, kind: str, text: str) -> dict[str, Any]:
    return {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ProviderError):
        return str(exc).removeprefix(f"{exc.provider}: ")
    status = getattr(exc, "status_code", None)
    message = str(exc) or type(exc).__name__
    if status is not None:
        return f"HTTP {status}: {message}"
    return f"{type(exc).__name__}: {message}"
