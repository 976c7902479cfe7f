"""The docs site cannot cite what does not exist.

Checks every page of ``docs/`` (and ``mkdocs.yml``) without building the site: each nav
entry is a page, each relative link reaches a file, each ``voxtra.`` name written in
backticks imports (down to the attribute), each ``from voxtra... import`` in a code block
resolves, each repository path in backticks exists, and each snippet include
(``--8<--``) names a file and section that exist, and each ``call.x(...)`` and
``app.x(...)`` in a Python code block (the README's too, and the example sections the
pages include) is a CallSession/VoxtraApp method that takes those arguments.
``mkdocs build --strict`` in scripts/test then checks anchors and renders the API
reference.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.DOTALL)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
DOTTED = re.compile(r"(?<![\w.])voxtra(?:\.[A-Za-z_]\w*)+")
SNIPPET = re.compile(r"^\s*--8<--\s+\"([^\"]+)\"\s*$", re.MULTILINE)
# A repository path in backticks: a/b.py, examples/x.py, asterisk-conf/extensions.conf.
REPO_PATH = re.compile(r"^[A-Za-z0-9_][\w.-]*(?:/[\w.-]+)+/?$")
FILE_SUFFIXES = {".py", ".md", ".conf", ".yml", ".yaml", ".toml", ".json", ".cfg", ".ini"}


def _tracked_top_level() -> set[str]:
    try:
        out = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an sdist)
        return {p.name for p in ROOT.iterdir() if not p.name.startswith(".")}
    return {line.split("/", 1)[0] for line in out.splitlines() if "/" in line}


def _prose(text: str) -> str:
    """The page without its fenced code blocks."""
    return FENCE.sub("", text)


def _code_spans(text: str) -> list[str]:
    return [m.group(2).strip() for m in INLINE_CODE.finditer(_prose(text))]


class _ConfigLoader(yaml.SafeLoader):
    """Reads mkdocs.yml, whose MkDocs-specific tags (``!relative``) do not matter here."""


_ConfigLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def _nav_files(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [f for item in node for f in _nav_files(item)]
    if isinstance(node, dict):
        return [f for value in node.values() for f in _nav_files(value)]
    return []


def _resolve(dotted: str) -> object:
    """Import the longest module prefix of ``dotted``, then walk the attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            found = importlib.util.find_spec(module_name) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            continue
        obj: object = importlib.import_module(module_name)
        for attr in parts[cut:]:
            obj = _attribute(obj, attr, dotted)
        return obj
    raise AssertionError(f"no module of {dotted!r} imports")


def _attribute(obj: object, attr: str, dotted: str) -> object:
    if hasattr(obj, attr):
        return getattr(obj, attr)
    # Instance attributes set in __init__ or declared as fields (dataclasses, pydantic).
    if isinstance(obj, type):
        fields = getattr(obj, "model_fields", None) or getattr(obj, "__dataclass_fields__", {})
        if attr in fields or attr in getattr(obj, "__annotations__", {}):
            return object()
        if attr in _self_assignments(obj):
            return object()
    raise AssertionError(f"{dotted!r}: {obj!r} has no attribute {attr!r}")


def _self_assignments(cls: type) -> set[str]:
    """Names assigned as ``self.<name>`` in the methods of ``cls`` (read from the source)."""
    import inspect

    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return set()
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            if (
                isinstance(target, ast.Attribute)
                and isinstance(target.value, ast.Name)
                and target.value.id == "self"
            ):
                names.add(target.attr)
    return names


def test_docs_exist() -> None:
    assert (DOCS / "index.md").is_file()
    assert len(PAGES) > 10


def test_every_nav_entry_is_a_page_and_every_page_is_in_the_nav() -> None:
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=_ConfigLoader)
    nav = _nav_files(config["nav"])
    missing = [f for f in nav if not (DOCS / f).is_file()]
    assert not missing, f"nav entries without a page: {missing}"
    pages = {p.relative_to(DOCS).as_posix() for p in PAGES}
    assert not pages - set(nav), f"pages not in the nav: {sorted(pages - set(nav))}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # http:, mailto:, an anchor on the same page
        path = target.split("#", 1)[0]
        resolved = (page.parent / path).resolve()
        if not resolved.is_relative_to(DOCS.resolve()):
            broken.append(f"{target} (outside docs/: the site cannot serve it)")
        elif not resolved.exists():
            broken.append(target)
    assert not broken, f"{page.name}: broken links {broken}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_voxtra_names_in_backticks_exist(page: Path) -> None:
    names = {m for span in _code_spans(page.read_text()) for m in DOTTED.findall(span)}
    errors = []
    for name in sorted(names):
        try:
            _resolve(name)
        except AssertionError as exc:
            errors.append(str(exc))
    assert not errors, f"{page.name}: {errors}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_voxtra_imports_in_code_blocks_resolve(page: Path) -> None:
    errors = []
    for block in FENCE.finditer(page.read_text()):
        for line in block.group(0).splitlines():
            m = re.match(r"^\s*from\s+(voxtra[\w.]*)\s+import\s+\(?([\w\s,]+)\)?\s*(#.*)?$", line)
            if m:
                for name in (n.strip() for n in m.group(2).split(",")):
                    if name:
                        try:
                            _resolve(f"{m.group(1)}.{name}")
                        except AssertionError as exc:
                            errors.append(f"{line.strip()}: {exc}")
            m = re.match(r"^\s*import\s+(voxtra[\w.]*)\s*$", line)
            if m:
                try:
                    _resolve(m.group(1))
                except AssertionError as exc:
                    errors.append(f"{line.strip()}: {exc}")
    assert not errors, f"{page.name}: {errors}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_repository_paths_in_backticks_exist(page: Path) -> None:
    top_level = _tracked_top_level()
    missing = []
    for span in _code_spans(page.read_text()):
        if not REPO_PATH.match(span):
            continue
        first = span.split("/", 1)[0]
        cited = first in top_level or Path(span.rstrip("/")).suffix in FILE_SUFFIXES
        if cited and not (ROOT / span).exists():
            missing.append(span)
    assert not missing, f"{page.name} cites files that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_snippet_includes_name_real_files_and_sections(page: Path) -> None:
    errors = []
    for spec in SNIPPET.findall(page.read_text()):
        path, _, section = spec.partition(":")
        file = ROOT / path
        if not file.is_file():
            errors.append(f"{spec}: no file {path}")
            continue
        if section and not section[0].isdigit():
            text = file.read_text()
            for edge in ("start", "end"):
                if f"--8<-- [{edge}:{section}]" not in text:
                    errors.append(f"{spec}: no [{edge}:{section}] marker in {path}")
    assert not errors, f"{page.name}: {errors}"


@pytest.mark.parametrize("example", sorted((ROOT / "examples").rglob("*.py")), ids=lambda p: p.name)
def test_examples_compile_and_import(example: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every example the docs include at least imports (they build apps at import)."""
    compile(example.read_text(), str(example), "exec")
    if example.name in {"conftest.py"} or example.name.startswith("test_"):
        return  # pytest runs these (testpaths)
    # A fixed instance id: an app built without one holds one of this host's instance
    # slots (a file lock) for as long as it lives, and other tests' apps want slot 0.
    monkeypatch.setenv("VOXTRA_INSTANCE_ID", "docs_example")
    spec = importlib.util.spec_from_file_location(f"_docs_example_{example.stem}", example)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)


# -- the calls a reader copies: call.<method>(...) and app.<method>(...) ----------------

CODE_PAGES = [ROOT / "README.md", *PAGES]


def _python_blocks(page: Path) -> list[str]:
    """The page's Python code blocks, each snippet include replaced by what it includes."""
    blocks = []
    for block in FENCE.finditer(page.read_text()):
        first, _, body = block.group(0).partition("\n")
        if first.strip("`~ ").split(" ")[0] not in ("python", "py"):
            continue
        for spec in SNIPPET.findall(body):
            path, _, section = spec.partition(":")
            text = (ROOT / path).read_text()
            if section and not section[0].isdigit():
                text = text.split(f"--8<-- [start:{section}]", 1)[1]
                text = text.split(f"--8<-- [end:{section}]", 1)[0]
            body = body.replace(f'--8<-- "{spec}"', text.rsplit("\n", 1)[0])
        blocks.append(body.rsplit("\n", 1)[0])  # without the closing fence
    return blocks


def _call_mismatches(code: str) -> list[str]:
    """``call.x(...)``/``app.x(...)`` in ``code`` that CallSession/VoxtraApp cannot take."""
    import inspect

    from voxtra import CallSession, VoxtraApp

    try:
        tree = ast.parse(code)
    except SyntaxError:
        return []  # a fragment (`...` lines, an elided body): nothing to check
    receivers: dict[str, type] = {"call": CallSession, "app": VoxtraApp}
    for node in ast.walk(tree):  # a block that makes its own `call` (a FakeCall) is not one
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id == "call":
                    receivers.pop("call", None)
    errors = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner, attr = node.func.value, node.func.attr
        if not isinstance(owner, ast.Name) or owner.id not in receivers:
            continue
        cls = receivers[owner.id]
        shown = ast.unparse(node)[:80]
        if not hasattr(cls, attr):
            if attr not in _self_assignments(cls):
                errors.append(f"{shown}: {cls.__name__} has no {attr!r}")
            continue
        member = inspect.getattr_static(cls, attr)
        if not callable(member) or any(isinstance(a, ast.Starred) for a in node.args):
            continue
        signature = inspect.signature(getattr(cls, attr))
        parameters = list(signature.parameters.values())[1:]  # self
        try:
            signature.replace(parameters=parameters).bind(
                *node.args, **{k.arg: k.value for k in node.keywords if k.arg is not None}
            )
        except TypeError as exc:
            errors.append(f"{shown}: {cls.__name__}.{attr}{signature}: {exc}")
    return errors


@pytest.mark.parametrize(
    "page", CODE_PAGES, ids=lambda p: p.relative_to(ROOT).as_posix().removeprefix("docs/")
)
def test_call_and_app_methods_in_code_blocks_take_those_arguments(page: Path) -> None:
    errors = [e for block in _python_blocks(page) for e in _call_mismatches(block)]
    assert not errors, f"{page.name}: {errors}"
