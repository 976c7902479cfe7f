"""Settings that VoxtraApp applies itself: silence_timeout, log_level (no Asterisk)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from voxtra import VoiceConfig
from voxtra.app import VoxtraApp
from voxtra.errors import ConfigError


def app(environ: dict[str, str], **kwargs: object) -> VoxtraApp:
    return VoxtraApp("http://127.0.0.1:1", "u", "p", "unit", environ=environ, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def voxtra_logger() -> Iterator[logging.Logger]:
    logger = logging.getLogger("voxtra")
    level = logger.level
    yield logger
    logger.setLevel(level)


def test_silence_timeout_is_the_voice_pipelines_default() -> None:
    built = app({"VOXTRA_SILENCE_TIMEOUT": "7.5"})
    assert built.voice.silence_timeout == 7.5
    assert built.voice.build().silence_timeout == 7.5


def test_a_voice_config_keeps_its_own_silence_timeout() -> None:
    built = app({"VOXTRA_SILENCE_TIMEOUT": "7.5"}, voice=VoiceConfig(silence_timeout=3.0))
    assert built.voice.silence_timeout == 3.0
    assert app({}).voice.silence_timeout is None


def test_log_level_sets_the_voxtra_logger(voxtra_logger: logging.Logger) -> None:
    voxtra_logger.setLevel(logging.NOTSET)
    app({"VOXTRA_LOG_LEVEL": "debug"}).configure_logging()
    assert voxtra_logger.level == logging.DEBUG
    assert logging.getLogger("voxtra.calls.context").isEnabledFor(logging.DEBUG)
    # an explicit level (the CLI's --log-level) wins over the setting
    app({"VOXTRA_LOG_LEVEL": "debug"}).configure_logging("error")
    assert voxtra_logger.level == logging.ERROR
    # unset: logging is left as the application configured it
    app({}).configure_logging()
    assert voxtra_logger.level == logging.ERROR


def test_instance_id_is_checked_and_marks_internal_ids() -> None:
    a, b = app({}), app({})
    assert a.instance_id != b.instance_id
    named = app({}, instance_id="host1.a")
    ident = named.internal_id("media")
    assert ident.startswith("voxtra-internal-media-host1.a-")
    assert named._owns_internal(ident)
    assert not a._owns_internal(ident)
    with pytest.raises(ConfigError):
        app({}, instance_id="no spaces")
