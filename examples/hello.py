"""A first handler: answer, greet, read back the digit the caller presses, hang up.

    python examples/hello.py        # with the sandbox or docker-compose running

then call any extension from a softphone at 127.0.0.1:5060, or with the scripted caller:
``python -m voxtra.testing.sipcaller dial 100 --dtmf 7 --seconds 6``.
"""

from __future__ import annotations

import logging

from voxtra import CallSession, VoxtraApp

# --8<-- [start:app]
app = VoxtraApp()  # ARI settings from VOXTRA_* variables; the defaults match the sandbox


@app.default  # every call that no route claims
async def hello(call: CallSession) -> None:
    await call.answer()
    await call.play_and_wait("hello-world")  # an Asterisk sound name
    digit = await call.gather(max_digits=1, first_digit_timeout=5)
    if digit:
        await call.play_and_wait(f"digits/{digit}")
    await call.play_and_wait("vm-goodbye")
    await call.hangup()


# --8<-- [end:app]

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    app.run()
