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
- An answer that does not start within ``llm_timeout`` (a socket alive, a model that
  hangs) is given up: ``ProviderErrorEvent(timed_out=True)``, ``response.cancel``;
  ``say`` raises ``ProviderTimeout``, a caller's turn gets ``fallback_text`` from
  ``fallback_tts`` (see :class:`~voxtra.providers.speech_to_speech.SpeechToSpeechEngine`).
- A dropped socket is reconnected within the call (``reconnect_attempts``), the session
  configured again and the conversation so far (``history``, as heard) restored as
  items, the last ``restore_items`` of them.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Iterable
from typing import Any

from pydantic import SecretStr

from voxtra.config import secret_value
from voxtra.errors import ConfigError, ProviderError
from voxtra.media.frames import AudioChunk, Codec
from voxtra.pipeline.agent import Tool, ToolFunc
from voxtra.providers.base import ToolCall
from voxtra.providers.sdk_clients import reused_client
from voxtra.providers.speech_to_speech import (
    SAY_INSTRUCTIONS,
    SpeechOutput,
    SpeechResponse,
    SpeechToSpeechEngine,
    describe,
)

__all__ = ["OpenAIRealtimeEngine"]

logger = logging.getLogger(__name__)

_FORMATS = {"pcmu": (Codec.ULAW, 8000), "pcma": (Codec.ALAW, 8000), "pcm": (Codec.PCM16, 24000)}
_QUIET_ERRORS = {"response_cancel_not_active"}
"""Error codes that are a race, not a failure: the engine cancels on barge-in and the
response may have ended a moment before the cancel arrived."""


class OpenAIRealtimeEngine(SpeechToSpeechEngine):
    """One call's conversation on OpenAI Realtime (create one per call: ``factory``
    does, for ``VoiceConfig(engine=OpenAIRealtimeEngine.factory(api_key, ...))``).

    ``api_key``: the key (a local server takes any). ``model``: the realtime model.
    ``voice``: the output voice. ``base_url`` / ``websocket_base_url``: where the SDK
    connects (a proxy, a gateway or ``FakeOpenAIRealtime``).
    ``transcription_model``: transcribes the caller (``listen()`` and the history
    need it; None turns it off). ``turn_detection``: overrides of the server VAD's
    settings (``threshold``, ``silence_duration_ms``, ``prefix_padding_ms``, or
    ``{"type": "semantic_vad"}``). ``session``: further ``session.update`` fields.
    The rest (``system_prompt``, ``tools``, ``greeting``, limits, reconnection) is
    :class:`~voxtra.providers.speech_to_speech.SpeechToSpeechEngine`'s.
    """

    name = "openai-realtime"

    def __init__(
        self,
        api_key: str | SecretStr,
        model: str = "gpt-realtime",
        *,
        voice: str = "marin",
        audio_format: str = "pcmu",
        transcription_model: str | None = "gpt-4o-mini-transcribe",
        language: str | None = None,
        turn_detection: dict[str, Any] | None = None,
        session: dict[str, Any] | None = None,
        base_url: str | None = None,
        websocket_base_url: str | None = None,
        system_prompt: str | None = None,
        tools: Iterable[ToolFunc | Tool] = (),
        **options: Any,
    ) -> None:
        if not secret_value(api_key):
            raise ConfigError("OpenAIRealtimeEngine needs an api_key (any string locally)")
        if audio_format not in _FORMATS:
            raise ConfigError(f"OpenAIRealtimeEngine audio_format: one of {sorted(_FORMATS)}")
        try:
            from openai import AsyncOpenAI
        except ImportError as exc:
            raise ConfigError("OpenAIRealtimeEngine needs: pip install 'voxtra[openai]'") from exc
        super().__init__(system_prompt=system_prompt, tools=tools, **options)
        self.model = model
        self.voice = voice
        self.audio_format = audio_format
        self.in_format = self.out_format = _FORMATS[audio_format]
        self.transcription_model = transcription_model
        self.transcribes = bool(transcription_model)
        self.language = language
        self.turn_detection = dict(turn_detection or {})
        self.session_options = dict(session or {})
        key = secret_value(api_key)
        self._client = reused_client(
            "openai",
            key,
            (base_url, websocket_base_url),
            lambda: AsyncOpenAI(
                api_key=key, base_url=base_url, websocket_base_url=websocket_base_url, max_retries=0
            ),
        )
        if getattr(self._client, "realtime", None) is None:
            raise ConfigError(
                "OpenAIRealtimeEngine needs an openai SDK with client.realtime (>= 1.107)"
            )
        self._conn: Any = None
        self._own_items: set[str] = set()

    # -- the connection

    async def _open(self) -> None:
        manager = self._client.realtime.connect(model=self.model)
        try:
            self._conn = await manager.enter()
        except Exception as exc:
            raise ProviderError(self.name, f"cannot connect: {describe(exc)}") from exc
        try:
            await self._send({"type": "session.update", "session": self._session_config()})
            for item in self._restore():
                await self._send({"type": "conversation.item.create", "item": item})
        except Exception as exc:
            raise ProviderError(self.name, f"cannot configure: {describe(exc)}") from exc

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()

    async def _send(self, event: dict[str, Any]) -> None:
        conn = self._conn
        if conn is None:
            raise ProviderError(self.name, "not connected")
        await conn.send(event)

    async def _next_event(self) -> Any:
        conn = self._conn
        if conn is None:
            raise ProviderError(self.name, "not connected")
        return json.loads(await conn.recv_bytes())

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
        for message in self._restorable():
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
        for item in items:
            item["id"] = self._own_id()
        return items

    def _own_id(self) -> str:
        item_id = f"vx_{uuid.uuid4().hex[:24]}"
        self._own_items.add(item_id)
        return item_id

    # -- what the engine sends

    async def _send_audio(self, chunk: AudioChunk) -> None:
        conn = self._conn
        if conn is None:
            raise ProviderError(self.name, "not connected")
        audio = base64.b64encode(chunk.data).decode("ascii")
        # The hot path, 50 times a second per call: the text as the SDK would make it,
        # sent with send_raw. conn.send() runs the SDK's typed transform first: a median
        # 94 us a frame against 7 us this way (bench/realtime_uplink.py).
        await conn.send_raw(f'{{"type": "input_audio_buffer.append", "audio": "{audio}"}}')

    async def _request_speech(self, text: str, say_id: str) -> None:
        await self._send(
            {
                "type": "response.create",
                "event_id": f"vx_say_{say_id}",
                "response": {
                    "instructions": SAY_INSTRUCTIONS.format(text=text),
                    "metadata": {"voxtra_say": say_id},
                },
            }
        )

    async def _cancel(
        self, response: SpeechResponse, cuts: list[tuple[SpeechOutput, float]]
    ) -> None:
        if not response.done:
            await self._send({"type": "response.cancel", "response_id": response.id})
        for out, heard_ms in cuts:
            if out.item_id in self._own_items:
                continue
            await self._send(
                {
                    "type": "conversation.item.truncate",
                    "item_id": out.item_id,
                    "content_index": 0,
                    "audio_end_ms": int(heard_ms),
                }
            )

    async def _abandon(self, response: SpeechResponse | None) -> None:
        """``response.cancel`` for an answer that did not start in time: that response,
        or (none started here yet) whatever response the service has in progress, if no
        other is known to be (the service ends it with ``response.done``; a cancel with
        nothing in progress gets ``response_cancel_not_active``, a quiet error)."""
        if response is not None:
            await self._send({"type": "response.cancel", "response_id": response.id})
        elif self._active is None:
            await self._send({"type": "response.cancel"})

    async def _send_tool_result(self, call: ToolCall, output: str) -> None:
        item = {
            "id": self._own_id(),
            "type": "function_call_output",
            "call_id": call.id,
            "output": output,
        }
        await self._send({"type": "conversation.item.create", "item": item})

    async def _continue_after_tools(self, response: SpeechResponse) -> None:
        await self._send({"type": "response.create"})

    # -- the service's events

    async def _handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type", "")
        response = self._responses.get(str(event.get("response_id")))
        item_id = str(event.get("item_id"))
        if kind == "response.output_audio.delta":
            if response is not None:
                try:
                    audio = base64.b64decode(event.get("delta") or "")
                except ValueError:
                    return
                await self._on_audio(response, item_id, audio)
        elif kind == "input_audio_buffer.speech_started":
            await self._on_speech_started()
        elif kind == "input_audio_buffer.speech_stopped":
            self._on_speech_stopped()
        elif kind == "response.created":
            data = event.get("response") or {}
            metadata = data.get("metadata")
            say_id = metadata.get("voxtra_say") if isinstance(metadata, dict) else None
            self._on_response_started(str(data.get("id") or uuid.uuid4().hex), say_id)
        elif kind == "response.output_audio_transcript.delta":
            if response is not None:
                self._on_transcript_delta(response, item_id, str(event.get("delta") or ""))
        elif kind == "response.output_audio_transcript.done":
            if response is not None:
                self._on_transcript_done(response, item_id, str(event.get("transcript") or ""))
        elif kind == "response.output_audio.done":
            self._on_audio_done(item_id)
        elif kind == "conversation.item.added":
            item = event.get("item") or {}
            new_id = str(item.get("id") or "")
            if new_id and new_id not in self._own_items and item.get("type") == "message":
                self._add_message(new_id, str(item.get("role")))
        elif kind == "conversation.item.input_audio_transcription.delta":
            self._on_input_delta(item_id, str(event.get("delta") or ""))
        elif kind == "conversation.item.input_audio_transcription.completed":
            self._on_input_done(item_id, str(event.get("transcript") or ""))
        elif kind == "conversation.item.input_audio_transcription.failed":
            self._awaiting_final = False
            error = event.get("error") or {}
            self._report(f"transcription failed: {error.get('message', '')}", stage="stt")
        elif kind == "response.function_call_arguments.done":
            self._on_function_call(
                response,
                str(event.get("call_id") or ""),
                str(event.get("name") or ""),
                str(event.get("arguments") or ""),
            )
        elif kind == "response.done":
            data = event.get("response") or {}
            done = self._responses.get(str(data.get("id")))
            if done is not None:
                error = None
                if data.get("status") == "failed":
                    details = data.get("status_details") or {}
                    error = str((details.get("error") or {}).get("message") or "failed")
                await self._on_response_done(done, error)
        elif kind == "error":
            self._on_error(event.get("error") or {})

    def _on_error(self, error: dict[str, Any]) -> None:
        code = error.get("code")
        if code in _QUIET_ERRORS:
            return
        message = f"{error.get('type', 'error')}: {error.get('message', '')}"
        if code:
            message += f" ({code})"
        event_id = str(error.get("event_id") or "")
        if event_id.startswith("vx_say_"):
            self._fail_say(event_id.removeprefix("vx_say_"), message)
        self._report(message)


def _format(name: str) -> dict[str, Any]:
    return {"type": "audio/pcm", "rate": 24000} if name == "pcm" else {"type": f"audio/{name}"}


def _message(role: str, kind: str, text: str) -> dict[str, Any]:
    return {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}
