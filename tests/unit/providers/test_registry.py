"""get_provider: built-ins by name, third-party plugins through real entry points."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from typing import Any

import pytest

from voxtra.errors import ConfigError
from voxtra.providers import registry
from voxtra.providers.base import LLM, TTS, VAD
from voxtra.providers.rules import RulesAgent
from voxtra.providers.webrtc_vad import WebRtcVAD


def test_builtin_names() -> None:
    assert registry.available_providers("stt")[:2] == ["pocketsphinx", "deepgram"]
    assert "rules" in registry.available_providers("llm")
    assert "espeak" in registry.available_providers("tts")
    assert registry.available_providers("vad")[0] == "webrtc"


def test_get_builtin_with_options() -> None:
    vad = registry.get_provider("vad", "webrtc", mode=3)
    assert isinstance(vad, WebRtcVAD) and isinstance(vad, VAD) and vad.mode == 3
    tts = registry.get_provider("tts", "espeak", voice="en-gb")
    assert isinstance(tts, TTS) and tts.sample_rate == 22050
    llm = registry.get_provider("llm", "openai", api_key="k", base_url="http://127.0.0.1:9/v1")
    assert isinstance(llm, LLM) and llm.name == "openai"


def test_unknown_kind_name_and_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown provider kind"):
        registry.get_provider("asr", "x")  # type: ignore[call-overload]
    with pytest.raises(ConfigError, match=r"unknown stt provider 'nope'.*pocketsphinx"):
        registry.get_provider("stt", "nope")
    with pytest.raises(ConfigError, match="bad options"):
        registry.get_provider("vad", "webrtc", bogus=1)


def _fake_entry_points(*eps: EntryPoint) -> Any:
    def entry_points(*, group: str) -> list[EntryPoint]:
        return [ep for ep in eps if ep.group == group]

    return entry_points


def test_plugin_from_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    eps = _fake_entry_points(
        EntryPoint("llm.faq", "voxtra.providers.rules:RulesAgent", registry.ENTRY_POINT_GROUP),
        EntryPoint("badname", "voxtra.providers.rules:RulesAgent", registry.ENTRY_POINT_GROUP),
        EntryPoint("llm.other", "voxtra.providers.rules:RulesAgent", "someone.else"),
    )
    monkeypatch.setattr(registry, "entry_points", eps)
    assert registry.available_providers("llm") == ["rules", "openai", "faq"]
    agent = registry.get_provider("llm", "faq", fallback="Plugin here.")
    assert isinstance(agent, RulesAgent) and agent.fallback == "Plugin here."
    with pytest.raises(ConfigError):
        registry.get_provider("llm", "other")


def test_plugin_that_is_not_a_provider_or_does_not_import(monkeypatch: pytest.MonkeyPatch) -> None:
    eps = _fake_entry_points(
        EntryPoint("tts.notatts", "voxtra.providers.rules:RulesAgent", registry.ENTRY_POINT_GROUP),
        EntryPoint("tts.missing", "no_such_module_xyz:Thing", registry.ENTRY_POINT_GROUP),
    )
    monkeypatch.setattr(registry, "entry_points", eps)
    with pytest.raises(ConfigError, match="does not implement the TTS protocol"):
        registry.get_provider("tts", "notatts")
    with pytest.raises(ConfigError, match="cannot load tts provider 'missing'"):
        registry.get_provider("tts", "missing")


def test_builtin_wins_over_plugin_of_same_name(monkeypatch: pytest.MonkeyPatch) -> None:
    eps = _fake_entry_points(
        EntryPoint("vad.webrtc", "no_such_module_xyz:Thing", registry.ENTRY_POINT_GROUP)
    )
    monkeypatch.setattr(registry, "entry_points", eps)
    assert isinstance(registry.get_provider("vad", "webrtc"), WebRtcVAD)
