"""A first voice agent on the embedded, offline providers: no API keys, no downloads.

    python examples/first_agent.py   # with the sandbox or docker-compose running

then call any extension and ask "what are your opening hours" or "what is the weather
in london". ``examples/assistant.py`` (what ``voxtra demo`` runs) is the same agent
with a conversation log and per-turn latency lines.
"""

from __future__ import annotations

import logging

from voxtra import CallSession, VoiceConfig, VoxtraApp
from voxtra.providers.espeak_tts import EspeakTTS
from voxtra.providers.pocketsphinx_stt import PocketSphinxSTT
from voxtra.providers.rules import RulesAgent
from voxtra.providers.webrtc_vad import WebRtcVAD

# --8<-- [start:app]
agent = RulesAgent()  # the rule "LLM": opening hours, weather, goodbye


def get_weather(city: str) -> str:
    """Today's weather in a city.

    Args:
        city: the city name, e.g. London.
    """
    return "sunny, eighteen degrees" if city.lower() == "london" else "mild, fifteen degrees"


app = VoxtraApp(
    # Offline speech recognition is accurate on phone audio only with a small
    # vocabulary: the agent's own example phrases ("what is the weather in london", ...).
    stt=PocketSphinxSTT(keywords=agent.vocabulary()),
    llm=agent,
    tts=EspeakTTS(),
    vad=WebRtcVAD(),
    voice=VoiceConfig(greeting="Hello, how can I help you?", tools=(get_weather,)),
)


@app.default
async def assistant(call: CallSession) -> None:
    await call.answer()
    reason = await call.converse()  # STT -> agent -> TTS turns, with barge-in
    logging.getLogger("agent").info("call %s ended: %s", call.id, reason)


# --8<-- [end:app]

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app.run()
