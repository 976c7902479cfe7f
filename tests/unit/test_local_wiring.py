"""LocalLLM's wiring, without a model: what it tells llama-server and the provider."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from voxtra.local import QWEN_CODER_1_5B, LocalLLM


def _assistant() -> ModuleType:
    name = "voxtra_example_assistant"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[2] / "examples" / "assistant.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


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
