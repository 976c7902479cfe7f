"""What the local LLM's integration tests share: the demo's assistant (its system prompt
and tools). Their one llama-server a module is conftest.py's ``local`` fixture."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from voxtra.testing.modules import import_file


def _assistant() -> ModuleType:
    return import_file(
        Path(__file__).resolve().parents[2] / "examples" / "assistant.py",
        "voxtra_example_assistant",
    )


assistant = _assistant()
TOOLS = assistant.TOOLS
