"""Local stand-ins for paid cloud speech services, speaking their real wire protocols.

Each fake is an ``aiohttp.web`` server on loopback that the real SDK (or any client) can
talk to unchanged, with scripted results and failure modes. Use them as async context
managers::

    async with FakeDeepgram(api_key="k", turns=[DeepgramTurn(8000, "hello")]) as dg:
        stt = DeepgramSTT(api_key="k", base_url=dg.url)
"""

from voxtra.testing.fakes.deepgram import DeepgramSession, DeepgramTurn, FakeDeepgram
from voxtra.testing.fakes.elevenlabs import FakeElevenLabs
from voxtra.testing.fakes.openai import FakeOpenAI, OpenAIReply

__all__ = [
    "DeepgramSession",
    "DeepgramTurn",
    "FakeDeepgram",
    "FakeElevenLabs",
    "FakeOpenAI",
    "OpenAIReply",
]
