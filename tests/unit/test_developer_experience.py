"""Developer experience (issue 14): errors that say what to fix, callbacks checked when
they are registered, the CLI's run options. No Asterisk: a real VoxtraApp whose ARI is
never used (or replaced by a small fake)."""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any

import pytest

import voxtra
from voxtra import CallFailed, CallSession, VoiceConfig, cli
from voxtra.app import VoxtraApp, _refusal_error
from voxtra.ari.aiohttp_transport import AiohttpTransport
from voxtra.ari.errors import AriServerError
from voxtra.ari.models import Channel, Endpoint
from voxtra.errors import CallbackSignatureError, ConfigError, PipelineNotConfigured, VoxtraError
from voxtra.pipeline import VoicePipeline
from voxtra.routing import Route, Router


def make_app(**kwargs: Any) -> VoxtraApp:
    return VoxtraApp("http://127.0.0.1:1", "u", "p", "unit-dx", environ={}, **kwargs)


def session(app: VoxtraApp) -> CallSession:
    return CallSession(app, Channel(id="call-1", state="Up"), voice=app.voice)


class SilentTTS:
    """A TTS object; never asked to speak here (the check comes first)."""

    name = "silent"
    sample_rate = 8000

    async def synthesize(self, text: str) -> Any:  # pragma: no cover
        raise AssertionError("not reached")


# -- item 3: a missing provider is named, with where to give it -------------------------


async def test_say_without_tts_names_tts_and_where_to_pass_it() -> None:
    call = session(make_app())
    with pytest.raises(PipelineNotConfigured) as info:
        await call.say("hello")
    message = str(info.value)
    assert "say() needs a TTS" in message
    assert "pass tts= to VoxtraApp(...) or VoiceConfig(tts=...)" in message
    assert info.value.missing == ("tts",)
    # one base for users, and the old type for code that caught RuntimeError
    assert isinstance(info.value, VoxtraError) and isinstance(info.value, RuntimeError)
    assert voxtra.PipelineNotConfigured is PipelineNotConfigured


async def test_listen_with_only_a_tts_says_the_stt_is_missing() -> None:
    call = session(make_app(voice=VoiceConfig(tts=SilentTTS())))  # type: ignore[arg-type]
    with pytest.raises(PipelineNotConfigured, match=r"listen\(\) needs an STT") as info:
        await call.listen(1)
    assert "pass stt= to VoxtraApp(...) or VoiceConfig(stt=...)" in str(info.value)


async def test_converse_names_every_missing_provider() -> None:
    call = session(make_app(voice=VoiceConfig(tts=SilentTTS())))  # type: ignore[arg-type]
    with pytest.raises(PipelineNotConfigured) as info:
        await call.converse()
    assert info.value.missing == ("stt", "llm")
    assert "converse() needs an STT (speech-to-text) and an LLM" in str(info.value)


async def test_pipeline_methods_name_the_pipeline_argument() -> None:
    from voxtra.pipeline.testing import MemoryMediaIO

    media = MemoryMediaIO()
    pipeline = VoicePipeline(None, None, None)
    with pytest.raises(PipelineNotConfigured, match=r"pass stt=, llm=, tts= to VoicePipeline"):
        await pipeline.run(media)
    with pytest.raises(PipelineNotConfigured, match=r"VoicePipeline.say\(\) needs a TTS"):
        await pipeline.say("hi")


# -- item 2: callbacks are checked at registration ---------------------------------------


async def test_on_hangup_rejects_wrong_arity_and_plain_def_at_registration() -> None:
    call = session(make_app())

    async def no_param() -> None: ...

    def not_async(c: CallSession) -> None: ...

    with pytest.raises(CallbackSignatureError, match=r"on_hangup: .*no_param\(\) takes \(\)"):
        call.on_hangup(no_param)  # type: ignore[arg-type]
    with pytest.raises(CallbackSignatureError, match="must be 'async def'"):
        call.on_hangup(not_async)  # type: ignore[arg-type]
    assert call.context.hangup_callbacks == []
    assert issubclass(CallbackSignatureError, TypeError)
    assert issubclass(CallbackSignatureError, VoxtraError)


async def test_on_hangup_accepts_partials_methods_and_callable_objects() -> None:
    call = session(make_app())

    async def two(tag: str, c: CallSession) -> None: ...

    class Hook:
        async def __call__(self, c: CallSession) -> None: ...

        async def method(self, c: CallSession) -> None: ...

    async def with_default(c: CallSession, extra: int = 0) -> None: ...

    async def star(*args: Any) -> None: ...

    for good in (functools.partial(two, "x"), Hook(), Hook().method, with_default, star):
        call.on_hangup(good)  # type: ignore[arg-type]
    assert len(call.context.hangup_callbacks) == 5
    with pytest.raises(CallbackSignatureError):
        call.on_hangup(functools.partial(two, "x", call))  # type: ignore[arg-type]

    def traced(fn: Any) -> Any:
        @functools.wraps(fn)
        def wrapper(*args: Any) -> Any:
            return fn(*args)  # the coroutine: awaitable

        return wrapper

    @traced
    async def decorated(c: CallSession) -> None: ...

    call.on_hangup(decorated)
    assert len(call.context.hangup_callbacks) == 6

    class SyncHook:
        def __call__(self, c: CallSession) -> None: ...

    with pytest.raises(CallbackSignatureError, match="must be 'async def'"):
        call.on_hangup(SyncHook())  # type: ignore[arg-type]


def test_app_hooks_are_checked_at_registration() -> None:
    app = make_app()

    async def takes_app(app: Any) -> None: ...

    def sync_startup() -> None: ...

    async def delivered_no_arg() -> None: ...

    with pytest.raises(CallbackSignatureError, match="on_startup"):
        app.on_startup(takes_app)  # type: ignore[arg-type]
    with pytest.raises(CallbackSignatureError, match="must be 'async def'"):
        app.on_startup(sync_startup)  # type: ignore[arg-type]
    with pytest.raises(CallbackSignatureError, match="on_shutdown"):
        app.on_shutdown(takes_app)  # type: ignore[arg-type]
    with pytest.raises(CallbackSignatureError, match="on_recording_delivered"):
        app.on_recording_delivered(delivered_no_arg)  # type: ignore[arg-type]
    app.on_recording_delivered(lambda meta: None)  # a plain function is fine here
    assert app._startup == [] and app._shutdown == [] and len(app._delivered_hooks) == 1


def test_route_handlers_are_checked_for_their_call_parameter() -> None:
    app = make_app()

    async def no_call() -> None: ...

    with pytest.raises(CallbackSignatureError, match=r"route handler: .*no_call\(\)"):
        app.route("100")(no_call)  # type: ignore[arg-type]
    with pytest.raises(CallbackSignatureError):
        app.default(no_call)  # type: ignore[arg-type]
    with pytest.raises(ConfigError):  # what Route raised before, still true
        Route(no_call)  # type: ignore[arg-type]


# -- item 8: a refused originate says what to fix ---------------------------------------


def _allocation_failed() -> AriServerError:
    return AriServerError(500, "POST", "/channels", "Allocation failed")


def test_refused_originate_to_an_unknown_endpoint() -> None:
    error = _refusal_error("PJSIP/nobody", _allocation_failed(), None)
    assert isinstance(error, CallFailed)
    assert "no such endpoint: Asterisk has no PJSIP endpoint 'nobody'" in str(error)
    assert "pjsip show endpoints" in error.hint
    assert "cause None" not in str(error)


def test_refused_originate_to_an_unregistered_endpoint() -> None:
    offline = Endpoint(technology="PJSIP", resource="alice", state="offline")
    error = _refusal_error("PJSIP/alice", _allocation_failed(), offline)
    assert "endpoint 'alice' is offline: not registered or not reachable" in str(error)
    assert "pjsip show aor alice" in error.hint


def test_refused_originate_with_an_unknown_technology() -> None:
    error = _refusal_error("Foo/bar", _allocation_failed(), None, known_technology=False)
    assert "no such channel technology 'Foo'" in str(error)


# -- item 9: run options, one name for the default handler, the spool is said ----------


APP_MODULE = """
from voxtra.app import VoxtraApp
app = VoxtraApp(environ=None)
"""


def test_run_takes_config_and_app_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("VOXTRA_CONFIG", "VOXTRA_APP_NAME", "VOXTRA_ARI_URL"):
        # setenv first: delenv of an absent variable records nothing, so the
        # VOXTRA_CONFIG that `run --config` sets stayed for every later test (in a CI
        # run the examples' apps took their app name from this test's YAML).
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    config = tmp_path / "settings.yaml"
    config.write_text("ari_url: http://pbx.example:8088\napp_name: from-yaml\n")
    module = tmp_path / "dx_app_module.py"
    module.write_text(APP_MODULE)
    args = cli._parser().parse_args(
        ["run", "--config", str(config), "--app-name", "from-cli", f"{module}:app"]
    )
    app = cli._prepare_run(args)
    assert app.settings.ari_url == "http://pbx.example:8088"
    assert app.app_name == "from-cli" and app.settings.app_name == "from-cli"
    args = cli._parser().parse_args(["run", "--config", str(config), f"{module}:app"])
    assert cli._prepare_run(args).app_name == "from-yaml"


def test_run_app_name_wins_over_the_name_in_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOXTRA_APP_NAME", "")
    monkeypatch.delenv("VOXTRA_APP_NAME")
    module = tmp_path / "dx_named_module.py"
    module.write_text(
        "from voxtra.app import VoxtraApp\n"
        "app = VoxtraApp('http://127.0.0.1:1', 'u', 'p', 'in-code', environ={})\n"
    )
    args = cli._parser().parse_args(["run", "--app-name", "from-cli", f"{module}:app"])
    app = cli._prepare_run(args)
    assert app.app_name == "from-cli"
    assert app._instance_slot is None or app._instance_slot.held


def test_run_config_that_does_not_exist_is_a_clear_exit(tmp_path: Path) -> None:
    # A ConfigError now, which the command line says in one line and exits 2 with
    # (tests/unit/test_cli.py); it was a SystemExit, exit status 1.
    args = argparse.Namespace(config=str(tmp_path / "nope.yaml"), app_name=None, app="x:app")
    with pytest.raises(ConfigError, match="no such file"):
        cli._prepare_run(args)


def test_default_has_one_name_and_set_default_is_its_alias() -> None:
    app = make_app()

    async def fallback(call: Any) -> None: ...

    async def other(call: Any) -> None: ...

    assert app.default(fallback) is fallback
    assert app.router.default is fallback
    app.set_default(other)
    assert app.router.default is other
    router = Router(default=fallback)
    assert router.set_default(other) is other and router.default is other


async def test_a_failed_start_releases_what_it_took() -> None:
    app = make_app()
    assert app._instance_slot is not None and app._instance_slot.held

    class Refusing:
        async def info(self) -> None:
            raise _allocation_failed()

    app.ari.asterisk = Refusing()  # type: ignore[assignment]
    with pytest.raises(VoxtraError):
        await app.start()
    assert not app._instance_slot.held  # a retried start() claims it again
    assert isinstance(app.ari.transport, AiohttpTransport) and app.ari.transport.closed
