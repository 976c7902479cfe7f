"""``voxtra init``: the project it writes passes its own tests on the first run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from voxtra.cli import main
from voxtra.errors import ConfigError
from voxtra.scaffold import create_project


def test_init_writes_a_project_whose_tests_pass(tmp_path: Path) -> None:
    project = tmp_path / "front_line"
    assert main(["init", str(project)]) == 0
    names = sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file())
    assert names == [".gitignore", "README.md", "app.py", "pyproject.toml", "tests/test_app.py"]
    assert 'VoxtraApp(app_name="front_line")' in (project / "app.py").read_text()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOXTRA_", "PYTEST_"))}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout


@pytest.mark.parametrize("name", ["1abc", "Has-Caps", "class", ""])
def test_a_bad_name_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError):
        create_project(tmp_path / "x", name or "-")


def test_a_non_empty_directory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "existing.txt").write_text("mine")
    assert main(["init", str(tmp_path), "--name", "ok_name"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["existing.txt"]


def test_a_file_in_the_way_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "afile").write_text("mine")
    assert main(["init", str(tmp_path / "afile")]) == 2  # was a NotADirectoryError traceback
    assert "is a file" in capsys.readouterr().err
    assert (tmp_path / "afile").read_text() == "mine"


def test_bad_input_to_the_commands_is_one_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--log-level", "foo", "doctor"])
    assert exited.value.code == 2
    assert "'foo': expected DEBUG, INFO" in capsys.readouterr().err
    app = tmp_path / "app.py"
    app.write_text("from voxtra import VoxtraApp\n\napp = VoxtraApp()\n")
    monkeypatch.setenv("VOXTRA_MEDIA__CODEC", "gsm")
    assert main(["run", str(app)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("voxtra run: config error") and "media.codec" in err
    assert "Traceback" not in err
