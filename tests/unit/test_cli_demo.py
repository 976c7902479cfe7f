"""``voxtra demo`` runs ``examples/demo.py``: the demo is not part of the package."""

from __future__ import annotations

from pathlib import Path

import pytest

from voxtra import cli


def test_voxtra_demo_help_is_the_demo_scripts_own(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["demo", "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "usage: voxtra demo" in out and "--keep-asterisk" in out and "--app-name" in out


def test_voxtra_demo_outside_a_clone_says_where_the_demo_is(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(cli, "_DEMO_SCRIPT", tmp_path / "examples" / "demo.py")
    with pytest.raises(SystemExit, match=r"clone of the Voxtra repository \(\./scripts/demo\)"):
        cli.main(["demo"])


def test_other_commands_still_refuse_unknown_arguments(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main(["doctor", "--extension", "100"])
    assert done.value.code == 2
    assert "unrecognized arguments: --extension 100" in capsys.readouterr().err
