"""A voice agent on Twilio, without Asterisk: embedded, offline providers, no API keys.

    export VOXTRA_TWILIO__ACCOUNT_SID=AC...  VOXTRA_TWILIO__AUTH_TOKEN=...
    export VOXTRA_TWILIO__PUBLIC_URL=https://<your tunnel or host>   # e.g. ngrok http 8000
    python examples/twilio_agent.py

then set your Twilio number's "A call comes in" webhook to
``https://<public url>/twilio/voice`` (HTTP POST) and call it. The same handler runs
on Asterisk: only where the call comes from differs (see docs/twilio.md).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette

from voxtra import CallSession, VoiceConfig, VoxtraApp
from voxtra.providers.espeak_tts import EspeakTTS
from voxtra.providers.pocketsphinx_stt import PocketSphinxSTT
from voxtra.providers.rules import RulesAgent
from voxtra.providers.webrtc_vad import WebRtcVAD
from voxtra.twilio import NoAsterisk, TwilioBackend

agent = RulesAgent()  # the rule "LLM": opening hours, weather, goodbye

app = VoxtraApp(
    stt=PocketSphinxSTT(keywords=agent.vocabulary()),
    llm=agent,
    tts=EspeakTTS(),
    vad=WebRtcVAD(),
    voice=VoiceConfig(greeting="Hello, how can I help you?"),
)


@app.default
async def assistant(call: CallSession) -> None:
    await call.answer()
    logging.getLogger("agent").info(
        "call %s from %s to %s", call.id, call.caller_id, call.called_number
    )
    await call.converse()  # barge-in clears Twilio's buffer; marks say what was heard


@app.route("+10000000000")  # a number of your own: a key menu, then a transfer
async def menu(call: CallSession) -> None:
    await call.answer()
    await call.say("For a person, press zero.", interruptible=False)
    if await call.gather(1, first_digit_timeout=8) == "0":
        await call.transfer_to("+10000000001")  # Twilio runs <Dial>; the call leaves the app


def main(port: int = 8000) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    app.use_transport(NoAsterisk())  # every call comes through Twilio
    backend = TwilioBackend(app)  # app.settings.twilio, from VOXTRA_TWILIO__*

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # The app runs inside uvicorn's lifespan: on Ctrl-C uvicorn stops serving, the
        # app drains its calls here, and only then does uvicorn raise the signal again.
        # (Stopped after `await server.serve()` instead, the app's stop() was cancelled
        # half-way by that second SIGINT.)
        try:
            async with app:
                yield
        finally:
            await backend.aclose()

    asgi = Starlette(routes=backend.routes(), lifespan=lifespan)
    uvicorn.run(asgi, host="0.0.0.0", port=port)  # until Ctrl-C


if __name__ == "__main__":
    main()
