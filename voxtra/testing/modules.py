"""Import a Python file by its path, for tests of scripts that are not in a package.

An app kept as a script (``examples/assistant.py``, a user's ``app.py``) is loaded
under one module name, once: a second load under the same name returns the first
module, so the script's routes, tools and module state exist once per process, and a
script that loads its sibling under the same name (``examples/demo.py`` does) shares it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from voxtra.errors import ConfigError

__all__ = ["import_file"]


def import_file(path: str | Path, name: str | None = None) -> ModuleType:
    """The module of the file at ``path``, registered in :data:`sys.modules` as
    ``name`` (the file's stem by default) before it runs, as an import would (dataclasses
    and pickling look a module up by name). Loaded once per ``name``.

    Raises :class:`~voxtra.errors.ConfigError` when there is no such file.
    """
    file = Path(path).resolve()
    module_name = name or file.stem
    loaded = sys.modules.get(module_name)
    if loaded is not None:
        return loaded
    if not file.is_file():
        raise ConfigError(f"no Python file at {file}")
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import {file}: not a Python source file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]  # a failed import leaves no half module behind
        raise
    return module
