"""Every error Voxtra raises derives from VoxtraError, so users can catch one base.

Layer-specific errors (ARI, media, providers, recording, the test tooling) live next to
their layer and derive from the classes here. One naming rule for all of them:

- A *kind* of fault, caught to handle every case of it, is ``<Subject>Error``:
  ``VoxtraError``, ``ConfigError``, ``MediaError``, ``ProviderError``,
  ``RecordingError``, ``OriginateError``, ``AriError``, ``RtpParseError``.
- One *outcome* a caller branches on is named by the outcome alone, without a suffix:
  ``CallEnded``, ``CallBusy``, ``CallNoAnswer``, ``CallFailed``,
  ``PipelineNotConfigured``, ``SandboxUnavailable``, ``SipCallerTimeout``; a value
  that was rejected is ``Invalid<Thing>`` (``InvalidRecordingName``); an ARI status is
  its HTTP reason phrase (``AriNotFound``, ``AriConflict``, ``AriServerError``).
- Never both: no ``...FailedError``, ``...TimeoutError``, ``Invalid...Error``.
- A layer's own errors carry its prefix (``Ari``, ``Rtp``, ``ChanWs``, ``AudioSocket``).
- Where code would catch a built-in, the error is that built-in too (``ConfigError`` is
  a ``ValueError``, ``PipelineNotConfigured`` a ``RuntimeError``, ``SipCallerTimeout``
  a ``TimeoutError``), so ``except ValueError`` written earlier keeps working.

``tests/unit/test_error_names.py`` checks the base of every error class and the
"never both" part.
"""

from __future__ import annotations

__all__ = [
    "AppNotRunning",
    "CallEnded",
    "CallbackSignatureError",
    "ConfigError",
    "InvalidTransferTarget",
    "MediaError",
    "NotSupported",
    "PipelineNotConfigured",
    "ProviderError",
    "RecordingError",
    "VoxtraError",
]


class VoxtraError(Exception):
    """Base of every error raised by Voxtra."""


class ConfigError(VoxtraError, ValueError):
    """A setting is missing, unknown or of the wrong type; the message names it."""


class CallbackSignatureError(ConfigError, TypeError):
    """A callback or handler given to Voxtra cannot be called the way Voxtra will call it
    (wrong number of parameters, or a plain ``def`` where ``async def`` is needed).

    Raised when it is registered, not when it would first run (a wrong ``on_hangup``
    callback used to fail only at hangup, logged and lost).
    """


class CallEnded(VoxtraError):
    """The call hung up while (or before) an operation on it was waiting."""

    def __init__(self, call_id: str, message: str | None = None) -> None:
        super().__init__(message or f"call {call_id} has ended")
        self.call_id = call_id

    def anew(self) -> CallEnded:
        """The same news in a new exception, without traceback or context.

        Raise this rather than a CallEnded something else keeps (a waiter's future, a
        task group's exception group): raised, the kept one takes a traceback through
        the raising frame, and a frame that holds its keeper makes a reference cycle."""
        return CallEnded(self.call_id, str(self))


class MediaError(VoxtraError):
    """Audio could not be set up, parsed or moved."""


class ProviderError(VoxtraError):
    """An STT, LLM, TTS or VAD provider failed; ``provider`` names it."""

    def __init__(self, provider: str, message: str) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider


class RecordingError(VoxtraError):
    """A recording failed, was rejected, or could not be fetched or delivered."""


_PROVIDERS = {
    "stt": "an STT (speech-to-text)",
    "llm": "an LLM",
    "tts": "a TTS (text-to-speech)",
}


class PipelineNotConfigured(VoxtraError, RuntimeError):
    """A speech operation needs a provider that was not given.

    ``operation`` is what was called (``"say()"``), ``missing`` the provider fields it
    lacks (``("tts",)``). The message names both and where to pass them. A
    RuntimeError too, for code written when a bare RuntimeError was raised here.
    """

    def __init__(
        self,
        operation: str,
        missing: tuple[str, ...] | list[str],
        where: str = "VoxtraApp(...) or VoiceConfig(...)",
    ) -> None:
        self.operation = operation
        self.missing = tuple(missing)
        needs = _join([_PROVIDERS.get(m, m) for m in self.missing])
        params = ", ".join(f"{m}=" for m in self.missing)
        if where == "VoxtraApp(...) or VoiceConfig(...)":
            fields = ", ".join(f"{m}=..." for m in self.missing)
            where = f"VoxtraApp(...) or VoiceConfig({fields})"
        # "AI pipeline not configured" stays the prefix: code matched on it before.
        super().__init__(
            f"AI pipeline not configured: {operation} needs {needs}: pass {params} to {where}"
        )


class NotSupported(VoxtraError):
    """The call's telephony backend cannot do ``method`` (Twilio Media Streams has no
    music on hold, no Asterisk sound files, no channel variables...). ``method`` is
    what was called (``"hold()"``), ``backend`` the backend's name (``"twilio"``)."""

    def __init__(self, method: str, backend: str, hint: str = "") -> None:
        self.method = method
        self.backend = backend
        super().__init__(
            f"{method} is not supported on the {backend} backend" + (f": {hint}" if hint else "")
        )


class PlaybackFailed(VoxtraError):
    """Asterisk could not play ``media`` to the call (``PlaybackFinished`` in state
    "failed"): most often a sound that does not exist in any format on the Asterisk
    server (a misspelt name, a language without it). The call goes on."""

    def __init__(self, call_id: str, media: str) -> None:
        self.call_id = call_id
        self.media = media
        super().__init__(
            f"call {call_id}: Asterisk could not play {media} "
            "(no such sound in any format on the server, or not playable)"
        )


class VariableNotSet(VoxtraError, LookupError):
    """``call.get_variable(name)`` of a variable the channel does not have (Asterisk
    answers 404 "Provided variable was not found"): the call goes on. A call that is
    gone raises :class:`CallEnded` instead."""

    def __init__(self, call_id: str, name: str) -> None:
        self.call_id = call_id
        self.name = name
        super().__init__(f"call {call_id}: the channel variable {name!r} is not set")


class InvalidTransferTarget(ConfigError):
    """``transfer_to(target)`` into the dialplan (``exten@context[:priority]``) of a
    place the call cannot go: malformed, or not in Asterisk's dialplan. ``target`` is
    what was given, ``reason`` what is wrong with it.

    Raised before the call leaves the app: the caller is still with the handler, which
    may say so and go on. Asterisk 22 answers 204 to a ``continue`` into a context,
    extension or priority its dialplan lacks, then hangs the caller up (cause 0); the
    handler saw a transfer that had worked."""

    def __init__(self, target: str, reason: str) -> None:
        self.target = target
        self.reason = reason
        super().__init__(f"transfer_to({target!r}): {reason}")


class AppNotRunning(VoxtraError, RuntimeError):
    """The app takes no new calls: not started yet, or stopping (``originate()`` then).
    Nothing was placed, so a caller may hand the work to another process."""


class OriginateError(VoxtraError):
    """An outbound call was not answered. ``cause`` is Asterisk's hangup cause code."""

    def __init__(
        self, endpoint: str, cause: int | None, cause_txt: str, message: str, hint: str = ""
    ) -> None:
        if cause is not None:
            said = f" (cause {cause}: {cause_txt or 'Unknown'})"
        else:
            said = f" (Asterisk: {cause_txt})" if cause_txt else ""
        super().__init__(f"{endpoint}: {message}{said}" + (f"; {hint}" if hint else ""))
        self.endpoint = endpoint
        self.cause = cause
        self.cause_txt = cause_txt
        self.hint = hint
        """What to check to fix it, when Voxtra can tell (else "")."""


class CallBusy(OriginateError):
    """The far end was busy (cause 17)."""


class CallNoAnswer(OriginateError):
    """Nobody answered before the timeout (cause 18/19, or our own timeout)."""


class CallFailed(OriginateError):
    """Congestion, rejected, unreachable, or any other failure."""


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} and {items[-1]}"
