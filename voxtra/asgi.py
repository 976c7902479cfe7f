"""ASGI middleware shared by Voxtra's HTTP surfaces: :class:`BodyLimit`.

A module of its own, beside both: the platform's API (``voxtra.platform.api``) and the
Twilio endpoints (``voxtra.twilio.backend``) each bound their requests' bodies with it,
and ``voxtra.twilio`` imports nothing of ``voxtra.platform``
(``tests/unit/architecture/test_layers.py``). It needs nothing of Voxtra but its errors.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voxtra.errors import VoxtraError

__all__ = ["BodyLimit", "BodyTooLarge", "declared_length"]


class BodyTooLarge(VoxtraError):
    """A request's body is longer than its :class:`BodyLimit` allows: raised to the app
    from ``receive`` once the bytes received pass the limit (the app stops reading;
    the middleware answers 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body exceeds the limit of {limit} bytes")
        self.limit = limit


def declared_length(headers: Headers) -> int | None:
    """The body's length as its ``Content-Length`` says, if it says one."""
    declared = headers.get("content-length", "")
    # Digits (uvicorn's h11 and httptools answer 400 to any other); isascii because
    # "\xb2".isdigit() is true too, and int() refuses it.
    return int(declared) if declared.isascii() and declared.isdigit() else None


def _plain_refusal(scope: Scope, exc: BodyTooLarge) -> Response:
    """A 413 in plain text."""
    return PlainTextResponse(str(exc), status_code=413)


class BodyLimit:
    """Answer 413 to a request whose body is longer than ``limit`` bytes, with the
    response ``refusal(scope, exc)`` makes (plain text by default). ``limit`` is a
    number of bytes, or a function of the request's scope to it: a limit per route.

    A ``Content-Length`` over the limit is refused at once, before the app runs: nothing
    of the body is read. A body without one (chunked) is counted as the app receives it;
    the chunk that passes the limit raises :class:`BodyTooLarge` from ``receive``, and
    whatever the app answers to that is dropped for the 413. Pure ASGI: nothing is
    buffered, and a streaming response is not held up.
    """

    def __init__(
        self,
        app: ASGIApp,
        limit: int | Callable[[Scope], int],
        refusal: Callable[[Scope, BodyTooLarge], Response] = _plain_refusal,
    ) -> None:
        self.app = app
        self.limit = limit
        self.refusal = refusal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope) if callable(self.limit) else self.limit
        declared = declared_length(Headers(scope=scope))
        if declared is not None and declared > limit:
            await self.refusal(scope, BodyTooLarge(limit))(scope, receive, send)
            return
        received = 0
        refused: BodyTooLarge | None = None
        started = False

        async def counted() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    error = BodyTooLarge(limit)
                    if not started:
                        refused = error  # answered below, whatever the app makes of it
                    raise error
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if refused is not None:
                return  # the app's answer to a body it could not read: the 413 instead
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except BodyTooLarge as exc:
            if exc is not refused:
                raise
        if refused is not None:
            await self.refusal(scope, refused)(scope, receive, send)
