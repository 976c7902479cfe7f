"""``voxtra init``: a new project from a template that works on the first run.

The project holds an app with an IVR menu and a voice agent on the embedded speech
defaults, a test of each against FakeAsterisk (milliseconds, no Asterisk, no audio),
and a README whose two commands are the ones that work: the tests, and running the app
against an Asterisk.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

from voxtra.errors import ConfigError

__all__ = ["create_project"]

_NAME = re.compile(r"[a-z][a-z0-9_]{0,40}")

APP = '''"""{name}: a Voxtra voice app (an IVR menu on 1000, a voice agent on 2000)."""

from __future__ import annotations

from voxtra import CallSession, VoiceConfig, VoxtraApp


def support_hours() -> str:
    """When the support line is open."""
    return "Monday to Friday, nine to five."


app = VoxtraApp(app_name="{name}")


@app.route("1000")
async def menu(call: CallSession) -> None:
    """Press 1 for support (the Asterisk queue "support"); anything else: goodbye."""
    await call.answer()
    await call.play_file("sound:hello-world")
    digit = await call.listen_dtmf(timeout=5)
    if digit == "1":
        await call.transfer_to_queue("support")
        return
    await call.play_and_wait("sound:vm-goodbye")


@app.route("2000")
async def agent(call: CallSession) -> None:
    """Talk with the agent: say() and listen() on the app's speech providers."""
    await call.answer()
    await call.say("Hello! Ask me when support is open.")
    turn = await call.listen(timeout=10)
    if turn is not None and "open" in turn.text.lower():
        await call.say(f"Support is open {{support_hours()}}")
    else:
        await call.say("Sorry, I did not catch that. Goodbye.")


def build() -> VoxtraApp:
    """The app with the embedded offline speech (``pip install voxtra[local,espeak]``):
    ``voxtra run app.py:build``."""
    from voxtra.providers.espeak_tts import EspeakTTS
    from voxtra.providers.pocketsphinx_stt import PocketSphinxSTT
    from voxtra.providers.webrtc_vad import WebRtcVAD

    app.voice = VoiceConfig(stt=PocketSphinxSTT(), tts=EspeakTTS(), vad=WebRtcVAD())
    return app
'''

TEST = '''"""The app's handlers against FakeAsterisk: no Asterisk, no audio, milliseconds."""

from __future__ import annotations

from dataclasses import replace

from voxtra.testing import FakeAsterisk
from voxtra.testing.doubles import EnergyVAD, ScriptedSTT, ScriptedTTS
from voxtra.pipeline.io import MonotonicClock

from app import app


async def test_pressing_1_goes_to_the_support_queue(fake_asterisk: FakeAsterisk) -> None:
    async with fake_asterisk.serve(app):
        call = await fake_asterisk.incoming(extension="1000", caller="+15550100")
        await call.wait_until(lambda c: c.played == ["sound:hello-world"])
        await call.press("1")
        await call.wait_left_app()
    assert call.transferred_to == "support@voxtra-queues"


async def test_any_other_key_says_goodbye(fake_asterisk: FakeAsterisk) -> None:
    async with fake_asterisk.serve(app):
        call = await fake_asterisk.incoming(extension="1000")
        await call.wait_until(lambda c: len(c.played) == 1)
        await call.press("9")
        await call.wait_ended()
    assert call.played == ["sound:hello-world", "sound:vm-goodbye"]


async def test_the_agent_answers_the_opening_hours(fake_asterisk: FakeAsterisk) -> None:
    clock = MonotonicClock()
    tts = ScriptedTTS(clock, ms_per_char=1, first_byte=0)
    saved = app.voice
    app.voice = replace(
        app.voice,
        stt=ScriptedSTT(["when are you open"], clock, delay=0.01),
        tts=tts,
        vad=EnergyVAD(),
    )
    try:
        async with fake_asterisk.serve(app):
            call = await fake_asterisk.incoming(extension="2000")
            await call.wait_until(lambda c: bool(tts.requests), timeout=10)
            call.send_audio(b"\\x80\\x00" * 4000)  # the caller speaks for a second
            await call.wait_ended(timeout=20)
    finally:
        app.voice = saved
    said = [text for _, text in tts.requests]
    assert said[-1] == "Support is open Monday to Friday, nine to five."
'''

README = """# {name}

A [Voxtra](https://pypi.org/project/voxtra/) voice app: an IVR menu on extension 1000
and a voice agent on 2000 (`app.py`).

```bash
pip install -e '.[dev]' && pytest   # the handlers, against FakeAsterisk: no PBX needed
VOXTRA_ARI_URL=http://127.0.0.1:8088 VOXTRA_USERNAME=voxtra VOXTRA_PASSWORD=voxtra \\
    voxtra run app.py:build         # serve calls from your Asterisk (ARI)
```

Your Asterisk sends calls to the app with `Stasis({name},${{EXTEN}})` in its dialplan,
and needs an ARI user (`ari.conf`) and HTTP (`http.conf`) enabled.
"""

PYPROJECT = """[project]
name = "{name}"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = ["voxtra[local,espeak]"]

[project.optional-dependencies]
dev = ["pytest>=8", "pytest-asyncio>=0.24"]

[tool.setuptools]
py-modules = ["app"]

[tool.pytest.ini_options]
asyncio_mode = "auto"
asyncio_default_fixture_loop_scope = "function"
pythonpath = ["."]
testpaths = ["tests"]
"""


def create_project(directory: str | Path, name: str | None = None) -> list[Path]:
    """Write a new project into ``directory`` (created; it must be empty or absent);
    ``name`` (default: the directory's name) is also its Stasis app name. Returns the
    files written."""
    target = Path(directory)
    # Named after the directory, the name was one the user never typed (`voxtra init .`
    # in a mktemp directory: 'tmp.x1y2z3'): say where it came from and how to choose.
    given = bool(name)
    name = name or target.resolve().name.replace("-", "_").lower()
    if not _NAME.fullmatch(name) or keyword.iskeyword(name):
        where = "" if given else " (from the directory's name; give one with --name)"
        raise ConfigError(
            f"project name {name!r}{where}: use a lower-case letter, then letters, digits "
            "or '_' (it becomes the Stasis app name)"
        )
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{target} is a file: voxtra init writes into a new directory")
    if target.exists() and any(target.iterdir()):
        raise ConfigError(f"{target} is not empty: voxtra init writes into a new directory")
    files = {
        "app.py": APP.format(name=name),
        "tests/test_app.py": TEST,
        "README.md": README.format(name=name),
        "pyproject.toml": PYPROJECT.format(name=name),
        ".gitignore": "__pycache__/\n*.egg-info/\nrecordings/\n",
    }
    written: list[Path] = []
    for relative, text in files.items():
        path = target / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
