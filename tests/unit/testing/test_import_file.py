"""``voxtra.testing.modules.import_file``: a script imported once per name, by path."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from voxtra.errors import ConfigError
from voxtra.testing.modules import import_file


def test_a_file_is_loaded_once_under_its_name(tmp_path: Path) -> None:
    script = tmp_path / "my_app.py"
    script.write_text("import itertools\nLOADS = next(itertools.count(1))\nNAME = __name__\n")
    try:
        first = import_file(script, "voxtra_test_my_app")
        again = import_file(tmp_path / "elsewhere.py", "voxtra_test_my_app")
        assert again is first  # the name decides: a sibling loading it shares the module
        assert first.NAME == "voxtra_test_my_app"
        assert sys.modules["voxtra_test_my_app"] is first
    finally:
        sys.modules.pop("voxtra_test_my_app", None)


def test_the_stem_is_the_default_name(tmp_path: Path) -> None:
    script = tmp_path / "voxtra_test_stem.py"
    script.write_text("VALUE = 3\n")
    try:
        assert import_file(script).VALUE == 3
        assert "voxtra_test_stem" in sys.modules
    finally:
        sys.modules.pop("voxtra_test_stem", None)


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no Python file"):
        import_file(tmp_path / "absent.py", "voxtra_test_absent")
    assert "voxtra_test_absent" not in sys.modules


def test_a_failing_script_leaves_no_half_module(tmp_path: Path) -> None:
    script = tmp_path / "broken.py"
    script.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(RuntimeError, match="boom"):
        import_file(script, "voxtra_test_broken")
    assert "voxtra_test_broken" not in sys.modules
