"""The runtime never depends on the test tooling.

``voxtra.testing`` holds the Asterisk sandbox, the SIP caller (GPL pjsip), storage
servers and fakes: things a test or the demo uses, never a running app. The demo once
lived in ``voxtra/demo.py`` and imported the sandbox and the SIP caller from inside the
runtime package; it is ``examples/demo.py`` now, and these tests keep it that way.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "voxtra"
TESTING = "voxtra.testing"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(source: str, module: str, *, is_package: bool = False) -> list[tuple[int, str]]:
    """Every module ``source`` (the text of ``module``) imports, at any depth (imports
    inside functions included), relative imports resolved against its package."""
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from voxtra import testing` names the package as an imported name.
            found.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names)
    return found


def _imports_of(path: Path) -> list[tuple[int, str]]:
    return _imports(path.read_text(), _module_name(path), is_package=path.name == "__init__.py")


def _is_testing(name: str) -> bool:
    return name == TESTING or name.startswith(TESTING + ".")


def _runtime_files() -> list[Path]:
    testing = PACKAGE / "testing"
    return sorted(p for p in PACKAGE.rglob("*.py") if testing not in p.parents)


def test_the_scan_sees_every_kind_of_import() -> None:
    """The checker itself: top-level, function-level, from-imports and relative ones."""
    source = (
        "import voxtra.testing.audio\n"
        "import voxtra.media\n"
        "def f():\n"
        "    from voxtra.testing.sipcaller import SipCaller\n"
        "    from voxtra import testing\n"
        "    from ..testing import asterisk\n"
    )
    flagged = {n for n, name in _imports(source, "voxtra.ari.probe") if _is_testing(name)}
    assert flagged == {1, 4, 5, 6}


CLI_TOOLS = ("voxtra.testing.console",)
"""What the CLI's developer commands may load, inside the command and only then: the
console runs the app on the in-process FakeAsterisk (no sandbox, no SIP stack). The
subprocess test below still proves ``import voxtra.cli`` loads none of it."""


def _allowed(path: Path, name: str) -> bool:
    return path == PACKAGE / "cli.py" and any(
        name == tool or name.startswith(tool + ".") for tool in CLI_TOOLS
    )


@pytest.mark.parametrize("path", _runtime_files(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_runtime_module_does_not_import_the_test_tooling(path: Path) -> None:
    offenders = [
        f"line {n}: {name}"
        for n, name in _imports_of(path)
        if _is_testing(name) and not _allowed(path, name)
    ]
    assert not offenders, f"voxtra/{path.relative_to(PACKAGE)} imports {offenders}"


def test_importing_voxtra_loads_no_test_tooling() -> None:
    code = (
        "import sys, voxtra, voxtra.cli\n"
        f"loaded = sorted(m for m in sys.modules if m == {TESTING!r} "
        f"or m.startswith({TESTING + '.'!r}))\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
