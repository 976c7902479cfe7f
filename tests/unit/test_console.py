"""``voxtra console``: typed lines drive a real app's handlers on FakeAsterisk."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from voxtra import CallSession, VoiceConfig, VoxtraApp
from voxtra.pipeline.io import MonotonicClock
from voxtra.testing.console import run_console
from voxtra.testing.doubles import Reply, ScriptedLLM

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


async def _typed(*lines: str) -> AsyncIterator[str]:
    for line in lines:
        yield line


def _app(tmp_path: Path, **options: object) -> VoxtraApp:
    return VoxtraApp(
        "http://asterisk.invalid:8088",
        "u",
        "p",
        app_name="console-tests",
        instance_id="unit",
        spool_dir=str(tmp_path / "spool"),
        **options,
    )


async def test_typed_lines_are_heard_and_the_agent_is_printed(tmp_path: Path) -> None:
    app = _app(tmp_path, voice=VoiceConfig(llm=ScriptedLLM([], MonotonicClock())))
    heard: list[str | None] = []

    @app.route("1000")
    async def agent(call: CallSession) -> None:
        await call.answer()
        await call.say("Hello, how can I help?")
        turn = await call.listen(timeout=5)
        heard.append(turn.text if turn else None)
        await call.say(f"You said {turn.text if turn else 'nothing'}.")

    out = io.StringIO()
    assert await run_console(app, lines=_typed("when are you open"), out=out) == 0
    text = out.getvalue()
    assert heard == ["when are you open"]
    assert "agent: Hello, how can I help?" in text
    assert "caller: when are you open" in text
    assert "agent: You said when are you open." in text
    assert text.rstrip().endswith("[call ended]")


async def test_keys_and_playbacks_in_a_menu(tmp_path: Path) -> None:
    app = _app(tmp_path)

    @app.route("2000")
    async def menu(call: CallSession) -> None:
        await call.answer()
        await call.play_and_wait("sound:main-menu")
        if await call.listen_dtmf(timeout=5) == "1":
            await call.transfer_to_queue("support")

    out = io.StringIO()
    await run_console(app, extension="2000", lines=_typed("/dtmf 1"), out=out)
    text = out.getvalue()
    assert "[plays sound:main-menu]" in text
    assert "[transferred to support@voxtra-queues]" in text
    assert text.rstrip().endswith("[the call left the app]")


async def test_the_llm_conversation_prints_turn_latency(tmp_path: Path) -> None:
    clock = MonotonicClock()
    app = _app(
        tmp_path,
        voice=VoiceConfig(
            llm=ScriptedLLM([Reply(["We open at nine."])], clock, delay=0.0),
            greeting="Welcome.",
        ),
    )

    @app.route("3000")
    async def agent(call: CallSession) -> None:
        await call.answer()
        await call.converse()

    out = io.StringIO()
    await run_console(app, extension="3000", lines=_typed("when do you open"), out=out)
    text = out.getvalue()
    assert "agent: Welcome." in text and "agent: We open at nine." in text
    assert "(turn: " in text


def test_voxtra_console_runs_an_app_file_from_the_command_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    app_file = tmp_path / "hello.py"
    app_file.write_text(
        "from voxtra import VoxtraApp\n"
        f"app = VoxtraApp(app_name='cli-console', spool_dir={str(tmp_path / 'spool')!r})\n"
        "@app.route('1000')\n"
        "async def hello(call):\n"
        "    await call.answer()\n"
        "    await call.play_and_wait('sound:hello-world')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXTRA_")}
    done = subprocess.run(
        [sys.executable, "-m", "voxtra.cli", "console", str(app_file)],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert "[plays sound:hello-world]" in done.stdout
