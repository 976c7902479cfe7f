"""Find providers by kind and name: built-ins, plus third parties' entry points.

A third-party package registers a provider class (or factory) in its ``pyproject.toml``::

    [project.entry-points."voxtra.providers"]
    "stt.mycloud" = "mypackage.stt:MyCloudSTT"

The entry point name is ``<kind>.<name>`` with kind one of ``stt``, ``llm``, ``tts``,
``vad``. Built-ins are imported lazily, so asking for ``rules`` never imports a cloud
SDK, and a missing optional dependency becomes a ``ConfigError`` naming the extra.
"""

from __future__ import annotations

import importlib
import logging
from importlib.metadata import entry_points
from typing import Any, Literal, cast, overload

from voxtra.errors import ConfigError
from voxtra.providers.base import LLM, STT, TTS, VAD

__all__ = ["ENTRY_POINT_GROUP", "KINDS", "available_providers", "get_provider"]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "voxtra.providers"
Kind = Literal["stt", "llm", "tts", "vad"]
KINDS: tuple[Kind, ...] = ("stt", "llm", "tts", "vad")
_PROTOCOLS: dict[str, type] = {"stt": STT, "llm": LLM, "tts": TTS, "vad": VAD}

# kind -> name -> ("module:attribute", the extra that installs its dependencies)
_BUILTINS: dict[str, dict[str, tuple[str, str]]] = {
    "stt": {
        "pocketsphinx": ("voxtra.providers.pocketsphinx_stt:PocketSphinxSTT", "local"),
        "deepgram": ("voxtra.providers.deepgram_stt:DeepgramSTT", "deepgram"),
        "whisper": ("voxtra.providers.whisper_stt:WhisperSTT", "whisper"),
    },
    "llm": {
        "rules": ("voxtra.providers.rules:RulesAgent", ""),
        "openai": ("voxtra.providers.openai_llm:OpenAILLM", "openai"),
    },
    "tts": {
        "espeak": ("voxtra.providers.espeak_tts:EspeakTTS", "espeak"),
        "elevenlabs": ("voxtra.providers.elevenlabs_tts:ElevenLabsTTS", "elevenlabs"),
        "piper": ("voxtra.providers.piper_tts:PiperTTS", "piper"),
    },
    "vad": {
        "webrtc": ("voxtra.providers.webrtc_vad:WebRtcVAD", "local"),
    },
}


def _plugins(kind: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ep_kind, sep, name = ep.name.partition(".")
        if not sep or ep_kind not in _PROTOCOLS:
            logger.warning("ignoring entry point %r: its name must be '<kind>.<name>'", ep.name)
            continue
        if ep_kind == kind:
            found[name] = ep
    return found


def available_providers(kind: Kind) -> list[str]:
    """Names usable with ``get_provider(kind, name)``: built-ins then installed plugins."""
    if kind not in _PROTOCOLS:
        raise ConfigError(f"unknown provider kind {kind!r}; expected one of {KINDS}")
    names = list(_BUILTINS[kind])
    return names + [n for n in sorted(_plugins(kind)) if n not in names]


def _load_builtin(kind: str, name: str) -> Any:
    target, extra = _BUILTINS[kind][name]
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = f": pip install 'voxtra[{extra}]'" if extra else ""
        raise ConfigError(f"{kind} provider {name!r} is not installed ({exc}){hint}") from exc
    return getattr(module, attr)


@overload
def get_provider(kind: Literal["stt"], name: str, **options: Any) -> STT: ...
@overload
def get_provider(kind: Literal["llm"], name: str, **options: Any) -> LLM: ...
@overload
def get_provider(kind: Literal["tts"], name: str, **options: Any) -> TTS: ...
@overload
def get_provider(kind: Literal["vad"], name: str, **options: Any) -> VAD: ...
def get_provider(kind: Kind, name: str, **options: Any) -> STT | LLM | TTS | VAD:
    """Build the provider ``name`` of ``kind`` with ``options`` (its constructor's kwargs).

    Built-in names win over plugins of the same name, so a plugin cannot silently replace
    a provider the user asked for by its documented name.
    """
    if kind not in _PROTOCOLS:
        raise ConfigError(f"unknown provider kind {kind!r}; expected one of {KINDS}")
    if name in _BUILTINS[kind]:
        factory = _load_builtin(kind, name)
    else:
        plugin = _plugins(kind).get(name)
        if plugin is None:
            known = ", ".join(available_providers(kind))
            raise ConfigError(f"unknown {kind} provider {name!r}; available: {known}")
        try:
            factory = plugin.load()
        except Exception as exc:
            raise ConfigError(f"cannot load {kind} provider {name!r}: {exc}") from exc
    try:
        provider: Any = factory(**options)
    except TypeError as exc:
        raise ConfigError(f"bad options for {kind} provider {name!r}: {exc}") from exc
    if not isinstance(provider, _PROTOCOLS[kind]):
        raise ConfigError(
            f"{kind} provider {name!r} ({type(provider).__name__}) does not implement "
            f"the {_PROTOCOLS[kind].__name__} protocol"
        )
    return cast("STT | LLM | TTS | VAD", provider)
