"""LocalLLM's wiring, without a model: what it tells llama-server and the provider."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from voxtra.local import QWEN_CODER_1_5B, LocalLLM
from voxtra.testing.modules import import_file


def _assistant() -> ModuleType:
    return import_file(
        Path(__file__).resolve().parents[2] / "examples" / "assistant.py",
        "voxtra_example_assistant",
    )


def test_server_args_reach_llama_server_and_tools_get_a_preamble(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / QWEN_CODER_1_5B.filename).write_bytes(b"gguf")
    local = LocalLLM(cache=tmp_path, server_args=("-fa", "on"))
    command = local.server.command()
    assert command[-2:] == ["-fa", "on"]
    assert command[command.index("-t") + 1] == "1"
    # A tool turn is two model requests: something is said as soon as a tool is named.
    assert local.llm.tool_preamble == "One moment."
    assert LocalLLM(cache=tmp_path, tool_preamble=None).llm.tool_preamble is None


def test_the_demo_assistant_says_what_each_tool_is_about_to_do() -> None:
    assistant = _assistant()
    app = assistant.build_assistant(agent="local", ari_url="http://asterisk.invalid:8088")
    preamble = app.voice.llm.tool_preamble
    assert preamble == assistant.TOOL_PREAMBLES
    assert set(preamble) >= {"get_weather", "transfer_to_person", "*"}
