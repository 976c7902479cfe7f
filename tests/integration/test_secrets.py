"""A known password and provider key never show in any log line, error or output.

Issue 16: ``VOXTRA_PASSWORD=$'secret\\n' voxtra doctor`` printed the password (the
SettingsError chained pydantic's error, whose text holds ``input_value=...``), and
``model_dump()`` held it in clear. This test runs config loading with bad values,
``voxtra doctor``, an app start with a wrong password against the real Asterisk (ARI
401), the events stream and a provider with a rejected key, captures every log record
(root and ``voxtra`` loggers at DEBUG), every raised exception (str, repr, the full
formatted traceback, and every ``__cause__``/``__context__`` even when suppressed) and
all output, and asserts the secrets appear nowhere: neither in clear nor as the base64
``user:password`` token of a Basic ``Authorization`` header.
"""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest

from voxtra.app import VoxtraApp
from voxtra.ari.client import AriClient
from voxtra.ari.errors import AriUnauthorized
from voxtra.ari.stream import AriEventStream
from voxtra.config import SettingsError, VoxtraSettings, load_settings
from voxtra.errors import MediaError, ProviderError
from voxtra.media.ws_transport import WebSocketMediaTransport
from voxtra.testing.pytest_plugin import AsteriskTarget

pytestmark = pytest.mark.asterisk

PASSWORD = "Zq7-leak-canary-4f1e9b"
PROVIDER_KEY = "dgkey-leak-canary-8c2d51"


def _forbidden(username: str) -> list[str]:
    """The secrets, and what a Basic Authorization header would make of them."""
    basic = base64.b64encode(f"{username}:{PASSWORD}".encode()).decode()
    return [PASSWORD, PROVIDER_KEY, basic, PASSWORD.encode().hex()]


def _exception_texts(exc: BaseException) -> Iterator[str]:
    """str, repr and formatted traceback of an error and of everything chained to it."""
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        yield "".join(traceback.format_exception(current))
        yield repr(getattr(current, "args", ()))
        # Suppressed contexts too: a tool such as a crash reporter may walk them.
        for chained in (current.__cause__, current.__context__):
            if chained is not None:
                stack.append(chained)


class Evidence:
    """Everything a run left behind that a person or a log shipper could read."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []

    def add(self, where: str, text: str) -> None:
        self.texts.append((where, text))

    def error(self, where: str, exc: BaseException) -> None:
        for text in _exception_texts(exc):
            self.add(where, text)

    def logs(self, caplog: pytest.LogCaptureFixture) -> None:
        for record in caplog.records:
            self.add(f"log {record.name}", record.getMessage())
            self.add(f"log {record.name} args", repr(record.args))
            if record.exc_info and record.exc_info[1] is not None:
                self.error(f"log {record.name} exc_info", record.exc_info[1])
        self.add("caplog text", caplog.text)

    def leaks(self, forbidden: list[str]) -> list[str]:
        return [
            f"{where}: contains {secret[:6]}...: {text[:300]!r}"
            for where, text in self.texts
            for secret in forbidden
            if secret in text
        ]


@pytest.fixture
def evidence(caplog: pytest.LogCaptureFixture) -> Iterator[Evidence]:
    caplog.set_level(logging.DEBUG)  # the root logger: every library's records
    caplog.set_level(logging.DEBUG, logger="voxtra")
    yield Evidence()


def _doctor(env_password: str, ari_url: str, username: str) -> subprocess.CompletedProcess[str]:
    """``voxtra --log-level DEBUG doctor`` in a real process, as a user runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOXTRA_")}
    env.update(
        VOXTRA_ARI_URL=ari_url,
        VOXTRA_USERNAME=username,
        VOXTRA_PASSWORD=env_password,
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
    )
    return subprocess.run(
        [sys.executable, "-m", "voxtra.cli", "--log-level", "DEBUG", "doctor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_settings_never_show_the_password(evidence: Evidence) -> None:
    settings = VoxtraSettings(password=PASSWORD)
    for where, text in [
        ("repr", repr(settings)),
        ("str", str(settings)),
        ("model_dump", repr(settings.model_dump())),
        ("model_dump json", repr(settings.model_dump(mode="json"))),
        ("model_dump_json", settings.model_dump_json()),
        ("redacted", repr(settings.redacted())),
        ("password repr", repr(settings.password)),
        ("password str", str(settings.password)),
        ("format", f"{settings} {settings!r} {settings.password}"),
    ]:
        evidence.add(where, text)
    assert evidence.leaks(_forbidden("voxtra")) == []
    assert settings.redacted()["password"] == "***"
    assert settings.password.get_secret_value() == PASSWORD  # kept, only hidden


@pytest.mark.parametrize(
    "bad",
    [
        PASSWORD + "\n",  # the reported case: a trailing newline from `echo` or a file
        PASSWORD + "\r\nX-Evil: 1",
        "\x01" + PASSWORD,
    ],
)
def test_rejected_password_is_named_never_shown(
    bad: str, evidence: Evidence, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    attempts = [
        ("environment", lambda: load_settings(environ={"VOXTRA_PASSWORD": bad})),
        ("alias", lambda: load_settings(environ={"VOXTRA_ARI_PASSWORD": bad})),
        ("argument", lambda: load_settings(environ={}, password=bad)),
        ("constructor", lambda: VoxtraSettings(password=bad)),
        ("app", lambda: VoxtraApp(password=bad, environ={})),
        ("yaml", lambda: VoxtraSettings.from_yaml(f"password: {bad!r}\n".replace("'", '"'))),
        (
            "yaml placeholder",
            lambda: load_settings(
                config_file=_yaml(tmp_path, "password: ${ARI_SECRET}\n"),
                environ={"ARI_SECRET": bad},
            ),
        ),
        (
            "yaml bad placeholder",
            lambda: VoxtraSettings.from_yaml(f"password: x${{{PASSWORD} oops}}\n"),
        ),
        ("url user info", lambda: VoxtraSettings(ari_url=f"http://voxtra:{PASSWORD}@host:8088")),
    ]
    for where, attempt in attempts:
        with pytest.raises(SettingsError) as info:
            attempt()
        evidence.error(where, info.value)
        assert info.value.problems, where
        assert any(path.startswith(("password", "ari_url")) for path, _ in info.value.problems), (
            f"{where}: {info.value.problems}"
        )

    settings = VoxtraSettings(password="fine")
    with pytest.raises(SettingsError) as info:
        settings.password = bad  # type: ignore[assignment]
    evidence.error("assignment", info.value)

    evidence.logs(caplog)
    assert evidence.leaks(_forbidden("voxtra")) == []


def _yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "voxtra.yaml"
    path.write_text(text)
    return path


def test_doctor_with_a_bad_password_names_the_setting_only(asterisk: AsteriskTarget) -> None:
    done = _doctor(PASSWORD + "\n", asterisk.ari_url, asterisk.username)
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "password" in output and "VOXTRA_PASSWORD" in output
    assert "Traceback" not in output  # a clean message, not a crash
    leaks = [s[:6] for s in _forbidden(asterisk.username) if s in output]
    assert leaks == [], output


def test_doctor_with_a_wrong_password_reports_401_only(asterisk: AsteriskTarget) -> None:
    done = _doctor(PASSWORD, asterisk.ari_url, asterisk.username)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "AriUnauthorized" in output and "401" in output
    leaks = [s[:6] for s in _forbidden(asterisk.username) if s in output]
    assert leaks == [], output


async def test_app_start_with_a_wrong_password_leaks_nothing(
    asterisk: AsteriskTarget,
    evidence: Evidence,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from voxtra.providers.deepgram_stt import DeepgramSTT
    from voxtra.testing.fakes import FakeDeepgram

    async with FakeDeepgram(api_key="the-right-key") as fake:
        stt = DeepgramSTT(api_key=PROVIDER_KEY, base_url=fake.url)
        evidence.add("stt repr", repr(stt))
        with pytest.raises(ProviderError) as provider_error:
            await stt.stream()  # 401: the key is refused
        evidence.error("provider 401", provider_error.value)

        app = VoxtraApp(
            asterisk.ari_url, asterisk.username, PASSWORD, "voxtra-secrets", environ={}, stt=stt
        )
        evidence.add("app settings repr", repr(app.settings))
        evidence.add("app ari vars", repr(vars(app.ari)))
        with pytest.raises(AriUnauthorized) as start_error:
            await app.start(timeout=5)
        assert start_error.value.status == 401
        evidence.error("app start", start_error.value)
        await app.stop()

    # The events WebSocket refuses the login too (aiohttp's handshake error carries
    # the request's headers, Authorization included, in its request_info).
    async with AriClient(asterisk.ari_url, asterisk.username, PASSWORD) as client:
        stream = AriEventStream(client, "voxtra-secrets", on_event=lambda _event: None)
        with pytest.raises(AriUnauthorized) as stream_error:
            await stream.run()
        evidence.error("events 401", stream_error.value)

    # The media WebSocket (chan_websocket) with the same refused login.
    with pytest.raises(MediaError) as media_error:
        await WebSocketMediaTransport.connect(
            asterisk.ari_url,
            "voxtra-secrets-no-such-connection",
            username=asterisk.username,
            password=PASSWORD,
            start_timeout=2,
        )
    evidence.error("media websocket", media_error.value)

    out = capsys.readouterr()
    evidence.add("stdout", out.out)
    evidence.add("stderr", out.err)
    evidence.logs(caplog)
    assert any("401" in text for _, text in evidence.texts)  # the run did fail as meant
    assert evidence.leaks(_forbidden(asterisk.username)) == []


async def test_refused_provider_keys_leak_nothing(
    evidence: Evidence, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    from pydantic import SecretStr

    from voxtra.providers.base import ChatMessage
    from voxtra.providers.elevenlabs_tts import ElevenLabsTTS
    from voxtra.providers.openai_llm import OpenAILLM
    from voxtra.testing.fakes import FakeElevenLabs, FakeOpenAI

    async with FakeOpenAI("the-right-key") as fake_llm:
        for key in (PROVIDER_KEY, SecretStr(PROVIDER_KEY)):
            llm = OpenAILLM(key, base_url=fake_llm.base_url)
            evidence.add("llm repr", repr(llm))
            with pytest.raises(ProviderError) as info:
                async for _chunk in llm.generate([ChatMessage("user", "hi")]):
                    pass
            evidence.error("openai 401", info.value)
    async with FakeElevenLabs("the-right-key") as fake_tts:
        for key in (PROVIDER_KEY, SecretStr(PROVIDER_KEY)):
            tts = ElevenLabsTTS(key, "voice-1", base_url=fake_tts.url)
            with pytest.raises(ProviderError) as info:
                async for _audio in tts.synthesize("hi"):
                    pass
            evidence.error("elevenlabs 401", info.value)

    out = capsys.readouterr()
    evidence.add("output", out.out + out.err)
    evidence.logs(caplog)
    assert sum("401" in text for _, text in evidence.texts) >= 4
    assert evidence.leaks(_forbidden("voxtra")) == []
