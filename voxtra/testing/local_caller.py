"""Test calls into a Voxtra app without any SIP client, using Asterisk Local channels.

``place_local_call(ari, "1000", behaviour="play")`` dials ``Local/app-1000@voxtra-test``:
the ``;2`` half runs ``Stasis(voxtra,1000)`` (so the app sees an inbound call to 1000,
still ringing) and, once the app answers, the ``;1`` half runs ``behaviour`` from the
``[voxtra-test]`` context of the shipped dialplan: ``answer`` (stay silent), ``play``
(play ``PLAYFILE``), ``dtmf`` (send ``DIGITS``), ``hangup-after`` (hang up after
``WAIT`` seconds), ``echo``.

The call uses 8 kHz ``slin`` unless ``formats`` says otherwise, like a phone line: a
Local channel left to choose took a high-rate format that Asterisk resampled on every
frame (about 20 ms of Asterisk CPU per call-second instead of 2).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from voxtra.ari.client import AriClient
from voxtra.ari.errors import AriError

__all__ = ["LocalCall", "place_local_call"]


@dataclass(frozen=True)
class LocalCall:
    """A test call: ``call_id`` is the app's CallSession id, ``caller_leg`` the far half."""

    ari: AriClient
    call_id: str
    caller_leg: str

    async def hangup(self) -> None:
        """The caller hangs up."""
        with contextlib.suppress(AriError):
            await self.ari.channels.hangup(self.caller_leg)


async def place_local_call(
    ari: AriClient,
    extension: str,
    *,
    behaviour: str = "answer",
    caller_id: str | None = None,
    variables: Mapping[str, str] | None = None,
    context: str = "voxtra-test",
    timeout: int = 30,
    formats: str | Sequence[str] = "slin",
) -> LocalCall:
    """Place a call to ``extension`` of the app; returns once Asterisk accepted it."""
    tag = uuid.uuid4().hex[:12]
    caller_leg, call_id = f"caller-{tag}", f"call-{tag}"
    await ari.channels.originate(
        f"Local/app-{extension}@{context}",
        context=context,
        extension=behaviour,
        priority=1,
        channel_id=caller_leg,
        other_channel_id=call_id,
        caller_id=caller_id,
        timeout=timeout,
        variables=variables,
        formats=formats,
    )
    return LocalCall(ari, call_id, caller_leg)
