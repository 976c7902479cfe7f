"""The operator page (``/ui``) of ``voxtra serve``: calls in progress with their live
transcript and per-turn latency, recent calls with their recordings, campaign progress.

Plain HTML rendered on the server (:mod:`~voxtra.platform.ui.render`), one small script
and a stylesheet served by the app itself (no build step, nothing from another host).
Signing in exchanges an API token for a session cookie
(:mod:`~voxtra.platform.ui.session`). Imported by ``create_api`` through
:data:`voxtra.platform.api.routers.OPTIONAL_MODULES`.
"""

from __future__ import annotations

from voxtra.platform.api import routers
from voxtra.platform.ui.routes import router

__all__ = ["router"]

routers.register(router)
