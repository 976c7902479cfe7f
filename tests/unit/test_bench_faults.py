"""bench/faults.py's "other fault tests" group shows each test's outcome with the
figures the test printed. The group is run here on a fault test of this test's own (a
pytest subprocess, about 3 s), not on the real ones (which need Asterisk and take a
minute)."""

from __future__ import annotations

from pathlib import Path

import pytest

from voxtra.testing.modules import import_file

ROOT = Path(__file__).resolve().parents[2]

FAULT_TEST = """
import pytest

pytestmark = pytest.mark.faults


def test_keeps_the_calls() -> None:
    print("\\nblocks: 49 calls intact; stall 7 ms")
"""


def test_the_other_fault_tests_show_what_each_test_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "test_handler_faults.py").write_text(FAULT_TEST)
    bench = import_file(ROOT / "bench" / "faults.py", "voxtra_bench_faults")
    monkeypatch.setattr(bench, "FAULT_TESTS", tmp_path)

    assert bench.run_others() is True

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("test_handler_faults: passed in "), lines
    # the figures reached the bench's output (before, only lines starting "bench:" did,
    # and no fault test prints such a line)
    assert lines[1].startswith("  test_keeps_the_calls: passed in "), lines
    assert lines[2:] == ["    blocks: 49 calls intact; stall 7 ms"], lines
