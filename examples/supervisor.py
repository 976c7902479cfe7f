"""A supervisor listens in on the agent's calls, then coaches, then takes over.

Every call to extensions 3XX is answered by the agent (here a stand-in that attaches
its audio path and plays a long prompt; a voice agent would converse). As each call
starts, the app dials the supervisor's phone into it with ``app.supervise()``: first
in ``spy`` mode (the supervisor hears caller and agent, nobody hears the supervisor),
after a while in ``whisper`` mode to the agent (the agent's pipeline hears the
coaching, the caller does not), and at last in ``barge`` mode (everyone hears
everyone). The supervisor can also switch from its own phone: 1 spy, 2 whisper to
the agent, 3 whisper to the caller, 4 barge. The supervisor hanging up just ends the
supervision; the call goes on.

Against the sandbox, a second scripted phone plays the supervisor:

    python -m voxtra.testing.sipcaller listen --port 5072 --seconds 60 &
    SUPERVISOR_ENDPOINT='PJSIP/sipcaller/sip:boss@127.0.0.1:5072' \\
        python examples/supervisor.py
    python -m voxtra.testing.sipcaller dial 300 --seconds 20
"""

from __future__ import annotations

import asyncio
import logging
import os

from voxtra import CallSession, VoxtraApp
from voxtra.calls.parties import PartyError, SupervisorMode
from voxtra.errors import CallEnded, OriginateError

app = VoxtraApp()  # ARI settings from VOXTRA_* variables, defaults match the sandbox
log = logging.getLogger("supervisor")

SUPERVISOR = os.environ.get("SUPERVISOR_ENDPOINT", "PJSIP/supervisor")
COACHING = [
    (4.0, SupervisorMode("whisper", "agent")),  # after 4 s of listening: coach the agent
    (4.0, SupervisorMode("barge")),  # 4 s later: join the conversation
]


@app.route(extension="_3XX")
async def agent(call: CallSession) -> None:
    await call.answer()
    await call.media()  # the agent's audio path: what a whisper to the agent reaches
    call.spawn(supervise(call))
    await call.play_and_wait("sound:demo-congrats")  # the stand-in agent talks
    await call.wait_ended(timeout=30)


async def supervise(call: CallSession) -> None:
    try:
        supervision = await app.supervise(call.id, SUPERVISOR, "spy", ring_time=20)
    except OriginateError as exc:
        log.info("call %s: the supervisor did not join: %s", call.id, exc)
        return
    try:
        for wait, mode in COACHING:
            await asyncio.sleep(wait)
            await supervision.set_mode(mode)
            log.info("call %s: supervisor now in %s", call.id, mode)
    except (PartyError, CallEnded):
        pass  # the supervisor hung up, or the call ended
    # (the supervisor's phone is released with the call, or when it hangs up)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    app.run()
