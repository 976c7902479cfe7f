"""The VoxtraApp of a unit test on FakeAsterisk, made one way for every test file.

The test files import it by name (``from fake_apps import fake_app``): pytest puts
``tests/unit`` on the path of the tests below it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from voxtra import CallSession, VoxtraApp

FAKE_ARI_URL = "http://asterisk.invalid:8088"
"""An ARI URL nothing answers: ``fake_asterisk.serve(app)`` is the app's transport."""


def fake_app(tmp_path: Path, app_name: str, **options: Any) -> VoxtraApp:
    """An app for ``fake_asterisk.serve(app)``: instance ``unit``, its spool and
    recordings under ``tmp_path``; ``options``: VoxtraApp's (these included)."""
    options.setdefault("instance_id", "unit")
    options.setdefault("spool_dir", str(tmp_path / "spool"))
    options.setdefault("recordings_dir", str(tmp_path / "recordings"))
    return VoxtraApp(FAKE_ARI_URL, "user", "secret", app_name=app_name, **options)


def routed_app(
    tmp_path: Path,
    app_name: str,
    handler: Callable[[CallSession], Awaitable[None]],
    *,
    metadata: dict[str, Any] | None = None,
    **options: Any,
) -> VoxtraApp:
    """:func:`fake_app` running ``handler`` for every extension (``_X.``, with the
    route's ``metadata``), its handler deadline 1 s unless ``options`` say otherwise."""
    options.setdefault("handler_deadline", 1.0)
    app = fake_app(tmp_path, app_name, **options)
    app.route("_X.", metadata=metadata)(handler)
    return app
