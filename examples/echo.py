"""Echo: every call hears itself, through Voxtra's media path (ExternalMedia RTP).

    python examples/echo.py          # with the sandbox or docker-compose running

Call extension 5000 (or any number) from a softphone at 127.0.0.1:5060; what you say
comes back about 60 ms later. ``VOXTRA_MEDIA__TRANSPORT=websocket`` switches the
transport to chan_websocket, ``VOXTRA_MEDIA__CODEC=alaw`` the codec.
"""

from __future__ import annotations

import logging

from voxtra import CallSession, VoxtraApp

app = VoxtraApp()


@app.default
async def echo(call: CallSession) -> None:
    await call.answer()
    async for chunk in call.audio_stream():
        await call.send_audio(chunk)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app.run()
