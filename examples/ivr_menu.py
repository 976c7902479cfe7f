"""A DTMF menu: greeting, "press 1 for support, 2 for sales", transfer or queue.

Run against the sandbox (``python -m voxtra.testing.asterisk up``) or docker-compose:

    python examples/ivr_menu.py

then dial extension 1000 from a softphone registered as ``sipcaller`` (no auth) at
127.0.0.1:5060, or with the scripted caller, pressing 1 once the menu plays (a key
pressed during the greeting is forgotten: ``clear_dtmf()`` below):

    python -m voxtra.testing.sipcaller dial 1000 --dtmf 1 --dtmf-delay 3 --seconds 8
"""

from __future__ import annotations

import logging

from voxtra import CallSession, VoxtraApp

app = VoxtraApp()  # ARI settings from VOXTRA_* variables, defaults match the sandbox
log = logging.getLogger("ivr")

# Built from Asterisk's core prompts: "press 1 ... press 2" (a real menu ships its own).
MENU = ["sound:vm-press", "sound:digits/1", "sound:vm-press", "sound:digits/2"]


@app.route(extension="1000", metadata={"menu": "main"})
async def main_menu(call: CallSession) -> None:
    await call.answer()
    await (await call.play_file("hello-world")).wait()
    for _attempt in range(3):
        call.clear_dtmf()
        menu = await call.play_file(MENU)
        choice = await call.gather(max_digits=1, first_digit_timeout=6)
        await menu.stop()
        log.info("call %s from %s chose %r", call.id, call.caller_id, choice)
        if choice == "1":
            await (await call.play_file("pls-hold-while-try")).wait()
            await call.transfer_to_queue("support")
            return
        if choice == "2":
            await call.transfer_to("transfer-sales@voxtra-test")
            return
        await (await call.play_file("pm-invalid-option")).wait()
    await (await call.play_file("goodbye")).wait()


@app.route(extension="queue-agent")
async def queue_agent(call: CallSession) -> None:
    """The demo queue's member lands here: a stand-in for a human agent."""
    await call.answer()
    await (await call.play_file("demo-echotest")).wait()


@app.default
async def unknown(call: CallSession) -> None:
    await call.answer()
    await (await call.play_file("invalid")).wait()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app.run()
