"""A whole VoxtraApp against FakeAsterisk: what a user's handler test looks like.

Uses the ``fake_asterisk`` fixture as a user would get it: from the ``pytest11`` entry
point, with no conftest line.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from fake_apps import fake_app

from voxtra import VoxtraApp
from voxtra.errors import VoxtraError
from voxtra.testing import FakeAsterisk

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture
def make_app(tmp_path: Path) -> Callable[[], VoxtraApp]:
    return functools.partial(fake_app, tmp_path, "handler-tests")


async def test_a_handler_answers_plays_reads_a_key_and_hangs_up(
    fake_asterisk: FakeAsterisk, make_app: Callable[[], VoxtraApp]
) -> None:
    app = make_app()
    pressed: list[str | None] = []

    @app.route("1000")
    async def menu(call):  # type: ignore[no-untyped-def]
        await call.answer()
        await call.play_and_wait("sound:main-menu")
        digit = await call.listen_dtmf(timeout=5)
        pressed.append(digit)
        await call.play_and_wait(f"digits:{digit}")
        await call.hangup()

    async with fake_asterisk.serve(app):
        call = await fake_asterisk.incoming(extension="1000", caller="+4930123")
        await call.wait_answered()
        await call.wait_until(lambda c: len(c.played) == 1)
        await call.press("7")
        await call.wait_ended()

    assert pressed == ["7"]
    assert call.played == ["sound:main-menu", "digits:7"]
    assert call.hangup_cause == 16


async def test_the_caller_hanging_up_ends_the_handler(
    fake_asterisk: FakeAsterisk, make_app: Callable[[], VoxtraApp]
) -> None:
    app = make_app()
    ended: list[bool] = []

    @app.route("2000")
    async def hold(call):  # type: ignore[no-untyped-def]
        await call.answer()
        await call.hold()
        try:
            await call.wait_ended(timeout=10)
        finally:
            ended.append(True)

    async with fake_asterisk.serve(app):
        call = await fake_asterisk.incoming(extension="2000")
        await call.wait_until(lambda c: c.on_hold)
        await call.hang_up()
        await fake_asterisk.wait_until(lambda: bool(ended))
    assert call.ended


async def test_a_transfer_to_a_queue_is_a_dialplan_continue(
    fake_asterisk: FakeAsterisk, make_app: Callable[[], VoxtraApp]
) -> None:
    app = make_app()

    @app.route("3000")
    async def to_queue(call):  # type: ignore[no-untyped-def]
        await call.answer()
        await call.transfer_to_queue("support")

    async with fake_asterisk.serve(app):
        call = await fake_asterisk.incoming(extension="3000")
        await call.wait_left_app()
    assert call.transferred_to == "support@voxtra-queues"
    assert not call.ended  # the dialplan has it now


async def test_a_transfer_to_an_endpoint_bridges_an_outbound_leg(
    fake_asterisk: FakeAsterisk, make_app: Callable[[], VoxtraApp]
) -> None:
    app = make_app()

    @app.route("4000")
    async def to_agent(call):  # type: ignore[no-untyped-def]
        await call.answer()
        await call.transfer_to("PJSIP/agent")

    async with fake_asterisk.serve(app):
        call = await fake_asterisk.incoming(extension="4000")
        await call.wait_until(lambda c: c.transferred_to is not None)
        assert call.transferred_to == "PJSIP/agent"
        assert [leg.endpoint for leg in fake_asterisk.originated] == ["PJSIP/agent"]
        await call.hang_up()
        await fake_asterisk.originated[0].wait_ended()


async def test_originate_busy_and_answered(
    fake_asterisk: FakeAsterisk, make_app: Callable[[], VoxtraApp]
) -> None:
    from voxtra.errors import CallBusy

    app = make_app()
    async with fake_asterisk.serve(app):
        fake_asterisk.endpoint_outcomes["PJSIP/busy"] = "busy"
        with pytest.raises(CallBusy):
            await app.originate("PJSIP/busy", timeout=5)
        session = await app.originate("PJSIP/bob", timeout=5)
        assert session.id == fake_asterisk.originated[-1].id
        await session.hangup()
        await fake_asterisk.originated[-1].wait_ended()


async def test_the_app_reconnects_after_an_events_outage(
    fake_asterisk: FakeAsterisk, make_app: Callable[[], VoxtraApp]
) -> None:
    app = make_app()

    @app.route("5000")
    async def answer(call):  # type: ignore[no-untyped-def]
        await call.answer()
        await call.hangup()

    async with fake_asterisk.serve(app):
        fake_asterisk.disconnect_events()
        await fake_asterisk.wait_connected("handler-tests", timeout=10)
        assert fake_asterisk.connects == 2
        call = await fake_asterisk.incoming(extension="5000")
        await call.wait_ended()
        assert call.answered


async def test_use_transport_refused_once_running(
    fake_asterisk: FakeAsterisk, make_app: Callable[[], VoxtraApp]
) -> None:
    app = make_app()
    async with fake_asterisk.serve(app):
        with pytest.raises(VoxtraError):
            app.use_transport(FakeAsterisk())


def test_the_fixture_reaches_a_users_tests_through_the_entry_point(tmp_path: Path) -> None:
    """A project with Voxtra installed gets ``fake_asterisk`` with no conftest at all."""
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent(
            """
            import pytest

            @pytest.mark.asyncio
            async def test_it(fake_asterisk):
                connection = await fake_asterisk.connect_events(["user-app"])
                call = await fake_asterisk.incoming(extension="1000")
                assert call.in_app
                await connection.close()
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_user.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


async def test_a_voice_agent_hears_the_caller_over_the_fakes_rtp(
    fake_asterisk: FakeAsterisk, make_app: Callable[[], VoxtraApp], tmp_path: Path
) -> None:
    """The scripted providers and the fake's RTP media: a dialogue with no real audio."""
    from voxtra.pipeline.io import MonotonicClock
    from voxtra.testing.doubles import EnergyVAD, Reply, ScriptedLLM, ScriptedSTT, ScriptedTTS

    clock = MonotonicClock()
    tts = ScriptedTTS(clock, ms_per_char=10, first_byte=0)
    app = VoxtraApp(
        "http://asterisk.invalid:8088",
        "user",
        "secret",
        app_name="voice-tests",
        instance_id="unit",
        spool_dir=str(tmp_path / "spool"),
        stt=ScriptedSTT(["what time is it"], clock, delay=0.01),
        llm=ScriptedLLM([Reply(["It is noon."])], clock, delay=0),
        tts=tts,
        vad=EnergyVAD(),
    )
    heard: list[str | None] = []

    @app.route("6000")
    async def agent(call):  # type: ignore[no-untyped-def]
        await call.answer()
        await call.say("Hello, ask me something.")
        turn = await call.listen(timeout=10)
        heard.append(turn.text if turn else None)
        await call.say("It is noon.")
        await call.hangup()

    async with fake_asterisk.serve(app):
        call = await fake_asterisk.incoming(extension="6000")
        # the greeting arrives over RTP: the media is up
        await call.wait_until(lambda c: any(b != 0xFF for b in c.audio_heard), timeout=10)
        call.send_audio(b"\x80\x00" * 4000)  # 1 s of a loud tone: the caller speaks
        await call.wait_ended(timeout=20)

    assert heard == ["what time is it"]
    assert [text for _, text in tts.requests] == ["Hello, ask me something.", "It is noon."]


async def test_serve_stops_the_app_when_the_test_body_fails(
    fake_asterisk: FakeAsterisk, make_app: Callable[[], VoxtraApp]
) -> None:
    app = make_app()
    with pytest.raises(ZeroDivisionError):
        async with fake_asterisk.serve(app):
            assert fake_asterisk.apps == {"handler-tests"}
            _ = 1 / 0
    assert fake_asterisk.apps == set()
