"""Settings: defaults, keyword arguments, environment, YAML with ${ENV}, errors, precedence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from voxtra.config import (
    MediaSettings,
    SettingsError,
    VoxtraSettings,
    expand_placeholders,
    load_settings,
)
from voxtra.errors import ConfigError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "config"


def _error(exc_info: pytest.ExceptionInfo[SettingsError]) -> str:
    return str(exc_info.value)


# -------------------------------------------------------------------- defaults and args


def test_defaults() -> None:
    s = VoxtraSettings()
    assert (s.ari_url, s.username, s.password.get_secret_value(), s.app_name) == (
        "http://127.0.0.1:8088",
        "voxtra",
        "voxtra",
        "voxtra",
    )
    assert s.media == MediaSettings(
        transport="rtp",
        codec="ulaw",
        bind_host="127.0.0.1",
        advertise_host=None,
        port_range=(30000, 30999),
        attach_on_answer=False,
    )
    assert s.handler_deadline == 10.0
    assert s.unrouted == "answer_and_hangup"
    assert s.reconcile_policy == "hangup"
    assert (s.recordings_dir, s.spool_dir) == ("recordings", ".voxtra-spool")
    assert s.log_level is None and s.max_call_duration is None and s.silence_timeout is None
    assert (s.ari_reconnect_max_backoff, s.ari_heartbeat) == (3.0, 10.0)


def test_password_is_kept_out_of_repr_and_redacted() -> None:
    s = VoxtraSettings(password="hunter2")
    assert "hunter2" not in repr(s)
    assert s.redacted()["password"] == "***"
    assert s.redacted()["media"]["codec"] == "ulaw"


def test_constructor_errors_are_config_errors() -> None:
    with pytest.raises(SettingsError) as info:
        VoxtraSettings(media={"codec": "gsm"})
    assert _error(info) == (
        "config error in arguments: media.codec: expected one of 'ulaw', 'alaw', 'slin' "
        "or 'slin16', got 'gsm'"
    )
    assert isinstance(info.value, ConfigError)
    assert info.value.problems == [
        ("media.codec", "expected one of 'ulaw', 'alaw', 'slin' or 'slin16', got 'gsm'")
    ]


def test_assignment_is_validated() -> None:
    s = VoxtraSettings()
    with pytest.raises(SettingsError) as info:
        s.ari_heartbeat = "often"  # type: ignore[assignment]
    assert (
        _error(info) == "config error in assignment: ari_heartbeat: expected a number, got 'often'"
    )
    s.ari_heartbeat = 3
    assert s.ari_heartbeat == 3.0


@pytest.mark.parametrize(
    ("recordings", "spool"),
    [
        ("data/recordings", "data"),
        ("data", "data"),
        ("data/../data/x/rec", "data/x/"),
        (".voxtra-spool/recordings", None),  # inside the default spool
    ],
)
def test_recordings_inside_the_spool_are_refused(
    recordings: str, spool: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The spool took the delivered recordings for bad entries of its own and moved
    # them into its quarantine at the next start.
    monkeypatch.chdir(tmp_path)
    kwargs = {"recordings_dir": recordings} | ({} if spool is None else {"spool_dir": spool})
    with pytest.raises(SettingsError) as info:
        VoxtraSettings(**kwargs)
    [(_, message)] = info.value.problems
    shown = ".voxtra-spool" if spool is None else spool
    assert message.startswith(
        f"recordings_dir {recordings!r} must not be spool_dir {shown!r} nor inside it"
    )


def test_recordings_beside_or_around_the_spool_are_fine(tmp_path: Path) -> None:
    s = VoxtraSettings(recordings_dir=str(tmp_path / "rec"), spool_dir=str(tmp_path / "recx"))
    assert s.spool_dir == str(tmp_path / "recx")  # a common prefix is not nesting
    VoxtraSettings(recordings_dir=str(tmp_path), spool_dir=str(tmp_path / "spool"))


def test_a_spool_reached_through_a_symlink_is_the_same_spool(tmp_path: Path) -> None:
    (tmp_path / "spool").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "spool")
    with pytest.raises(SettingsError, match="nor inside it"):
        VoxtraSettings(
            recordings_dir=str(tmp_path / "link" / "rec"), spool_dir=str(tmp_path / "spool")
        )


def test_moving_the_recordings_into_the_spool_is_refused_and_not_kept() -> None:
    s = VoxtraSettings(recordings_dir="/srv/rec", spool_dir="/srv/spool")
    with pytest.raises(SettingsError, match=r"^config error in assignment: recordings_dir: "):
        s.recordings_dir = "/srv/spool/rec"
    with pytest.raises(SettingsError, match=r"^config error in assignment: spool_dir: "):
        s.spool_dir = "/srv"
    assert (s.recordings_dir, s.spool_dir) == ("/srv/rec", "/srv/spool")


def test_recordings_and_spool_are_checked_once_merged() -> None:
    # Each source alone is not blamed for the other's value ...
    env = {"VOXTRA_SPOOL_DIR": "/srv/spool"}
    s = load_settings(environ=env, recordings_dir=".voxtra-spool/rec")
    assert (s.recordings_dir, s.spool_dir) == (".voxtra-spool/rec", "/srv/spool")
    # ... but what they make together is.
    with pytest.raises(SettingsError) as info:
        load_settings(environ=env, recordings_dir="/srv/spool/rec")
    assert _error(info).startswith(
        "config error in merged settings: spool_dir: recordings_dir '/srv/spool/rec' must not "
        "be spool_dir '/srv/spool' nor inside it"
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"ari_url": "localhost:8088"},
            "ari_url: expected a URL like http://127.0.0.1:8088, got 'localhost:8088'",
        ),
        (
            {"ari_url": "ftp://host"},
            "ari_url: expected a URL like http://127.0.0.1:8088, got 'ftp://host'",
        ),
        (
            {"ari_url": "http://host:99999"},
            "ari_url: expected a URL like http://127.0.0.1:8088, got 'http://host:99999'",
        ),
        (
            {"ari_url": "http://user:pw@host:8088"},
            # The user info may hold a password: the value is not echoed.
            "ari_url: expected a URL like http://127.0.0.1:8088, without user:password@ "
            "(use username/password)",
        ),
        (
            {"ari_url": "http://host:8088/?x=1"},
            "ari_url: expected a URL like http://127.0.0.1:8088, got 'http://host:8088/?...'",
        ),
        (
            {"app_name": "voxtra,evil"},
            "app_name: expected letters, digits, '_', '.' or '-' only, got 'voxtra,evil'",
        ),
        (
            {"app_name": "a b"},
            "app_name: expected letters, digits, '_', '.' or '-' only, got 'a b'",
        ),
        ({"username": "a:b"}, "username: expected a non-empty name without spaces or ':'"),
        (
            {"password": "x\r\nX-Evil: 1"},
            "password: expected a non-empty password without control characters",
        ),
        ({"password": ""}, "password: expected a non-empty password without control characters"),
        ({"handler_deadline": -1}, "handler_deadline: must be at least 0, got -1"),
        ({"max_call_duration": 0}, "max_call_duration: must be greater than 0, got 0"),
        (
            {"unrouted": "ignore"},
            "unrouted: expected one of 'hangup' or 'answer_and_hangup', got 'ignore'",
        ),
        (
            {"log_level": "loud"},
            "log_level: expected one of DEBUG, INFO, WARNING, ERROR, CRITICAL, got 'loud'",
        ),
        ({"spool_dir": " "}, "spool_dir: expected a directory path, got ' '"),
        (
            {"media": {"bind_host": "my host"}},
            "media.bind_host: expected an IP address or host name, got 'my host'",
        ),
        (
            {"media": {"port_range": (2000, 1000)}},
            "media.port_range: expected 1 <= low <= high <= 65535, got 2000-1000",
        ),
        ({"media": "websocket"}, "media: expected a mapping of settings, got 'websocket'"),
        ({"colour": "blue"}, "colour: unknown setting"),
        ({"app": "x"}, "app: unknown setting (did you mean 'app_name'?)"),
    ],
)
def test_invalid_values_name_the_setting(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(environ={}, **kwargs)
    assert _error(info) == f"config error in arguments: {message}"


def test_secret_values_are_never_echoed() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(environ={}, password="\x01secret")
    assert "secret" not in _error(info)


@pytest.mark.parametrize(
    "environ",
    [
        # a token given as a bare string: the error's path is platform.tokens[0]
        {"VOXTRA_PLATFORM__TOKENS": '["crm-secret-0123456789abcdef"]'},
        # ARI's own ?api_key=user:password in the URL
        {"VOXTRA_ARI_URL": "http://pbx:8088/?api_key=voxtra:secret"},
    ],
)
def test_secrets_inside_settings_are_never_echoed(environ: dict[str, str]) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(environ=environ)
    assert "secret" not in _error(info)


def test_the_database_password_is_kept_out_of_repr_and_redacted() -> None:
    s = load_settings(
        environ={"VOXTRA_PLATFORM__DATABASE_URL": "postgresql://voxtra:Pg-s3cret@db:5432/voxtra"}
    )
    assert s.platform.database_url == "postgresql://voxtra:Pg-s3cret@db:5432/voxtra"
    assert "Pg-s3cret" not in repr(s)
    assert s.redacted()["platform"]["database_url"] == "postgresql://voxtra:***@db:5432/voxtra"
    plain = load_settings(environ={"VOXTRA_PLATFORM__DATABASE_URL": "sqlite:///p.db"})
    assert plain.redacted()["platform"]["database_url"] == "sqlite:///p.db"


def test_lists_of_names_take_json_as_the_tokens_do() -> None:
    s = load_settings(
        environ={
            "VOXTRA_PLATFORM__ENDPOINT_TECHNOLOGIES": '["PJSIP", "SIP"]',
            "VOXTRA_PLATFORM__LOCAL_CONTEXTS": "from-internal, voxtra-test",
        }
    )
    assert s.platform.endpoint_technologies == ("PJSIP", "SIP")
    assert s.platform.local_contexts == ("from-internal", "voxtra-test")
    with pytest.raises(SettingsError, match="JSON list of names"):
        load_settings(environ={"VOXTRA_PLATFORM__LOCAL_CONTEXTS": '["a", 1]'})


def test_valid_values_are_normalised() -> None:
    s = load_settings(
        environ={},
        ari_url=" https://pbx.example.com:8089/ari/ ",
        log_level="warn",
        media={"advertise_host": "", "bind_host": "::", "port_range": "40000-40010"},
    )
    assert s.ari_url == "https://pbx.example.com:8089"
    assert s.log_level == "WARNING"
    assert s.media.advertise_host is None
    assert s.media.bind_host == "::"
    assert s.media.port_range == (40000, 40010)


# ------------------------------------------------------------------------ environment


def test_from_env_reads_prefixed_and_nested_values() -> None:
    env = {
        "VOXTRA_ARI_URL": "http://10.0.0.5:8088",
        "VOXTRA_ARI_USERNAME": "bot",
        "VOXTRA_ARI_PASSWORD": "s3cret",
        "VOXTRA_APP_NAME": "bot-app",
        "VOXTRA_MEDIA__TRANSPORT": "audiosocket",
        "VOXTRA_MEDIA__PORT_RANGE": "31000,31099",
        "VOXTRA_MEDIA__ATTACH_ON_ANSWER": "true",
        "VOXTRA_HANDLER_DEADLINE": "1.5",
        "VOXTRA_MAX_CALL_DURATION": "",
        "VOXTRA_SILENCE_TIMEOUT": "12",
        "VOXTRA_DEEPGRAM_API_KEY": "belongs-to-a-provider",  # not ours: ignored
        "VOXTRA_CONFIG": "/nonexistent.yaml",  # the file name, not a setting
        "HOME": "/root",
    }
    s = VoxtraSettings.from_env(env)
    assert s.ari_url == "http://10.0.0.5:8088"
    assert (s.username, s.password.get_secret_value(), s.app_name) == ("bot", "s3cret", "bot-app")
    assert s.media.transport == "audiosocket"
    assert s.media.port_range == (31000, 31099)
    assert s.media.attach_on_answer is True
    assert s.handler_deadline == 1.5
    assert s.max_call_duration is None
    assert s.silence_timeout == 12.0


def test_from_env_canonical_name_beats_alias() -> None:
    env = {"VOXTRA_ARI_USERNAME": "alias", "VOXTRA_USERNAME": "canonical"}
    assert VoxtraSettings.from_env(env).username == "canonical"


def test_from_env_custom_prefix() -> None:
    s = VoxtraSettings.from_env({"BOT_APP_NAME": "x", "VOXTRA_APP_NAME": "y"}, prefix="BOT_")
    assert s.app_name == "x"


def test_from_env_errors_name_the_variable() -> None:
    env = {
        "VOXTRA_MEDIA__TRANSPRT": "websocket",
        "VOXTRA_ARI_HEARTBEAT": "0",
        "VOXTRA_MEDIA__ATTACH_ON_ANSWER": "perhaps",
    }
    with pytest.raises(SettingsError) as info:
        VoxtraSettings.from_env(env)
    problems = dict(info.value.problems)
    assert problems == {
        "media.transprt (VOXTRA_MEDIA__TRANSPRT)": "unknown setting (did you mean 'transport'?)",
        "media.attach_on_answer (VOXTRA_MEDIA__ATTACH_ON_ANSWER)": (
            "expected true or false, got 'perhaps'"
        ),
        "ari_heartbeat (VOXTRA_ARI_HEARTBEAT)": "must be greater than 0, got '0'",
    }
    assert _error(info).startswith("config error in environment: ")


# ------------------------------------------------------------------------ placeholders


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${A}", "alpha"),
        ("x-${A}-${B}", "x-alpha-"),
        ("${B:-fallback}", "fallback"),  # empty counts as unset for ':-', as in the shell
        ("${MISSING:-}", ""),
        ("${MISSING:-http://h:1/x}", "http://h:1/x"),
        ("$${A}", "${A}"),
        ("$$${A}", "$alpha"),
        ("cost: $5", "cost: $5"),
        ("$A {A}", "$A {A}"),
    ],
)
def test_expand_placeholders(text: str, expected: str) -> None:
    assert expand_placeholders(text, {"A": "alpha", "B": ""}) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${NOPE}", "environment variable NOPE is not set (give a default: ${NOPE:-value})"),
        ("${A", "unclosed '${' placeholder (write $${ for a literal '${')"),
        ("${1A}", "bad placeholder '${1A}': expected ${NAME} or ${NAME:-default}"),
        ("${A B}", "bad placeholder '${A B}': expected ${NAME} or ${NAME:-default}"),
    ],
)
def test_expand_placeholder_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        expand_placeholders(text, {"A": "a"})
    assert str(info.value) == message


# -------------------------------------------------------------------------------- YAML


def test_flat_yaml_with_placeholders() -> None:
    env = {"ARI_USER": "bot", "ARI_SECRET": "p: #1", "DEADLINE": ""}
    s = VoxtraSettings.from_yaml(FIXTURES / "flat.yaml", environ=env)
    assert s.ari_url == "http://127.0.0.1:8088"
    assert (s.username, s.password.get_secret_value(), s.app_name) == (
        "bot",
        "p: #1",
        "support-bot",
    )
    assert s.media == MediaSettings(
        transport="websocket",
        codec="slin16",
        bind_host="0.0.0.0",
        advertise_host=None,
        port_range=(40000, 40099),
        attach_on_answer=True,
    )
    assert s.handler_deadline == 2.5
    assert (s.unrouted, s.reconcile_policy) == ("hangup", "adopt")
    assert (s.recordings_dir, s.spool_dir) == (
        "/var/lib/voxtra/recordings",
        "/var/lib/voxtra/spool",
    )
    assert s.log_level == "INFO"
    assert (s.max_call_duration, s.silence_timeout) == (3600.0, 30.0)
    assert (s.ari_reconnect_max_backoff, s.ari_heartbeat) == (5.0, 2.0)


def test_yaml_environment_values_cannot_change_structure() -> None:
    # The variable holds YAML syntax; it stays a plain string value.
    env = {"ARI_USER": "bot", "ARI_SECRET": "x\nmedia: {transport: audiosocket}"}
    with pytest.raises(SettingsError) as info:
        VoxtraSettings.from_yaml(FIXTURES / "flat.yaml", environ=env)
    assert info.value.problems == [
        ("password", "expected a non-empty password without control characters")
    ]


def test_yaml_missing_variable_names_variable_and_setting() -> None:
    path = FIXTURES / "flat.yaml"
    with pytest.raises(SettingsError) as info:
        VoxtraSettings.from_yaml(path, environ={"ARI_SECRET": "x"})
    assert _error(info) == (
        f"config error in {path}: username: environment variable ARI_USER is not set "
        "(give a default: ${ARI_USER:-value})"
    )


def test_namespaced_yaml_ignores_other_sections() -> None:
    s = VoxtraSettings.from_yaml(str(FIXTURES / "namespaced.yaml"), environ={})
    assert s.ari_url == "http://asterisk.internal:8088"
    assert s.password.get_secret_value() == "1234"  # YAML read an int; passwords are text
    assert s.media.codec == "alaw"
    assert s.username == "voxtra"


def test_yaml_escapes_and_defaults() -> None:
    s = VoxtraSettings.from_yaml(FIXTURES / "escapes.yaml", environ={"SPOOL_NAME": "bot"})
    assert s.recordings_dir == "/data/${HOME}/rec"
    assert s.spool_dir == "/tmp/bot-spool"
    assert s.password.get_secret_value() == "p@ss: #not-a-comment ${LITERAL}"


def test_yaml_typo_message() -> None:
    with pytest.raises(SettingsError) as info:
        VoxtraSettings.from_yaml(FIXTURES / "typo.yaml")
    assert _error(info) == (
        f"config error in {FIXTURES / 'typo.yaml'}: media.transprt: unknown setting "
        "(did you mean 'transport'?)"
    )


def test_yaml_wrong_types_lists_every_problem() -> None:
    with pytest.raises(SettingsError) as info:
        VoxtraSettings.from_yaml(FIXTURES / "wrong_types.yaml")
    assert info.value.problems == [
        ("ari_url", "expected a URL like http://127.0.0.1:8088, got 'localhost:8088'"),
        ("media.port_range", "expected two values, like [30000, 30999], got 40000"),
        ("media.attach_on_answer", "expected true or false, got 'maybe'"),
        ("handler_deadline", "expected a number, got 'soon'"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", None),
        ("# only a comment\n", None),
        ("- a\n- b\n", "expected a mapping of settings at the top level"),
        ("voxtra: 5\n", "voxtra: expected a mapping of settings"),
        ("ari_url: [\n", "invalid YAML at line 2, column 1: expected the node content"),
        ("1: x\nari_url: http://h\n", "1: setting names must be text"),
        ("media:\n  codec: gsm\n", "media.codec: expected one of"),
    ],
)
def test_yaml_text_edge_cases(text: str, message: str | None) -> None:
    if message is None:
        assert VoxtraSettings.from_yaml(text or "\n") == VoxtraSettings()
        return
    with pytest.raises(SettingsError) as info:
        VoxtraSettings.from_yaml(text)
    assert _error(info).startswith(f"config error in YAML text: {message}")


def test_yaml_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SettingsError) as info:
        VoxtraSettings.from_yaml(str(missing))
    assert _error(info) == f"config error in {missing}: file not found"


def test_yaml_file_without_yaml_suffix(tmp_path: Path) -> None:
    path = tmp_path / "voxtra.conf"
    path.write_text("app_name: from-file\n")
    assert VoxtraSettings.from_yaml(str(path)).app_name == "from-file"


# -------------------------------------------------------------------------- precedence


def test_precedence_overrides_env_yaml_defaults(tmp_path: Path) -> None:
    config = tmp_path / "voxtra.yaml"
    config.write_text(
        "voxtra:\n"
        "  app_name: from-yaml\n"
        "  username: yaml-user\n"
        "  password: yaml-pass\n"
        "  media:\n"
        "    transport: websocket\n"
        "    codec: alaw\n"
        "    bind_host: 10.0.0.1\n"
    )
    env = {
        "VOXTRA_USERNAME": "env-user",
        "VOXTRA_PASSWORD": "env-pass",
        "VOXTRA_MEDIA__CODEC": "slin16",
        "VOXTRA_MEDIA__BIND_HOST": "10.0.0.2",
    }
    s = load_settings(
        config_file=config,
        environ=env,
        password="arg-pass",
        media={"bind_host": "10.0.0.3", "codec": None},
        ari_url=None,  # None: not given
    )
    assert s.app_name == "from-yaml"  # only YAML sets it
    assert s.username == "env-user"  # env beats YAML
    assert s.password.get_secret_value() == "arg-pass"  # arguments beat env
    assert s.media.transport == "websocket"  # YAML, kept by the key-by-key merge
    assert s.media.codec == "slin16"  # env; the None override means "not given"
    assert s.media.bind_host == "10.0.0.3"  # arguments
    assert s.ari_url == "http://127.0.0.1:8088"  # default
    assert s.handler_deadline == 10.0  # default


def test_config_file_from_environment(tmp_path: Path) -> None:
    config = tmp_path / "voxtra.yaml"
    config.write_text("app_name: named-by-env\n")
    s = load_settings(environ={"VOXTRA_CONFIG": str(config)})
    assert s.app_name == "named-by-env"


def test_media_settings_object_override() -> None:
    env = {"VOXTRA_MEDIA__CODEC": "alaw"}
    s = load_settings(environ=env, media=MediaSettings(transport="websocket"))
    # A whole MediaSettings object is a complete media section: its codec wins too.
    assert (s.media.transport, s.media.codec) == ("websocket", "ulaw")


def test_load_settings_blames_the_right_source(tmp_path: Path) -> None:
    config = tmp_path / "voxtra.yaml"
    config.write_text("media:\n  transport: sip\n")
    with pytest.raises(SettingsError) as info:
        load_settings(config_file=config, environ={"VOXTRA_APP_NAME": "fine"})
    assert info.value.source == str(config)
    with pytest.raises(SettingsError) as info:
        load_settings(environ={"VOXTRA_APP_NAME": "not fine"})
    assert _error(info) == (
        "config error in environment: app_name (VOXTRA_APP_NAME): expected letters, digits, "
        "'_', '.' or '-' only, got 'not fine'"
    )
    with pytest.raises(SettingsError) as info:
        load_settings(environ={}, medya={})
    assert (
        _error(info) == "config error in arguments: medya: unknown setting (did you mean 'media'?)"
    )
