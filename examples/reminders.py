"""Outbound reminders: call each number, play a reminder, ask the callee to press 1.

Run against the sandbox (``python -m voxtra.testing.asterisk up``) or docker-compose:

    python examples/reminders.py PJSIP/sipcaller

(a softphone registered as ``sipcaller`` rings), or let the sandbox's test dialplan play
the callee who answers and presses 1:

    python examples/reminders.py "Local/dtmf@voxtra-test"

Each number is called in turn; the outcome of each is printed: ``confirmed``,
``no confirmation``, ``busy``, ``no answer`` or ``failed: <reason>``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from voxtra import CallBusy, CallFailed, CallNoAnswer, CallSession, VoxtraApp

log = logging.getLogger("reminders")


# --8<-- [start:handler]
async def remind(call: CallSession) -> None:
    """Runs on each answered call, like an inbound route handler."""
    call.metadata["confirmed"] = False
    await call.play_and_wait("hello-world")  # your reminder prompt here
    for _attempt in range(2):  # a 1 pressed during the reminder counts too
        prompt = await call.play_file(["sound:if-correct-press", "sound:digits/1"])
        digit = await call.gather(max_digits=1, first_digit_timeout=8)
        await prompt.stop()
        if digit == "1":
            call.metadata["confirmed"] = True
            await call.play_and_wait("auth-thankyou")
            break
    await call.hangup()


# --8<-- [end:handler]


# --8<-- [start:campaign]
async def send_reminders(app: VoxtraApp, endpoints: Sequence[str]) -> dict[str, str]:
    """Call each endpoint in turn; returns each one's outcome."""
    outcomes: dict[str, str] = {}
    for endpoint in endpoints:
        try:
            call = await app.originate(
                endpoint,
                caller_id='"Reminders" <5000>',
                timeout=30,  # seconds of ringing before CallNoAnswer
                variables={"DIGITS": "1"},  # for Local/dtmf@voxtra-test: the key it presses
                handler=remind,
            )
        except CallBusy:
            outcomes[endpoint] = "busy"
            continue
        except CallNoAnswer:
            outcomes[endpoint] = "no answer"
            continue
        except CallFailed as exc:
            outcomes[endpoint] = f"failed: {exc}"
            continue
        await call.wait_ended(timeout=120)  # the handler hangs up when it is done
        confirmed = call.metadata.get("confirmed")
        outcomes[endpoint] = "confirmed" if confirmed else "no confirmation"
    return outcomes


async def main(endpoints: Sequence[str]) -> None:
    async with VoxtraApp() as app:  # start(): connects to ARI; stop() on the way out
        for endpoint, outcome in (await send_reminders(app, endpoints)).items():
            print(f"{endpoint}: {outcome}")


# --8<-- [end:campaign]

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(main(sys.argv[1:] or ["Local/dtmf@voxtra-test"]))
