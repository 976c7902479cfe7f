"""One name, one meaning: no two public classes in ``voxtra/`` share a name.

``voxtra.Playback`` (the handle ``call.play_file`` returns) and ARI's playback model were
both ``Playback``; ``voxtra.ari.events.UnknownEvent`` and chan_websocket's unknown
control event were both ``UnknownEvent``. A reader of a traceback or a type hint could
not tell them apart. Classes are read with ``ast`` (no optional dependency needed).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "voxtra"


def test_no_two_public_classes_share_a_name() -> None:
    where: dict[str, list[str]] = defaultdict(list)
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                where[node.name].append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    shared = {name: places for name, places in where.items() if len(places) > 1}
    assert not shared, shared
