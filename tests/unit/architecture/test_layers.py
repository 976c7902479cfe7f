"""The architecture as a test: imports point one way, and no object's underscore names
are touched outside the module that defines them.

Every import in ``voxtra/`` counts, wherever it is written (module level, inside a
function, under ``TYPE_CHECKING``): a function-level import that dodges a cycle at run
time is still a cycle in the design. ``docs/architecture.md`` draws the same layers.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PACKAGE = ROOT / "voxtra"

# Lowest first. A module may import only modules of its own layer or a lower one; within
# a layer, the graph must still be free of cycles. Longest prefix wins.
LAYERS: list[tuple[str, ...]] = [
    ("voxtra.errors", "voxtra._callbacks", "voxtra.instance", "voxtra.logs", "voxtra.eventloop"),
    ("voxtra.config",),
    ("voxtra.media", "voxtra.ari", "voxtra.providers", "voxtra.pipeline", "voxtra.recording"),
    # the managed local LLM (issue 13): over the openai provider
    ("voxtra.local",),
    ("voxtra.routing",),
    # the call kernel, layer by layer (see voxtra/calls/__init__.py)
    ("voxtra.calls.state", "voxtra.calls.outcomes"),
    ("voxtra.calls.registry",),
    ("voxtra.calls.host", "voxtra.calls.control"),
    ("voxtra.calls.context",),
    ("voxtra.calls.playback", "voxtra.calls.media"),
    ("voxtra.calls.recorder", "voxtra.calls.voice", "voxtra.calls.dial"),
    # three-party calls, AMD, secure DTMF (issue 11): over media, recorder and voice
    ("voxtra.calls.parties", "voxtra.calls.amd", "voxtra.calls.secure"),
    # the Asterisk backend's CallControl (issue 12): over media, playback and recorder
    ("voxtra.calls.asterisk",),
    # agent assist (issue 11): over the three-party state
    ("voxtra.calls.assist",),
    ("voxtra.calls.session", "voxtra.calls"),
    ("voxtra.app",),
    # voxtra.platform: the call platform (issue 10), over the app; only the cli imports it
    (
        "voxtra",
        "voxtra.cli",
        "voxtra.scaffold",
        "voxtra.tracing",
        "voxtra.testing",
        "voxtra.platform",
        # Twilio Media Streams (issue 12): over the app; never imported by calls/
        "voxtra.twilio",
    ),
]

# Underscore names of other modules' objects that are used on purpose.
PRIVATE_ALLOWED = {
    ("voxtra/testing/_sipcaller_worker.py", "os._exit"),  # the documented child-exit call
    ("voxtra/providers/espeak_tts.py", "ctypes._Pointer"),  # typeshed's name for pointers
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: Path, name: str, known: set[str]) -> Iterator[str]:
    """The voxtra modules ``path`` imports (``from a.b import c`` is a.b.c if that is a
    module, else a.b)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "voxtra":
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            if module.split(".")[0] != "voxtra":
                continue
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                yield sub if sub in known else module


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for target in _imports(path, name, known):
            # A submodule's import of its own package (or a parent) is Python's doing,
            # not a dependency written down.
            if target != name and not name.startswith(target + "."):
                targets.add(target)
        graph[name] = targets
    return graph


def _layer(module: str) -> int:
    best, rank = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), index
    if rank < 0:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS (and the docs)")
    return rank


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_cycle() -> None:
    assert _cycles(_graph()) == []


def test_a_cycle_is_found_when_there_is_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_import_points_down_the_layers() -> None:
    upward = [
        f"{source} (layer {_layer(source)}) imports {target} (layer {_layer(target)})"
        for source, targets in sorted(_graph().items())
        for target in sorted(targets)
        if _layer(target) > _layer(source)
    ]
    assert upward == []


def test_nothing_below_the_app_imports_it() -> None:
    importers = {s for s, targets in _graph().items() if "voxtra.app" in targets}
    assert importers <= {"voxtra", "voxtra.cli", "voxtra.tracing"} | {
        s for s in importers if s.startswith(("voxtra.testing", "voxtra.platform", "voxtra.twilio"))
    }


def test_only_the_cli_imports_the_platform() -> None:
    importers = {
        s
        for s, targets in _graph().items()
        if any(t == "voxtra.platform" or t.startswith("voxtra.platform.") for t in targets)
    }
    assert {s for s in importers if not s.startswith("voxtra.platform")} <= {"voxtra.cli"}


def test_the_layer_check_sees_function_level_and_type_checking_imports(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from voxtra.app import VoxtraApp\n"
        "def f():\n    import voxtra.calls.session\n"
    )
    found = set(_imports(source, "voxtra.media.mod", set(_modules())))
    assert found == {"voxtra.app", "voxtra.calls.session"}


def _private_touches(path: Path) -> Iterator[tuple[int, str]]:
    """``obj._name`` where ``obj`` is not self/cls and ``_name`` is defined nowhere in
    this module (so it belongs to another module's object)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    defined: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defined.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            defined.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            defined.add(node.attr)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id in ("self", "cls"):
                defined.add(node.attr)
        elif isinstance(node, ast.alias):
            defined.add(node.asname or node.name.split(".")[-1])
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        attr = node.attr
        if not attr.startswith("_") or attr.startswith("__") or attr in defined:
            continue
        if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
            continue
        yield node.lineno, ast.unparse(node)


def test_no_private_attribute_of_another_module_is_touched() -> None:
    touched = [
        f"{path.relative_to(ROOT)}:{line}: {text}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, text in _private_touches(path)
        if (str(path.relative_to(ROOT)), text) not in PRIVATE_ALLOWED
    ]
    assert touched == []


def test_the_private_check_finds_a_touch(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text(
        "class A:\n    def __init__(self):\n        self._own = 1\n"
        "    def f(self, other):\n        return other._own + other._theirs\n"
    )
    assert [text for _, text in _private_touches(source)] == ["other._theirs"]


@pytest.mark.parametrize("module", ["voxtra.calls.context", "voxtra.calls.session"])
def test_the_call_kernel_does_not_reach_up(module: str) -> None:
    graph = _graph()
    reachable: set[str] = set()
    todo = [module]
    while todo:
        for target in graph[todo.pop()]:
            if target not in reachable:
                reachable.add(target)
                todo.append(target)
    assert "voxtra.app" not in reachable
    assert not any(m.startswith("voxtra.testing") for m in reachable)
