"""GeminiLiveEngine: a whole call's conversation on one Gemini Live session.

The same :class:`~voxtra.providers.speech_to_speech.SpeechToSpeechEngine` as
:class:`~voxtra.providers.openai_realtime.OpenAIRealtimeEngine` (so ``call.say``,
``call.listen`` and ``converse()`` drive it unchanged), on ``google-genai``'s live
client (``client.aio.live.connect``; extra ``voxtra[gemini]``)::

    VoiceConfig(engine=GeminiLiveEngine.factory(api_key, voice="Puck"))

Where Gemini Live differs from OpenAI Realtime, and what the engine does about it:

- Audio: Gemini takes PCM16 at 16 kHz and answers in PCM16 at 24 kHz, so the caller's
  u-law is converted once on the way up (by the transport when it can, else here)
  and the answer once on the way down (by the transport).
- Barge-in: the service's ``voiceActivity`` ``ACTIVITY_START`` (or an
  ``interrupted`` answer) flushes the transport at once. The service itself stops
  generating (its default ``START_OF_ACTIVITY_INTERRUPTS``); it has no truncation
  message, so its own copy of the answer ends where generation stopped, while the
  engine's history (``agent.history``, what a reconnect restores) ends where the caller
  stopped hearing it. ``say(interruptible=False)`` keeps playing what was received,
  but the service may already have stopped generating the rest.
- Turns: Gemini answers every caller turn by itself. While attached for
  ``say``/``listen`` (not ``converse``) an answer nobody asked for is not played and
  not kept in the history (the service still counts it as said).
- Tools: ``toolCall`` -> the function (own task) -> ``toolResponse``; the model goes on
  by itself.
- An answer that does not start within ``llm_timeout``: the service has no message to
  cancel it, so the engine moves to a new (resumed) session; the rest is as for OpenAI
  (the event, ``ProviderTimeout`` from ``say``, the fallback line; see ``_abandon``).
- Reconnect: Gemini's session resumption. The session is opened with
  ``session_resumption`` on, the service sends ``sessionResumptionUpdate`` handles
  between turns, and a dropped socket is reopened with the last resumable handle: the
  service restores its own conversation, and only what the engine's history gained
  since that handle goes as ``clientContent`` turns. A refused handle (expired, unknown)
  falls back to a new session with the whole history (as heard) as ``clientContent``;
  so does ``session_resumption=False``. When the service announces it will close the
  connection (``goAway``: it ends every connection after some minutes), the engine
  moves to a new session with the handle at once if it is quiet (no answer playing out
  of the service or asked for, no caller speech, no tool running), else with the fresh
  handle the service sends after the turn, before the service cuts it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

from pydantic import SecretStr

from voxtra.config import secret_value
from voxtra.errors import ConfigError, ProviderError
from voxtra.media.frames import AudioChunk, Codec
from voxtra.pipeline.agent import Tool, ToolFunc
from voxtra.providers.base import ChatMessage, ToolCall
from voxtra.providers.sdk_clients import reused_client
from voxtra.providers.speech_to_speech import (
    SAY_INSTRUCTIONS,
    SpeechOutput,
    SpeechResponse,
    SpeechToSpeechEngine,
    describe,
)

__all__ = ["GeminiLiveEngine"]

logger = logging.getLogger(__name__)


class GeminiLiveEngine(SpeechToSpeechEngine):
    """One call's conversation on Gemini Live (one per call: ``factory`` does).

    ``api_key``: the Gemini API key. ``model``: a Live model. ``voice``: a prebuilt
    voice. ``language``: the speech language code. ``activity_detection``: the
    service VAD's settings (``automatic_activity_detection``: ``silence_duration_ms``,
    ``prefix_padding_ms``, sensitivities). ``config``: further ``LiveConnectConfig``
    fields. ``base_url`` / ``ssl_context``: where the SDK connects (a gateway, or
    ``FakeGeminiLive`` with its ``client_ssl_context``). ``session_resumption``: resume
    the service's session after a dropped or ended connection (see the module doc).
    ``context_compression``: the service's sliding context window, so a call is not cut
    when the session reaches its token limit.
    """

    name = "gemini-live"
    in_format = (Codec.PCM16, 16000)
    out_format = (Codec.PCM16, 24000)

    def __init__(
        self,
        api_key: str | SecretStr,
        # The Gemini API's changelog: gemini-live-2.5-flash-preview was shut down on
        # 2025-12-09; this native-audio model was released for the Live API on
        # 2025-12-12 (16 kHz PCM in, 24 kHz out, as above).
        model: str = "gemini-2.5-flash-native-audio-preview-12-2025",
        *,
        voice: str = "Puck",
        language: str | None = None,
        activity_detection: dict[str, Any] | None = None,
        config: dict[str, Any] | None = None,
        base_url: str | None = None,
        ssl_context: Any = None,
        session_resumption: bool = True,
        context_compression: bool = True,
        system_prompt: str | None = None,
        tools: Iterable[ToolFunc | Tool] = (),
        **options: Any,
    ) -> None:
        if not secret_value(api_key):
            raise ConfigError("GeminiLiveEngine needs an api_key")
        try:
            from google import genai
            from google.genai import types
        except ImportError as exc:
            raise ConfigError("GeminiLiveEngine needs: pip install 'voxtra[gemini]'") from exc
        super().__init__(system_prompt=system_prompt, tools=tools, **options)
        self.model = model
        self.voice = voice
        self.language = language
        self.activity_detection = dict(activity_detection or {})
        self.config_options = dict(config or {})
        self.session_resumption = session_resumption
        self.context_compression = context_compression
        http: dict[str, Any] = {}
        if base_url is not None:
            http["base_url"] = base_url
        if ssl_context is not None:
            http["async_client_args"] = {"ssl": ssl_context}
        self._types = types
        key = secret_value(api_key)
        self._client = reused_client(
            "gemini",
            key,
            (base_url, ssl_context),
            lambda: genai.Client(
                api_key=key, http_options=types.HttpOptions(**http) if http else None
            ),
        )
        self._cm: Any = None
        self._session: Any = None
        self._stream: AsyncIterator[Any] | None = None
        self._pending_say: str | None = None
        self._model: SpeechResponse | None = None
        self._muted = False
        self._models = 0
        self._user_item: str | None = None
        self._user_text = ""
        self.resume_handle: str | None = None
        """The service's last resumable session handle (a reconnect resumes it)."""
        self._handle_mark: ChatMessage | None = None
        """The last history message the handle's session holds (None: from the start)."""
        self._going_away = False
        """The service announced the end of this connection: move at a quiet moment."""
        self._answer_due = False
        """The caller's turn ended and the service's answer to it has not started yet."""

    # -- the connection

    def _config(self, handle: str | None = None) -> dict[str, Any]:
        speech: dict[str, Any] = {
            "voice_config": {"prebuilt_voice_config": {"voice_name": self.voice}}
        }
        if self.language:
            speech["language_code"] = self.language
        config: dict[str, Any] = {
            "response_modalities": ["AUDIO"],
            "speech_config": speech,
            "input_audio_transcription": {},
            "output_audio_transcription": {},
            "realtime_input_config": {"automatic_activity_detection": self.activity_detection},
        }
        if self.system_prompt:
            config["system_instruction"] = self.system_prompt
        if self.agent.tools:
            config["tools"] = [
                {
                    "function_declarations": [
                        {
                            "name": spec.name,
                            "description": spec.description,
                            "parameters_json_schema": spec.parameters,
                        }
                        for spec in self.agent.tool_specs
                    ]
                }
            ]
        if self.session_resumption:
            config["session_resumption"] = {"handle": handle}
        if self.context_compression:
            # Without it the service ends an audio session after about 15 minutes (its
            # token limit, per the Live API's session guide); the sliding window drops
            # the oldest turns instead, so a long call goes on.
            config["context_window_compression"] = {"sliding_window": {}}
        config.update(self.config_options)
        return config

    async def _open(self) -> None:
        handle = self.resume_handle if self.session_resumption else None
        since = self._since_handle() if handle is not None else None
        if since is None:
            handle = None  # (the handle's place in the history is gone: restore it all)
        try:
            await self._open_session(handle)
        except ProviderError as exc:
            if handle is None:
                raise
            logger.info(
                "call %s: %s: resuming refused (%s): a new session with the history",
                self.call_id,
                self.name,
                exc,
            )
            self.resume_handle, handle = None, None
            await self._open_session(None)
        self._stream = None
        self._model = None
        self._pending_say = None  # (a say sent on the old socket: failed or given up)
        self._going_away = False
        self._answer_due = False
        turns = self._turns(since if handle is not None and since is not None else None)
        if turns:
            try:
                await self._session.send_client_content(turns=turns, turn_complete=False)
            except Exception as exc:
                raise ProviderError(self.name, f"cannot restore: {describe(exc)}") from exc

    async def _open_session(self, handle: str | None) -> None:
        config = self._types.LiveConnectConfig(**self._config(handle))
        cm = self._client.aio.live.connect(model=self.model, config=config)
        try:
            self._session = await cm.__aenter__()
        except Exception as exc:
            raise ProviderError(self.name, f"cannot connect: {describe(exc)}") from exc
        self._cm = cm

    def _since_handle(self) -> list[ChatMessage] | None:
        """The history messages added after the resume handle was issued; None when its
        mark is no longer in the history."""
        history = self.agent.history
        start = 0
        if self._handle_mark is not None:
            found = [i for i, m in enumerate(history) if m is self._handle_mark]
            if not found:
                return None
            start = found[0] + 1
        later = {id(m) for m in history[start:]}
        return [m for m in self._restorable() if id(m) in later]

    def _turns(self, messages: list[ChatMessage] | None = None) -> list[Any]:
        """``messages`` (default: the history as heard, ``_restorable``) as ``Content``
        turns (tool calls as function parts)."""
        types = self._types
        turns: list[Any] = []
        for message in self._restorable() if messages is None else messages:
            if message.role == "user" and message.content:
                turns.append(types.Content(role="user", parts=[types.Part(text=message.content)]))
            elif message.role == "assistant":
                parts = [types.Part(text=message.content)] if message.content else []
                parts += [
                    types.Part(
                        function_call=types.FunctionCall(id=c.id, name=c.name, args=c.arguments)
                    )
                    for c in message.tool_calls
                ]
                if parts:
                    turns.append(types.Content(role="model", parts=parts))
            elif message.role == "tool" and message.tool_call_id:
                name = self._tool_name(message.tool_call_id)
                response = types.FunctionResponse(
                    id=message.tool_call_id, name=name, response={"result": message.content}
                )
                turns.append(
                    types.Content(role="user", parts=[types.Part(function_response=response)])
                )
        return turns

    def _tool_name(self, call_id: str) -> str:
        for message in self.agent.history:
            for call in message.tool_calls:
                if call.id == call_id:
                    return call.name
        return ""

    async def _close(self) -> None:
        cm, self._cm, self._session, self._stream = self._cm, None, None, None
        if cm is not None:
            await cm.__aexit__(None, None, None)

    async def _next_event(self) -> Any:
        session = self._session
        if session is None:
            raise ProviderError(self.name, "not connected")
        if self._stream is None:
            self._stream = session.receive()
        try:
            return await anext(self._stream)
        except StopAsyncIteration:  # receive() ends after each turn: start the next
            self._stream = None
            return None

    # -- what the engine sends

    async def _send_audio(self, chunk: AudioChunk) -> None:
        blob = self._types.Blob(data=chunk.data, mime_type=f"audio/pcm;rate={chunk.sample_rate}")
        await self._session.send_realtime_input(audio=blob)

    async def _request_speech(self, text: str, say_id: str) -> None:
        self._pending_say = say_id
        turn = self._types.Content(
            role="user", parts=[self._types.Part(text=SAY_INSTRUCTIONS.format(text=text))]
        )
        await self._session.send_client_content(turns=turn, turn_complete=True)

    async def _cancel(
        self, response: SpeechResponse, cuts: list[tuple[SpeechOutput, float]]
    ) -> None:
        """Nothing to send: the service stops generating when the caller speaks, and has
        no message to truncate its copy; the engine's history holds what was heard."""

    async def _abandon(self, response: SpeechResponse | None) -> None:
        """An answer that did not start within ``llm_timeout``: the Live API has no message
        to cancel one (only the caller's speech interrupts it), and the stalls users
        report of it (googleapis/python-genai#1224, google-gemini/cookbook#1225: the
        socket open, no error, nothing more from the service) do not end by waiting. So
        a move to a new session, resumed with the handle: the service's conversation as
        it was before the turn, the caller's words restored as text; nothing of the hung
        answer can come on it. Not when this session owes nothing (a reconnect lost
        the answer: the new session is fresh). Nor while the caller speaks: their speech
        interrupts the answer at the service, and a move then cut their words in two
        (the start went to the old session, never transcribed); a service still hung
        misses the caller's turn next, and that deadline moves it, the caller done."""
        if response is None and not self._answer_due and self._pending_say is None:
            return
        if self._in_speech:
            self._pending_say = None  # (what the service says next answers the caller)
            return
        self._renew("no answer in time")

    async def _send_tool_result(self, call: ToolCall, output: str) -> None:
        response = self._types.FunctionResponse(
            id=call.id, name=call.name, response={"result": output}
        )
        await self._session.send_tool_response(function_responses=[response])

    def _quiet(self) -> bool:
        """Also not while the service owes the caller an answer: Gemini answers every
        turn by itself, and a move between the end of the caller's turn and the start
        of that answer lost it (the handle predates the turn, and the turn restored as
        text is not answered): the caller's question went unanswered, with no error."""
        return super()._quiet() and not self._answer_due

    # -- the service's messages

    def _model_turn(self, *, speech: bool = True) -> SpeechResponse:
        """The current answer, started by its first content (``speech``: audio or its
        transcript, whose history entry is made then, after any tool call before it)."""
        if self._model is None:
            self._finish_user()
            self._answer_due = False
            self._models += 1
            say_id, self._pending_say = self._pending_say, None
            turn = self._on_response_started(f"turn-{self._models}", say_id)
            # Attached for say/listen, the model still answers the caller's turns by
            # itself: such an answer is not played nor kept in the history (nor one
            # given up on: muted already).
            if say_id is None and not self._autonomous:
                turn.muted = True
            self._muted = turn.muted
            self._model = turn
        if speech and not self._muted:
            self._add_message(self._model.id, "assistant")
        return self._model

    def _finish_user(self) -> None:
        item, self._user_item = self._user_item, None
        if item is not None:
            self._on_input_done(item, self._user_text)
        self._user_text = ""

    async def _end_turn(self) -> None:
        turn, self._model = self._model, None
        if turn is None:
            return
        if not self._muted:
            out = self._outputs.get(turn.id)
            self._on_transcript_done(turn, turn.id, (out.transcript if out else "").strip())
        self._on_audio_done(turn.id)
        await self._on_response_done(turn)

    async def _handle(self, message: Any) -> None:
        if message is None:
            return
        activity = getattr(message, "voice_activity", None)
        if activity is not None:
            kind = str(getattr(activity.voice_activity_type, "value", activity.voice_activity_type))
            if kind == "ACTIVITY_START":
                self._finish_user()
                self._user_item = f"user-{self._models}-{id(activity)}"
                self._add_message(self._user_item, "user")
                await self._on_speech_started()
            elif kind == "ACTIVITY_END":
                self._answer_due = True
                self._on_speech_stopped()
        content = message.server_content
        if content is not None:
            if content.input_transcription is not None:
                text = content.input_transcription.text or ""
                if self._user_item is None and text:
                    self._user_item = f"user-{self._models}-{id(content)}"
                    self._add_message(self._user_item, "user")
                if text and self._user_item is not None:
                    self._user_text += text
                    self._on_input_delta(self._user_item, text)
                if content.input_transcription.finished:
                    self._finish_user()
            if content.interrupted:
                turn = self._model
                if turn is None and self._pending_say is not None:
                    # The caller spoke before the say's answer started: the service
                    # dropped it and answers the caller instead. The say ends now; it
                    # used to wait out llm_timeout (a false timeout, and a move to a new
                    # session that cut the caller's words in two), or take the answer
                    # to the caller's turn for its own and play it.
                    say_id, self._pending_say = self._pending_say, None
                    self._on_say_dropped(say_id)
                if turn is not None and not turn.interrupted and turn.interruptible:
                    await self._barge_in(turn, self._now())
                await self._end_turn()
            if content.model_turn is not None and content.model_turn.parts:
                turn = self._model_turn()
                for part in content.model_turn.parts:
                    blob = part.inline_data
                    if blob is not None and blob.data and not self._muted:
                        await self._on_audio(turn, turn.id, blob.data)
            if content.output_transcription is not None and content.output_transcription.text:
                turn = self._model_turn()
                if not self._muted:
                    self._on_transcript_delta(turn, turn.id, content.output_transcription.text)
            if content.turn_complete:
                self._finish_user()
                self._answer_due = False  # the service's turn is over, answered or not
                await self._end_turn()
        tool_call = message.tool_call
        if tool_call is not None:
            turn = self._model_turn(speech=False)
            for call in tool_call.function_calls or ():
                self._on_function_call(turn, call.id or "", call.name or "", call.args or {})
        fresh = False  # a moment to move at: a new handle, or the notice itself
        update = message.session_resumption_update
        if update is not None and update.resumable and update.new_handle:
            self.resume_handle = update.new_handle
            history = self.agent.history
            self._handle_mark = history[-1] if history else None
            fresh = True
        if message.go_away is not None:
            logger.info(
                "call %s: %s: the service will close the session in %s",
                self.call_id,
                self.name,
                message.go_away.time_left,
            )
            self._going_away = fresh = True
        if fresh and self._going_away and self.resume_handle is not None and self._quiet():
            self._renew("the service is closing this one")
