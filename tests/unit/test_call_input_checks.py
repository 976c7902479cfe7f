"""Bad input to a call's methods on FakeAsterisk: a transfer into a dialplan place that
does not exist, an empty variable name. The real Asterisk's side of each is in
``tests/integration/test_bad_call_input.py``; the fake's dialplan answers as the sandbox
does (``tests/integration/test_fake_contract.py::continue_nowhere``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fake_apps import routed_app

from voxtra import CallSession, ConfigError, InvalidTransferTarget
from voxtra.testing import FakeAsterisk

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


async def test_a_transfer_to_a_place_the_dialplan_lacks_keeps_the_caller(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    """The caller stays with the handler, which hears why; a missing extension of a
    context with an "i" extension is the dialplan's to handle, and goes ahead."""
    fake_asterisk.dialplan = {"from-internal": {"sales": 2}, "ivr": {"s": 3, "i": 2}}
    seen: dict[str, Any] = {}

    async def handler(call: CallSession) -> None:
        await call.answer()
        for target in ("support@from-internal", "sales@from-internal:3", "sales@elsewhere"):
            with pytest.raises(InvalidTransferTarget) as caught:
                await call.transfer_to(target)
            seen[target] = caught.value.reason
        seen["kept"] = (call.transferred, call.ended)
        await call.transfer_to("9@ivr")

    app = routed_app(tmp_path, "bad-transfer", handler)
    async with fake_asterisk.serve(app):
        call = await fake_asterisk.incoming(extension="1000")
        await call.wait_left_app()
    assert seen == {
        "support@from-internal": "the dialplan context 'from-internal' has no extension 'support'",
        "sales@from-internal:3": (
            "the extension 'sales' of the dialplan context 'from-internal' has no priority 3"
        ),
        "sales@elsewhere": "Asterisk's dialplan has no context 'elsewhere'",
        "kept": (False, False),
    }
    assert (call.transferred_to, call.extension, call.ended) == ("9@ivr", "i", False)


async def test_without_a_dialplan_to_ask_the_transfer_goes_unchecked(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    """An Asterisk that cannot evaluate DIALPLAN_EXISTS (no func_dialplan: a 500, as
    the fake without a dialplan) continues the call as before the check existed."""

    async def handler(call: CallSession) -> None:
        await call.transfer_to("support@from-internal")

    app = routed_app(tmp_path, "unchecked-transfer", handler)
    async with fake_asterisk.serve(app):
        call = await fake_asterisk.incoming(extension="1000")
        await call.wait_left_app()
    assert call.transferred_to == "support@from-internal"
    assert ("GET", f"/channels/{call.id}/variable") in fake_asterisk.requests


async def test_an_empty_variable_name_is_refused_before_asterisk(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    """A ConfigError, not the AriBadRequest of Asterisk's 400, and the call goes on."""
    errors: list[BaseException] = []

    async def handler(call: CallSession) -> None:
        try:
            await call.set_variable("", "x")
        except ConfigError as error:
            errors.append(error)
        try:
            await call.get_variable("")
        except ConfigError as error:
            errors.append(error)
        await call.hangup()

    app = routed_app(tmp_path, "bad-variable", handler)
    async with fake_asterisk.serve(app):
        call = await fake_asterisk.incoming(extension="1000")
        await call.wait_ended()
    assert [str(e) for e in errors] == [
        "set_variable() needs a variable name, not ''",
        "get_variable() needs a variable name, not ''",
    ]
