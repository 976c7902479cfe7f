"""Voicemail drop: call each number; a person hears the message live, a voicemail box
gets it after its beep.

``app.originate(..., amd=True)`` runs Asterisk's answering-machine detection before the
handler (the ``voxtra-amd`` dialplan context, shipped in ``asterisk-conf/``), so the
handler knows who picked up (``call.amd.verdict``: human, machine or unknown, with
``call.amd.reasons``). On a machine it waits for the beep (``call.wait_for_beep()``)
and then plays the message into the box.

Against the sandbox (``python -m voxtra.testing.asterisk up``), its test dialplan plays
both far ends:

    python examples/voicemail_drop.py "Local/voicemail@voxtra-test" "Local/person@voxtra-test"

Each call's outcome is printed: who answered, why, and what was left.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from voxtra import CallSession, OriginateError, VoxtraApp
from voxtra.calls.amd import AmdVerdict

log = logging.getLogger("voicemail_drop")

MESSAGE = ["sound:hello-world"]  # your recorded message (or call.say() with a TTS)


# --8<-- [start:handler]
async def drop(call: CallSession) -> None:
    """Runs on each answered call once AMD has decided."""
    amd = call.amd
    assert amd is not None  # originate(amd=True) sets it before the handler runs
    if amd.verdict is AmdVerdict.MACHINE:
        beep = await call.wait_for_beep(timeout=30)
        call.metadata["left"] = "after the beep" if beep else "no beep heard: left anyway"
    else:  # a person (or not sure): speak at once
        call.metadata["left"] = "live"
    await (await call.play_file(MESSAGE)).wait(60)
    await call.hangup()


# --8<-- [end:handler]


async def main(endpoints: Sequence[str]) -> None:
    async with VoxtraApp() as app:  # ARI settings from VOXTRA_* variables
        for endpoint in endpoints:
            try:
                call = await app.originate(endpoint, amd=True, handler=drop, timeout=30)
            except OriginateError as exc:
                print(f"{endpoint}: not reached ({exc})")
                continue
            await call.wait_ended(120)
            amd = call.amd
            assert amd is not None
            print(
                f"{endpoint}: {amd.verdict} ({'; '.join(amd.reasons)}); "
                f"message {call.metadata.get('left', 'not left')}"
            )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    asyncio.run(main(sys.argv[1:] or ["Local/voicemail@voxtra-test"]))
