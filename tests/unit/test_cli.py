"""The ``voxtra`` command as a new user meets it: what goes wrong is said in one line."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from voxtra import cli

if TYPE_CHECKING:
    from voxtra.testing.pytest_plugin import AsteriskTarget

APP = "from voxtra import VoxtraApp\n\napp = VoxtraApp()\n"


@pytest.fixture
def app_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An app as `voxtra init` writes it (settings from VOXTRA_*), in its own directory."""
    for name in ("VOXTRA_CONFIG", "VOXTRA_ARI_URL", "VOXTRA_USERNAME", "VOXTRA_PASSWORD"):
        monkeypatch.setenv(name, "")  # setenv first: delenv of an absent one is not undone
        monkeypatch.delenv(name)
    monkeypatch.setenv("VOXTRA_APP_NAME", f"cli-{uuid.uuid4().hex[:8]}")
    # A fixed instance id: an app without one holds one of the host's instance slots.
    monkeypatch.setenv("VOXTRA_INSTANCE_ID", "test_cli")
    monkeypatch.chdir(tmp_path)  # the spool and serve's SQLite file go here
    path = tmp_path / "cli_app.py"
    path.write_text(APP)
    return path


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 bound by no listener: a connection to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.mark.parametrize("command", ["run", "serve"])
def test_asterisk_down_is_one_line_not_a_traceback(
    command: str,
    app_file: Path,
    closed_port: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{closed_port}"
    monkeypatch.setenv("VOXTRA_ARI_URL", url)
    extra = ["--database-url", "sqlite:///platform.db"] if command == "serve" else []
    # was an AriConnectionError escaping main(): 54 lines of traceback
    assert cli.main([command, str(app_file), *extra]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"voxtra {command}: ARI at {url}: unreachable ("), err
    assert "ConnectionRefused" in err[-1]


@pytest.mark.asterisk
def test_a_refused_password_says_which_settings_to_check(
    asterisk: AsteriskTarget,
    app_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("VOXTRA_ARI_URL", asterisk.ari_url)
    monkeypatch.setenv("VOXTRA_USERNAME", asterisk.username)
    monkeypatch.setenv("VOXTRA_PASSWORD", "not-the-password")
    assert cli.main(["run", str(app_file)]) == 1  # was an AriUnauthorized traceback
    err = capsys.readouterr().err.strip()
    assert err == (
        f"voxtra run: ARI at {asterisk.ari_url}: user {asterisk.username!r} refused "
        "(AriUnauthorized: GET /asterisk/info -> 401: Authentication required); check the "
        "ARI user and password (VOXTRA_USERNAME, VOXTRA_PASSWORD; ari.conf)"
    )
    # doctor said "unreachable" and advised starting the sandbox, which is running
    assert cli.main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert f"user {asterisk.username!r} refused" in out and "VOXTRA_PASSWORD" in out
    assert "unreachable" not in out and "sandbox" not in out


@pytest.mark.parametrize(
    ("argv", "level", "log_format"),
    [
        (["run", "--log-format", "json", "app.py"], None, "json"),  # docs/tools.md's
        (["run", "app.py", "--log-level", "debug"], "DEBUG", None),
        (["--log-level", "error", "run", "app.py"], "ERROR", None),  # not reset by run's
        (["--log-format", "json", "doctor", "--log-level", "warn"], "WARNING", "json"),
    ],
)
def test_logging_options_go_before_or_after_the_command(
    argv: list[str], level: str | None, log_format: str | None
) -> None:
    # `voxtra run --log-format json app.py` took "json" for the app and refused the rest
    args = cli._parser().parse_args(argv)
    assert (args.log_level, args.log_format) == (level, log_format)
    assert getattr(args, "app", "app.py") == "app.py"


@pytest.mark.parametrize("command", ["console", "serve"])
def test_an_app_that_does_not_import_is_named_by_its_command(command: str, tmp_path: Path) -> None:
    missing = tmp_path / "nope.py"
    with pytest.raises(SystemExit, match=rf"^voxtra {command}: cannot import "):
        cli.main([command, str(missing)])  # was "voxtra run: ..." for every command


def test_a_directory_name_that_is_no_project_name_points_to_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `voxtra init .` in a mktemp directory: the user never typed 'tmp.x1y2z3'
    assert cli.main(["init", str(tmp_path / "tmp.x1y2z3")]) == 2
    err = capsys.readouterr().err
    assert "'tmp.x1y2z3' (from the directory's name; give one with --name)" in err
    assert cli.main(["init", str(tmp_path / "tmp.x1y2z3"), "--name", "front_desk"]) == 0


@pytest.mark.parametrize("command", ["run", "serve", "doctor"])
def test_a_missing_config_file_is_a_usage_error(
    command: str, app_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # was a SystemExit message, exit status 1; VOXTRA_CONFIG naming it exited 2
    argv = [command] if command == "doctor" else [command, str(app_file)]
    assert cli.main([*argv, "--config", "missing.yaml"]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"voxtra {command}: --config missing.yaml: no such file\n"
    assert captured.out == ""  # doctor: not after its versions


def test_serve_names_the_option_that_is_wrong(
    app_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["serve", str(app_file), "--port", "99999", "--database-url", "sqlite:///p.db"]
    assert cli.main(argv) == 2
    # was "config error in arguments: port: Input should be less than or equal to 65535"
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "voxtra serve: config error in the command line: --port: must be at most 65535, got 99999"
    )


def test_doctor_reads_the_config_file_run_reads(
    app_file: Path, closed_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    config = app_file.parent / "voxtra.yaml"
    config.write_text(f"ari_url: http://127.0.0.1:{closed_port}\n")
    assert cli.main(["doctor", "--config", str(config)]) == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith(f"ARI at http://127.0.0.1:{closed_port}: unreachable ("), last


def test_doctor_says_ari_did_not_answer(
    app_file: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A listener that takes the connection and never answers (not Asterisk's HTTP).
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        monkeypatch.setenv("VOXTRA_ARI_URL", url)
        monkeypatch.setattr(cli, "_DOCTOR_TIMEOUT", 0.5, raising=False)
        assert cli.main(["doctor"]) == 1
    # was "unreachable (TimeoutError: )"
    assert capsys.readouterr().out.strip().splitlines()[-1] == (
        f"ARI at {url}: no answer within 0.5 s (is it Asterisk's HTTP server, http.conf?)"
    )
