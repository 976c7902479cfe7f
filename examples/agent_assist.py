"""Agent assist: the app puts a caller through to a person, then coaches that person.

Every call to extensions 4XX is answered, connected to the human agent (the callee:
``PJSIP/<number>`` by default, ``AGENT_ENDPOINT`` to choose) and left to the two of
them (``close()``: no AI voice on the call). Then ``app.assist(call)`` listens in
without moving anyone: each side is transcribed on its own (embedded pocketsphinx,
labelled ``caller`` / ``callee``), and when the caller mentions cancelling, the agent
alone hears a whisper (espeak-ng) and a suggestion is published for a screen or CRM
(here: logged). The caller never hears the whisper.

Against the sandbox, a second scripted phone plays the human agent:

    python -m voxtra.testing.sipcaller listen --port 5072 --seconds 60 &
    AGENT_ENDPOINT='PJSIP/sipcaller/sip:agent@127.0.0.1:5072' \\
        python examples/agent_assist.py
    python -m voxtra.testing.sipcaller dial 400 --seconds 20
"""

from __future__ import annotations

import logging
import os

from voxtra import CallSession, VoxtraApp
from voxtra.calls.assist import AgentAssist, AssistTranscript, Suggestion
from voxtra.errors import CallEnded, OriginateError
from voxtra.providers.espeak_tts import EspeakTTS
from voxtra.providers.pocketsphinx_stt import PocketSphinxSTT
from voxtra.providers.webrtc_vad import WebRtcVAD

app = VoxtraApp()  # ARI settings from VOXTRA_* variables, defaults match the sandbox
log = logging.getLogger("agent_assist")

AGENT = os.environ.get("AGENT_ENDPOINT")  # None: PJSIP/<the number dialled>
STT = PocketSphinxSTT(keywords=["cancel", "order", "discount", "price", "refund"])
TTS = EspeakTTS()


def show(suggestion: Suggestion) -> None:
    log.info(
        "call %s: suggestion for the %s: %s", suggestion.call_id, suggestion.to, suggestion.text
    )


@app.route(extension="_4XX")
async def front_desk(call: CallSession) -> None:
    await call.answer()
    try:
        await call.connect(ring_time=20, to=AGENT)
    except OriginateError as exc:
        log.info("call %s: no agent free (%s)", call.id, exc)
        return
    await call.close()  # caller and agent talk; the app only listens from here
    try:
        async with app.assist(call, stt=STT, tts=TTS, vad=WebRtcVAD()) as assist:
            assist.on_suggestion(show)
            async for turn in assist.transcripts():
                await coach(assist, turn)
    except CallEnded:
        pass  # a party hung up while the assist was starting


async def coach(assist: AgentAssist, turn: AssistTranscript) -> None:
    if not turn.is_final:
        return
    log.info("%s: %s", turn.speaker, turn.text)
    if turn.speaker == "caller" and "cancel" in turn.text:
        assist.suggest("Offer the loyalty discount", to="callee", reason="cancel")
        await assist.whisper("callee", "Offer the loyalty discount")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    app.run()
