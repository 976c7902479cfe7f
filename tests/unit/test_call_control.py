"""The telephony backend seam: a CallSession does its call control through its
CallControl, and what a backend cannot do raises NotSupported naming both."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fake_apps import fake_app

from voxtra import CallSession, VoxtraApp
from voxtra.ari.models import CallerID, Channel
from voxtra.calls.asterisk import AsteriskControl
from voxtra.calls.context import CallContext
from voxtra.calls.control import Originator
from voxtra.errors import NotSupported, VoxtraError
from voxtra.media.transport import MediaTransport
from voxtra.testing import FakeAsterisk
from voxtra.twilio import TwilioBackend

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


class StubControl:
    """A backend that can hang up and answer, and nothing else."""

    backend = "stub"

    def __init__(self, context: CallContext) -> None:
        self.context = context
        self.calls: list[str] = []

    def require(self, method: str) -> None:
        raise NotSupported(method, self.backend)

    async def answer(self) -> None:
        self.calls.append("answer")
        self.context.mark_answered()

    async def hangup(self, reason: str) -> None:
        self.calls.append(f"hangup {reason}")
        self.context.mark_ended()

    @property
    def transport(self) -> MediaTransport | None:
        return None

    def __getattr__(self, name: str) -> Any:
        async def unsupported(*args: Any, **kwargs: Any) -> Any:
            raise NotSupported(f"{name}()", self.backend)

        return unsupported


@pytest.fixture
def app(tmp_path: Path) -> VoxtraApp:
    return fake_app(tmp_path, "control-tests", environ={})


def _session(app: VoxtraApp, control: Callable[[CallContext], Any] | None) -> CallSession:
    channel = Channel(id="stub-1", state="Ringing", caller=CallerID(number="+15550001"))
    return CallSession(app, channel, called_number="+15550002", control=control)


def test_not_supported_names_method_and_backend() -> None:
    error = NotSupported("hold()", "twilio", "Twilio plays its own hold music")
    assert isinstance(error, VoxtraError)
    assert (error.method, error.backend) == ("hold()", "twilio")
    assert str(error) == (
        "hold() is not supported on the twilio backend: Twilio plays its own hold music"
    )


async def test_session_routes_call_control_through_its_backend(app: VoxtraApp) -> None:
    session = _session(app, StubControl)
    control = session.control
    assert isinstance(control, StubControl) and session.context.control is control
    assert session.backend == "stub" and session.recorder is None
    await session.answer()
    assert session.duration >= 0 and session.context.answered_at is not None
    for call in (
        session.hold(),
        session.mute(),
        session.get_variable("X"),
        session.send_dtmf("1"),
        session.play_file("hello-world"),
        session.transfer_to("+15550003"),
        session.record_start(),
    ):
        with pytest.raises(NotSupported, match="on the stub backend"):
            await call
    # Features built on Asterisk's bridges and legs say so before touching ARI.
    with pytest.raises(NotSupported, match=r"^dial\(\) is not supported on the stub"):
        await session.dial("PJSIP/100")
    with pytest.raises(NotSupported, match=r"connect\(\)"):
        await session.connect()
    with pytest.raises(NotSupported, match=r"secure_input\(\)"):
        session.secure_input()
    with pytest.raises(NotSupported, match=r"transfer_to\(warm=True\)"):
        await session.transfer_to("PJSIP/100", warm=True, summary="hi")
    await session.hangup("busy")
    await session.hangup()  # idempotent: the backend hears it once
    assert control.calls == ["answer", "hangup busy"]
    assert session.ended


async def test_asterisk_is_the_default_backend(fake_asterisk: FakeAsterisk, app: VoxtraApp) -> None:
    seen: dict[str, Any] = {}
    done = asyncio.Event()

    @app.route("1000")
    async def handler(call: CallSession) -> None:
        seen["backend"] = call.backend
        seen["control"] = call.control
        await call.answer()
        await call.hold()
        await call.unhold()
        done.set()

    async with fake_asterisk.serve(app):
        await fake_asterisk.incoming(extension="1000", caller="111")
        await asyncio.wait_for(done.wait(), 5)
    assert seen["backend"] == "asterisk" and isinstance(seen["control"], AsteriskControl)
    names = [r[1] for r in fake_asterisk.requests]
    assert any(n.endswith("/answer") for n in names) and any(n.endswith("/moh") for n in names)


def test_both_backends_originate_alike(app: VoxtraApp) -> None:
    twilio_app = VoxtraApp(
        "http://asterisk.invalid:8088",
        environ={},
        instance_id="unit",
        twilio={"account_sid": "AC1", "auth_token": "t", "public_url": "https://x"},
    )
    assert isinstance(app, Originator)
    assert isinstance(TwilioBackend(twilio_app), Originator)
    for originate in (app.originate, TwilioBackend(twilio_app).originate):
        names = inspect.signature(originate).parameters
        assert {"caller_id", "timeout", "handler", "metadata"} <= set(names)
