"""``originate()`` input that Asterisk takes and gets wrong is a ConfigError before
anything is dialled, on the real Asterisk (measured on 22.10.1, before the check):

* a variable with an empty name was dropped, and the call placed;
* a variable whose value is not text was refused (400), raised as CallFailed: a call's
  outcome to a dialler, not the program's mistake;
* a caller id with a line break kept it in its number (``12\\r\\n3``).

Each test makes an app with a Stasis name of its own (the sandbox is shared).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from voxtra import ConfigError
from voxtra.app import VoxtraApp
from voxtra.ari.client import AriClient

pytestmark = pytest.mark.asterisk

MakeApp = Callable[..., Awaitable[VoxtraApp]]


@pytest.mark.parametrize(
    "bad",
    [
        {"variables": {"": "sales"}},
        {"variables": {"ATTEMPT": 2}},
        {"variables": {"CUSTOMER": None}},
        {"caller_id": "Desk <12\r\n3>"},
        {"caller_id": "Desk <123>\nX-Extra: 1"},
    ],
)
async def test_bad_originate_input_is_a_config_error_and_nothing_rings(
    make_app: MakeApp, ari: AriClient, bad: dict[str, Any]
) -> None:
    app = await make_app(app_name=f"voxtra-originate-input-{uuid.uuid4().hex[:8]}")
    channel_id = f"voxtra-out-{uuid.uuid4().hex[:16]}"
    started = time.monotonic()
    with pytest.raises(ConfigError, match=r"originate\(\)"):
        await app.originate("Local/noanswer@voxtra-test", channel_id=channel_id, **bad)
    assert time.monotonic() - started < 1.0
    assert channel_id not in {c.id for c in await ari.channels.list()}


async def test_good_originate_input_still_dials(make_app: MakeApp, ari: AriClient) -> None:
    """What the checks let through reaches the channel as given."""
    app = await make_app(app_name=f"voxtra-originate-input-{uuid.uuid4().hex[:8]}")
    session = await app.originate(
        "Local/answer@voxtra-test",
        timeout=5,
        caller_id='"Desk, 2nd floor" <+4930123>',
        variables={"NOTE": "a,b;c|d\nline two", "EMPTY": ""},
    )
    try:
        assert await session.get_variable("NOTE") == "a,b;c|d\nline two"
        assert await session.get_variable("EMPTY") == ""
        assert (session.channel.caller.name, session.channel.caller.number) == (
            "Desk, 2nd floor",
            "+4930123",
        )
    finally:
        await session.hangup()
