"""A voice agent on one speech-to-speech model (OpenAI Realtime) instead of STT -> LLM -> TTS.

    OPENAI_API_KEY=sk-... python examples/realtime_agent.py   # with the sandbox running

The handler is the same as with the pipeline (``call.converse()``, or ``call.say`` /
``call.listen``); only ``VoiceConfig(engine=...)`` differs. The caller's u-law goes to
the model untouched and its u-law answer comes straight back; a caller who talks over
the agent cuts it off, and the model's history keeps only what was heard.

Without a key, ``--fake`` runs it against the local ``FakeOpenAIRealtime`` (the test
double: a tone for an answer, scripted transcripts), to see the plumbing work.

Gemini Live instead: ``engine=GeminiLiveEngine.factory(google_api_key, voice="Puck")``
(``voxtra.providers.gemini_live``, ``pip install 'voxtra[gemini]'``); nothing else
changes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from voxtra import CallSession, VoiceConfig, VoxtraApp
from voxtra.pipeline.events import PipelineEvent
from voxtra.providers.openai_realtime import OpenAIRealtimeEngine


# --8<-- [start:app]
def opening_hours(day: str) -> str:
    """When the bakery is open on a given day.

    Args:
        day: the day of the week, e.g. Monday.
    """
    return "closed" if day.lower() == "sunday" else "seven in the morning to six in the evening"


def build_app(api_key: str, *, base_url: str | None = None) -> VoxtraApp:
    voice = VoiceConfig(
        system_prompt="You answer the phone for a small bakery. Keep answers short.",
        greeting="Hello, this is the bakery. How can I help?",
        tools=(opening_hours,),
        engine=OpenAIRealtimeEngine.factory(
            api_key, "gpt-realtime", voice="marin", base_url=base_url
        ),
    )
    app = VoxtraApp(voice=voice)

    @app.default
    async def assistant(call: CallSession) -> None:
        await call.answer()
        engine = call.engine
        assert engine is not None

        def log(event: PipelineEvent) -> None:
            logging.getLogger("agent").info("%s %s", call.id, event)

        engine.on_event(log)
        reason = await call.converse()  # the model holds the conversation, with barge-in
        logging.getLogger("agent").info("call %s ended: %s", call.id, reason)

    return app


# --8<-- [end:app]


async def _with_fake() -> None:
    from voxtra.testing.fakes.openai_realtime import FakeOpenAIRealtime, RealtimeReply

    replies = [RealtimeReply(text="We open at seven.")] * 20
    async with FakeOpenAIRealtime("local", replies=replies) as fake:
        app = build_app("local", base_url=fake.base_url)
        # Until Ctrl-C or SIGTERM, as app.run() does: the calls drain, then the fake
        # stops. (Waiting for cancellation instead ended Ctrl-C in a KeyboardInterrupt
        # traceback, and SIGTERM killed the process without stopping the app.)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with app:
            await stop.wait()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if "--fake" in sys.argv:
        asyncio.run(_with_fake())
    else:
        build_app(os.environ["OPENAI_API_KEY"]).run()
