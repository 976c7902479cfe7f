"""Settings mistakes a user makes, each said as one SettingsError naming the setting and
its source, never quoting a secret (a review of voxtra.config)."""

from __future__ import annotations

from pathlib import Path

import pytest

from voxtra.config import SettingsError, load_settings

CANARY = "CANARY-5f2b9e-webhook-secret"


@pytest.mark.parametrize(
    ("setting", "env", "message"),
    [
        # Passed `> 0`; the app's start then died in aiohttp's heartbeat timer
        # (OverflowError: cannot convert float infinity to integer), a traceback.
        ("ari_heartbeat", "VOXTRA_ARI_HEARTBEAT", "expected a finite number, got 'inf'"),
        (
            "ari_reconnect_max_backoff",
            "VOXTRA_ARI_RECONNECT_MAX_BACKOFF",
            "expected a finite number, got 'inf'",
        ),
        ("handler_deadline", "VOXTRA_HANDLER_DEADLINE", "expected a finite number, got 'inf'"),
        (
            "platform.rate_limit",
            "VOXTRA_PLATFORM__RATE_LIMIT",
            "expected a finite number, got 'inf'",
        ),
    ],
)
def test_an_infinite_duration_is_refused(setting: str, env: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(environ={env: "inf"})
    assert str(info.value) == f"config error in environment: {setting} ({env}): {message}"


def test_an_upper_bound_is_said_in_words() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(environ={"VOXTRA_PLATFORM__PORT": "99999"})
    # was pydantic's "Input should be less than or equal to 65535"
    assert str(info.value) == (
        "config error in environment: platform.port (VOXTRA_PLATFORM__PORT): "
        "must be at most 65535, got '99999'"
    )


@pytest.mark.parametrize(
    ("section", "typo", "meant"),
    [
        ("twilio", "publc_url", "public_url"),  # was "did you mean 'ari_url'?"
        ("platform", "webhook_ur", "webhook_url"),
    ],
)
def test_a_typo_in_any_section_is_matched_against_that_section(
    section: str, typo: str, meant: str
) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(environ={}, config_file=f"{section}:\n  {typo}: x\n")
    assert info.value.problems == [
        (f"{section}.{typo}", f"unknown setting (did you mean {meant!r}?)")
    ]


def test_a_typo_in_a_platform_token_is_matched_against_a_token() -> None:
    text = "platform:\n  tokens:\n    - nme: ci\n      sha256: " + "a" * 64 + "\n"
    with pytest.raises(SettingsError) as info:
        load_settings(environ={}, config_file=text)
    # was "unknown setting" with no hint, next to pydantic's "Field required"
    assert info.value.problems == [
        ("platform.tokens[0].name", "required"),
        ("platform.tokens[0].nme", "unknown setting (did you mean 'name'?)"),
    ]


def test_a_section_written_as_a_list_does_not_quote_its_secrets() -> None:
    # One '-' too many: the section's mappings, webhook_secret included, were quoted
    text = f"platform:\n  - webhook_url: https://hooks.example.com\n  - webhook_secret: {CANARY}\n"
    with pytest.raises(SettingsError) as info:
        load_settings(environ={}, config_file=text)
    assert str(info.value) == "config error in YAML text: platform: expected a mapping of settings"
    assert CANARY not in repr(info.value.problems)


def test_a_bad_placeholder_in_a_bare_token_is_not_quoted() -> None:
    # A token given as a bare string is a secret too: `tokens[0]` was not seen as one.
    text = "platform:\n  tokens:\n    - 'CANARY${not a name}'\n"
    with pytest.raises(SettingsError) as info:
        load_settings(environ={}, config_file=text)
    assert info.value.problems == [
        ("platform.tokens[0]", "bad ${...} placeholder in a secret value")
    ]


def test_a_section_setting_with_one_underscore_is_refused() -> None:
    # was ignored as "not a Voxtra setting": the app ran on RTP, no word said
    with pytest.raises(SettingsError) as info:
        load_settings(environ={"VOXTRA_MEDIA_TRANSPORT": "websocket"})
    assert str(info.value) == (
        "config error in environment: media.transport (VOXTRA_MEDIA_TRANSPORT): "
        "not a setting: write VOXTRA_MEDIA__TRANSPORT (two '_')"
    )
    # Other unknown VOXTRA_* names stay ignored: tools share the prefix.
    assert load_settings(environ={"VOXTRA_MEDIA_CACHE": "x", "VOXTRA_WEED_BIN": "y"})


def test_voxtra_config_is_a_path_even_without_a_yaml_suffix(tmp_path: Path) -> None:
    missing = tmp_path / "etc" / "voxtra" / "config"
    with pytest.raises(SettingsError) as info:
        load_settings(environ={"VOXTRA_CONFIG": str(missing)})
    # was "config error in YAML text: expected a mapping of settings at the top level"
    assert str(info.value) == f"config error in {missing}: file not found"
    missing.parent.mkdir(parents=True)
    missing.write_text("app_name: from-etc\n")
    assert load_settings(environ={"VOXTRA_CONFIG": str(missing)}).app_name == "from-etc"


def test_a_config_file_name_that_is_not_there_is_not_only_bad_yaml() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(environ={}, config_file="voxtra.conf")
    assert str(info.value) == (
        "config error in YAML text: expected a mapping of settings at the top level "
        "(read as YAML text: no file of that name either)"
    )
