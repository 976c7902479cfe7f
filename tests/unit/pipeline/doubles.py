"""The scripted provider doubles now ship in :mod:`voxtra.testing.doubles`."""

from voxtra.testing.doubles import (
    EnergyVAD,
    LLMCall,
    Reply,
    ScriptedLLM,
    ScriptedSTT,
    ScriptedSTTStream,
    ScriptedTTS,
    words,
)

__all__ = [
    "EnergyVAD",
    "LLMCall",
    "Reply",
    "ScriptedLLM",
    "ScriptedSTT",
    "ScriptedSTTStream",
    "ScriptedTTS",
    "words",
]
