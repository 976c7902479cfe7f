"""A front desk: answer, qualify the caller, connect the person they dialled, leave.

The agent answers extensions 2XX, asks the caller to press 1 to be put through, then
dials the number they called (``call.connect()``). It stays on the line for a moment in
``whisper`` mode (only the callee hears it: here, a short prompt is all it would say),
then leaves with ``call.close()``: caller and callee keep talking without it. If the
callee is busy or does not answer, the caller is still with the agent and hears so.

Which endpoint a number rings is the route's ``connect_endpoint`` template
(``{number}`` is the dialled number). Against the sandbox, a second scripted phone
plays the callee:

    python -m voxtra.testing.sipcaller listen --port 5071 --seconds 60 &
    FRONT_DESK_ENDPOINT='PJSIP/sipcaller/sip:{number}@127.0.0.1:5071' \\
        python examples/front_desk.py
    python -m voxtra.testing.sipcaller dial 200 --dtmf 1 --seconds 20
"""

from __future__ import annotations

import asyncio
import logging
import os

from voxtra import CallSession, VoxtraApp
from voxtra.errors import CallBusy, CallNoAnswer, OriginateError

app = VoxtraApp()  # ARI settings from VOXTRA_* variables, defaults match the sandbox
log = logging.getLogger("front_desk")

ENDPOINT = os.environ.get("FRONT_DESK_ENDPOINT", "PJSIP/{number}")


@app.route(extension="_2XX", metadata={"connect_endpoint": ENDPOINT})
async def front_desk(call: CallSession) -> None:
    await call.answer()
    # qualify: the caller confirms with a key (a voice agent would ask and listen())
    call.clear_dtmf()
    prompt = await call.play_file(["sound:vm-press", "sound:digits/1"])
    choice = await call.gather(max_digits=1, first_digit_timeout=6)
    await prompt.stop()
    if choice != "1":
        await call.play_and_wait("sound:goodbye")
        return
    await call.play_and_wait("sound:pls-hold-while-try")
    try:
        await call.connect(ring_time=30)
    except (CallBusy, CallNoAnswer) as exc:
        log.info("call %s: %s could not take it: %s", call.id, call.called_number, exc)
        await call.play_and_wait("sound:vm-nobodyavail")
        return
    except OriginateError as exc:
        log.warning("call %s: connecting failed: %s", call.id, exc)
        await call.play_and_wait("sound:an-error-has-occurred")
        return
    # Connected: caller, callee and the agent. A voice agent would brief the callee
    # here (call.whisper(to="callee"); await call.say("A caller about ...")).
    await call.whisper(to="callee")
    await asyncio.sleep(1.0)
    await call.close()  # the agent leaves; the two talk until one hangs up
    log.info("call %s: %s connected, agent left", call.id, call.called_number)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    app.run()
