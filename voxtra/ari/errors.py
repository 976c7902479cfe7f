"""ARI errors: what went wrong, on which request, in Asterisk's own words.

Every failure of the REST client or the event stream surfaces as one of these; no bare
aiohttp exception reaches users.
"""

from __future__ import annotations

from voxtra.errors import VoxtraError

__all__ = [
    "AriBadRequest",
    "AriConflict",
    "AriConnectionError",
    "AriError",
    "AriInvalidId",
    "AriNotFound",
    "AriServerError",
    "AriUnauthorized",
    "AriUnprocessable",
    "error_for_status",
]


class AriError(VoxtraError):
    """An ARI request failed. ``status`` is 0 when no HTTP answer came back."""

    def __init__(self, status: int, method: str, path: str, message: str) -> None:
        self.status = status
        self.method = method
        self.path = path
        self.message = message
        where = f"{method} {path}"
        super().__init__(f"{where} -> {status}: {message}" if status else f"{where}: {message}")


class AriBadRequest(AriError):
    """400: a parameter is missing or malformed."""


class AriUnauthorized(AriError):
    """401/403: wrong ARI user or password, or a read-only user."""


class AriNotFound(AriError):
    """404: the channel, bridge, playback or recording does not exist (any more)."""


class AriConflict(AriError):
    """409: the resource is in the wrong state (e.g. recording a channel in a bridge)."""


class AriUnprocessable(AriError):
    """422: e.g. the channel is not in the Stasis application (yet)."""


class AriServerError(AriError):
    """5xx: Asterisk failed to do it."""


class AriConnectionError(AriError):
    """Asterisk could not be reached, or the connection was lost mid-request."""


class AriInvalidId(VoxtraError, ValueError):
    """An id or name cannot be one segment of an ARI URL (empty, ``.`` or ``..``).

    Raised before anything is sent: ``hangup("..")`` would otherwise resolve to
    ``DELETE /ari/`` and act on a resource other than the one named.
    """


_BY_STATUS: dict[int, type[AriError]] = {
    400: AriBadRequest,
    401: AriUnauthorized,
    403: AriUnauthorized,
    404: AriNotFound,
    409: AriConflict,
    422: AriUnprocessable,
}


def error_for_status(status: int, method: str, path: str, message: str) -> AriError:
    """The most specific error class for an HTTP status."""
    cls = _BY_STATUS.get(status) or (AriServerError if status >= 500 else AriError)
    return cls(status, method, path, message)
