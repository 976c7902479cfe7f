"""Twilio Media Streams as a telephony backend: :class:`TwilioBackend`.

Three HTTP endpoints under ``settings.twilio.path_prefix`` (``/twilio``), as an ASGI
app (:meth:`TwilioBackend.asgi`; ``voxtra serve`` mounts it when Twilio is configured):

- ``POST /voice``: the call's webhook. Answers TwiML built with the ``twilio`` SDK:
  ``<Connect><Stream url="wss://PUBLIC/twilio/stream">`` with the caller (``From``),
  the called number (``To``) and the direction as ``<Parameter>``\\ s;
- ``POST /status``: the status callbacks of calls this app originated (busy, no
  answer, failed, canceled, completed);
- ``WebSocket /stream``: the bidirectional Media Stream. Its ``start`` message makes
  a :class:`~voxtra.CallSession` (id: the CallSid) with a
  :class:`~voxtra.twilio.control.TwilioCallControl`, routed by the app's own routes
  (``CallInfo.called_number`` = ``To``, ``caller`` = ``From``), and run by the app
  like an Asterisk call (task group, teardown, hang-up at the handler's end).

Every request must carry a valid ``X-Twilio-Signature`` (the SDK's
``RequestValidator`` over the public URL Twilio requested and the form parameters, the
auth token as key): a request without one is answered 403 (the socket is closed with
policy violation 1008) before anything else happens.

The REST API (hang up, transfer, recordings, originate) goes through the SDK's asyncio
client. ``settings.twilio.api_base_url`` points it elsewhere (the tests' local fake).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.twiml.voice_response import Connect, VoiceResponse

from voxtra.app import VoxtraApp
from voxtra.ari.client import basic_auth_header
from voxtra.ari.events import ChannelDtmfReceived
from voxtra.ari.models import CallerID, Channel, DialplanCEP
from voxtra.asgi import BodyLimit
from voxtra.calls.context import CallContext
from voxtra.calls.session import CallSession
from voxtra.calls.state import CallDirection, CallEndReason
from voxtra.config import TwilioSettings, secret_value
from voxtra.errors import (
    AppNotRunning,
    CallBusy,
    CallFailed,
    CallNoAnswer,
    ConfigError,
    OriginateError,
    RecordingError,
    VoxtraError,
)
from voxtra.recording.metadata import RecordingMetadata
from voxtra.recording.naming import sanitize_component
from voxtra.routing import CallHandler, CallInfo
from voxtra.twilio.control import StartedRecording, TwilioCallControl
from voxtra.twilio.protocol import (
    Connected,
    Dtmf,
    Mark,
    MediaChunk,
    Start,
    Stop,
    StreamMessage,
    TwilioProtocolError,
    parse_message,
)
from voxtra.twilio.transport import TwilioMediaTransport

__all__ = ["TwilioApiError", "TwilioBackend", "status_outcome"]

logger = logging.getLogger(__name__)

STREAM_TOKEN = "VoxtraStreamToken"
"""The ``<Parameter>`` the webhook gives a call's stream, which its ``start`` message
must carry back (see :meth:`TwilioBackend.stream_token`)."""

STREAM_START_WINDOW = 60.0
"""Seconds from the webhook's answer within which its stream must start (Twilio opens
it at once; generous for a loaded box)."""

START_WAIT = 10.0
"""Seconds from a stream socket's accept within which its ``start`` must come (Twilio
sends ``connected``, then ``start`` at once, as it connects). Before, a socket opened
with a replayed signature could stay open, unread by anyone, for ever."""

START_MAX_CHARS = 64 * 1024
"""The longest message a stream socket may send before its ``start``: Twilio's
``connected`` and ``start`` are under 1 KB. Before, anything went (uvicorn takes 16 MiB
frames): a 16 MB ``media`` message on a socket opened with a replayed signature held
the event loop for 0.15 s to parse, every call's audio stalled meanwhile, again and
again."""

FORM_MAX_BYTES = 64 * 1024
"""The longest body the webhook and the status callback read (longer: a plain 413).
Twilio's forms are a few KB: the call's SIDs, numbers, status and the numbers'
places, some 30 fields. The form is read before its signature can be checked: before,
a stranger's unsigned 200 MiB form was read and parsed to a 403, the server's RSS up
206 MiB for that one request."""

GIVEN_UP_KEPT = 600.0
"""Seconds a given-up originate's CallSid is remembered: longer than any ring time
(the API allows 300 s) plus the stream's start."""

FINAL_FAILURES = {"busy", "no-answer", "failed", "canceled"}
"""Twilio call statuses that end an outbound call before it was answered."""

EARLY_STATUSES = {"ringing", "completed", *FINAL_FAILURES}
"""The statuses an originate acts on: kept when they come before it registered."""

EARLY_STATUS_KEPT = 60.0
"""Seconds a status callback is kept for a CallSid no originate has registered yet
(Twilio posts ``ringing``, even ``busy``, as soon as it has them: maybe before its
answer to ``calls.create`` is read here)."""

EARLY_STATUS_LIMIT = 1000
"""At most this many CallSids' early statuses are kept (the oldest go first)."""


class TwilioApiError(VoxtraError):
    """Twilio's REST API refused a request (``status``: its HTTP status, ``code``:
    Twilio's error code, e.g. 21211 for a number it will not call), or could not be
    reached (``status`` and ``code`` None). The SDK's own exceptions and aiohttp's
    are turned into this one, so a caller catches ``VoxtraError`` on either backend,
    as ARI's errors are on Asterisk."""

    def __init__(
        self, what: str, message: str, status: int | None = None, code: int | None = None
    ) -> None:
        self.status = status
        self.code = code
        self.detail = message
        said = self.reference
        super().__init__(f"Twilio {what}: {message}" + (f" ({said})" if said else ""))

    @property
    def reference(self) -> str:
        """``"HTTP 400, error 21211"`` (what is known of them; "" when unreachable)."""
        parts = (("HTTP", self.status), ("error", self.code))
        return ", ".join(f"{label} {value}" for label, value in parts if value is not None)


@contextlib.asynccontextmanager
async def _rest(what: str) -> AsyncIterator[None]:
    """Twilio's and aiohttp's errors of the REST request inside as :class:`TwilioApiError`
    (its text: Twilio's message and code; never the request's credentials)."""
    try:
        yield
    except TwilioRestException as exc:
        raise TwilioApiError(what, str(exc.msg), exc.status, exc.code) from exc
    except (TwilioException, aiohttp.ClientError, TimeoutError) as exc:
        raise TwilioApiError(what, f"{type(exc).__name__}: {exc}") from exc


def status_outcome(to: str, status: str, sip_code: str | None = None) -> OriginateError | None:
    """A Twilio ``CallStatus`` as the outcome ``originate()`` raises on Asterisk:
    ``busy`` -> :class:`CallBusy`, ``no-answer`` -> :class:`CallNoAnswer`, ``failed``
    and ``canceled`` -> :class:`CallFailed`; None for the others (still going, or
    answered)."""
    said = f"Twilio: {status}" + (f", SIP {sip_code}" if sip_code else "")
    if status == "busy":
        return CallBusy(to, None, said, "busy")
    if status == "no-answer":
        return CallNoAnswer(to, None, said, "no answer")
    if status in ("failed", "canceled"):
        return CallFailed(to, None, said, "call failed" if status == "failed" else "canceled")
    return None


class _RestHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]
    """The SDK's aiohttp client, sending to ``base_url`` instead of Twilio's hosts."""

    def __init__(self, base_url: str | None) -> None:
        super().__init__()
        self.base_url = base_url

    async def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        if self.base_url:
            url = _rebase(url, self.base_url)
        auth = kwargs.pop("auth", None)
        if auth is not None:
            # The SDK would hand aiohttp a BasicAuth, deprecated in aiohttp 3.14 (removed
            # in 4.0, a warning on every request): the same header, made here. The SDK's
            # request log leaves out Authorization headers.
            headers = dict(kwargs.get("headers") or {})
            headers["Authorization"] = basic_auth_header(*auth)
            kwargs["headers"] = headers
        return await super().request(method, url, *args, **kwargs)


def _rebase(url: str, base_url: str) -> str:
    """``url`` with the scheme and host of ``base_url``."""
    parts, base = urlsplit(url), urlsplit(base_url)
    return urlunsplit((base.scheme, base.netloc, parts.path, parts.query, parts.fragment))


class _Outbound:
    """An originate waiting for its stream (or its failure)."""

    def __init__(
        self,
        to: str,
        handler: CallHandler | None,
        metadata: dict[str, Any],
        on_ringing: Callable[[], None] | None = None,
    ) -> None:
        self.to = to
        self.handler = handler
        self.metadata = metadata
        self.on_ringing = on_ringing
        self.future: asyncio.Future[CallSession] = asyncio.get_running_loop().create_future()


async def _receive_text(ws: WebSocket) -> str:
    """The next text frame, as ``WebSocket.receive_text`` but a binary frame is a
    :class:`TwilioProtocolError` (Twilio sends JSON text only), not its KeyError."""
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
    text = message.get("text")
    if not isinstance(text, str):
        raise TwilioProtocolError("a binary frame: Media Streams messages are JSON text")
    return text


async def _opening_message(ws: WebSocket, deadline: float) -> StreamMessage:
    """A stream's next message before its ``start``: ``connected``, ``start`` or
    ``stop``, of at most :data:`START_MAX_CHARS`, by ``deadline`` (loop time). Anything
    else is a :class:`TwilioProtocolError`, and a long message is refused unparsed."""
    try:
        async with asyncio.timeout_at(deadline):
            text = await _receive_text(ws)
    except TimeoutError:
        raise TwilioProtocolError(f"no start message within {START_WAIT:.0f} s") from None
    if len(text) > START_MAX_CHARS:
        raise TwilioProtocolError(f"a message of {len(text)} characters before the start")
    message = parse_message(text)
    if not isinstance(message, Connected | Start | Stop):
        raise TwilioProtocolError(f"a {type(message).__name__} message before the start")
    return message


async def _hold(call: CallSession) -> None:
    """An originated call without a handler stays up until a party hangs up."""
    await call.wait_ended()


def _why_ended(context: CallContext) -> CallEndReason:
    """Why a call ends that Twilio ended (its stream stopped, or its status callback
    said so): it hung up, unless the app is transferring it. Twilio stops the stream as
    it runs the transfer's ``<Dial>``, and that stop may come before its answer to the
    update (a stop that came first ended the call as ``remote``), as ARI's StasisEnd of
    a dialplan transfer may."""
    return CallEndReason.TRANSFERRED if context.transferred else CallEndReason.REMOTE


class TwilioBackend:
    """Twilio calls for a :class:`~voxtra.VoxtraApp` (see the module docstring)."""

    def __init__(self, app: VoxtraApp, settings: TwilioSettings | None = None) -> None:
        settings = settings or app.settings.twilio
        if not settings.configured or settings.auth_token is None:
            raise ConfigError(
                "Twilio needs twilio.account_sid, twilio.auth_token and twilio.public_url "
                "(VOXTRA_TWILIO__ACCOUNT_SID, ..._AUTH_TOKEN, ..._PUBLIC_URL)"
            )
        self.app = app
        self.settings = settings
        self.account_sid: str = settings.account_sid or ""
        self.public_url: str = (settings.public_url or "").rstrip("/")
        """The URL Twilio reaches this server at (signatures are checked against it)."""
        self.prefix = "/" + settings.path_prefix.strip("/") if settings.path_prefix else ""
        self._validator = RequestValidator(secret_value(settings.auth_token))
        self._client: Client | None = None
        self._http: _RestHttpClient | None = None
        self._downloads: aiohttp.ClientSession | None = None
        self._outbound: dict[str, _Outbound] = {}
        self._registered = asyncio.Condition()
        self._creating = 0
        """Originates whose ``calls.create`` is under way (their CallSid not yet known)."""
        self._cancelling: set[asyncio.Future[None]] = set()
        """Ends of the calls of originates cancelled during ``calls.create`` (kept: the
        originate may be cancelled again while it waits for one)."""
        self._early: dict[str, tuple[float, list[tuple[str, str | None]]]] = {}
        """Status callbacks that came before their originate registered the CallSid: by
        CallSid, when the first one came and each one's (status, SIP code), in order."""
        self.sessions: dict[str, CallSession] = {}
        """Live Twilio calls by CallSid."""
        self.rejected = 0
        """Requests refused for a missing or wrong signature (or stream token)."""
        self._streamed: dict[str, float] = {}
        """CallSids whose stream started, by when: one stream per call."""
        self._given_up: dict[str, float] = {}
        """CallSids whose originate gave up (cancelled, or no answer in time), by when:
        a stream that still comes for one is hung up, not routed as an inbound call."""

    @property
    def host(self) -> VoxtraApp:
        """The app the calls run in."""
        return self.app

    # -- URLs ---------------------------------------------------------------------------

    @property
    def voice_url(self) -> str:
        return f"{self.public_url}{self.prefix}/voice"

    @property
    def status_url(self) -> str:
        return f"{self.public_url}{self.prefix}/status"

    @property
    def stream_url(self) -> str:
        base = self.public_url
        if base.startswith("https://"):
            base = "wss://" + base.removeprefix("https://")
        elif base.startswith("http://"):
            base = "ws://" + base.removeprefix("http://")
        return f"{base}{self.prefix}/stream"

    def asgi(self) -> Starlette:
        """The webhook, status callback and stream socket, at their full paths (mount
        it at ``/``, or add its routes to a FastAPI app)."""
        return Starlette(routes=self.routes())

    def routes(self) -> list[Route | WebSocketRoute]:
        limit = [Middleware(BodyLimit, limit=FORM_MAX_BYTES)]
        return [
            Route(f"{self.prefix}/voice", self._voice, methods=["POST"], middleware=limit),
            Route(f"{self.prefix}/status", self._status, methods=["POST"], middleware=limit),
            WebSocketRoute(f"{self.prefix}/stream", self._stream),
        ]

    # -- signatures ---------------------------------------------------------------------

    def _public(self, path: str, query: str) -> str:
        return f"{self.public_url}{path}" + (f"?{query}" if query else "")

    def _signed(self, url: str, params: Mapping[str, str], signature: str | None) -> bool:
        if not signature:
            return False
        return bool(self._validator.validate(url, dict(params), signature))

    async def _form(self, request: Request) -> dict[str, str] | None:
        """The request's form if Twilio signed it, else None (and counted)."""
        form = await request.form()
        params = {k: str(v) for k, v in form.items()}
        url = self._public(request.url.path, request.url.query)
        if not self._signed(url, params, request.headers.get("x-twilio-signature")):
            self.rejected += 1
            logger.warning("twilio: refused %s without a valid signature", request.url.path)
            return None
        return params

    # -- the webhook and the status callback ------------------------------------------------

    async def _voice(self, request: Request) -> Response:
        params = await self._form(request)
        if params is None:
            return Response("invalid signature", status_code=403)
        response = VoiceResponse()
        if not self.app.accepting:
            response.reject()  # stopping: Twilio tells the caller the line is busy
            return Response(str(response), media_type="application/xml")
        connect = Connect()
        stream = connect.stream(url=self.stream_url)
        for name in ("From", "To", "Direction", "CallSid"):
            stream.parameter(name=name, value=params.get(name, ""))
        stream.parameter(name=STREAM_TOKEN, value=self.stream_token(params.get("CallSid", "")))
        response.append(connect)
        return Response(str(response), media_type="application/xml")

    async def _status(self, request: Request) -> Response:
        params = await self._form(request)
        if params is None:
            return Response("invalid signature", status_code=403)
        call_sid, status = params.get("CallSid", ""), params.get("CallStatus", "")
        logger.debug("twilio call %s: status %s", call_sid, status)
        sip_code = params.get("SipResponseCode")
        pending = self._outbound.get(call_sid)
        if pending is not None:
            self._apply_status(call_sid, pending, status, sip_code)
        elif (
            self._creating
            and status in EARLY_STATUSES
            and call_sid not in self.sessions
            and call_sid not in self._given_up
        ):
            # Perhaps the call of an originate whose calls.create has not returned yet:
            # Twilio posts as soon as the call rings (or is busy), whether or not its
            # REST answer has been read here.
            self._keep_early(call_sid, status, sip_code)
        session = self.sessions.get(call_sid)
        if session is not None and status in ("completed", *FINAL_FAILURES):
            # The call ended at Twilio (the stream's stop may come after this, or not).
            session.context.end_because(_why_ended(session.context))
            transport = session.control.transport
            if transport is not None:
                await transport.close()
            session.context.mark_ended()
        return Response(status_code=204)

    def _apply_status(
        self, call_sid: str, pending: _Outbound, status: str, sip_code: str | None
    ) -> None:
        """A status callback for a registered originate: ``on_ringing``, or its outcome."""
        if status == "ringing" and pending.on_ringing is not None:
            try:
                pending.on_ringing()
            except Exception:
                logger.exception("twilio call %s: on_ringing failed", call_sid)
        if not pending.future.done():
            outcome = status_outcome(pending.to, status, sip_code)
            if outcome is None and status == "completed":
                outcome = CallFailed(
                    pending.to, None, "Twilio: completed", "ended before its stream started"
                )
            if outcome is not None:
                pending.future.set_exception(outcome)
                pending.future.exception()

    def _keep_early(self, call_sid: str, status: str, sip_code: str | None) -> None:
        """Keep a status for :meth:`originate` to apply once it registers ``call_sid``.
        Bounded: :data:`EARLY_STATUS_KEPT` seconds, :data:`EARLY_STATUS_LIMIT` CallSids,
        a few statuses each, and all dropped once no ``calls.create`` is under way (a
        status of a call no originate will claim: another app's, or one that ended)."""
        now = time.monotonic()
        for sid, (when, _) in list(self._early.items()):
            if now - when <= EARLY_STATUS_KEPT:
                break  # kept in the order they came: the rest are younger
            del self._early[sid]
        if call_sid not in self._early:
            while len(self._early) >= EARLY_STATUS_LIMIT:
                del self._early[next(iter(self._early))]
            self._early[call_sid] = (now, [])
        statuses = self._early[call_sid][1]
        if len(statuses) < len(EARLY_STATUSES):  # each comes once; repeats are not kept
            statuses.append((status, sip_code))

    # -- the Media Stream ---------------------------------------------------------------------

    async def _stream(self, ws: WebSocket) -> None:
        url = self._public(ws.url.path, ws.url.query).replace("http", "ws", 1)
        if not (
            self._signed(url, {}, ws.headers.get("x-twilio-signature"))
            or self._signed(self.stream_url, {}, ws.headers.get("x-twilio-signature"))
        ):
            self.rejected += 1
            logger.warning("twilio: refused a media stream without a valid signature")
            await ws.close(code=1008)
            return
        await ws.accept()
        transport: TwilioMediaTransport | None = None
        session: CallSession | None = None
        reason = "stream stopped"
        deadline = asyncio.get_running_loop().time() + START_WAIT
        try:
            while True:
                if transport is None:
                    # Nobody's call yet: only Twilio's connected and start, small and soon.
                    message = await _opening_message(ws, deadline)
                else:
                    message = parse_message(await _receive_text(ws))
                if isinstance(message, MediaChunk):
                    if transport is not None and message.track in ("inbound", "inbound_track"):
                        transport.feed(message.payload)
                elif isinstance(message, Mark):
                    if transport is not None:
                        transport.marked(message.name)
                elif isinstance(message, Dtmf):
                    if transport is not None and session is not None and message.digit:
                        transport.dtmf(message.digit)
                        # As the ARI event it is on Asterisk: queued for listen_dtmf and
                        # gather, and seen by the call's waiters (the platform's
                        # recorder stores each digit from it).
                        context = session.context
                        context.handle_event(
                            ChannelDtmfReceived(digit=message.digit, channel=context.channel)
                        )
                elif isinstance(message, Start):
                    if transport is None:
                        start = self._announced(message)
                        if start is None:
                            self.rejected += 1
                            logger.warning(
                                "twilio: refused the stream of call %s (no valid stream "
                                "token from the webhook, or a second stream)",
                                message.call_sid,
                            )
                            await ws.close(code=1008)
                            return
                        pending = await self._outbound_for(start)
                        if self._given_up.pop(start.call_sid, None) is not None:
                            await self._hang_up_unwanted(
                                start.call_sid, "answered after its originate gave up"
                            )
                            return
                        if pending is None and not self.app.accepting:
                            # Answered by the webhook just before the app began to stop
                            # (or a stream that outlived it): as an Asterisk call that
                            # arrives then, hung up. Routed, its handler ran in a
                            # stopped app, the call up at Twilio with nobody to end it.
                            await self._hang_up_unwanted(
                                start.call_sid, "the app is stopping and takes no new calls"
                            )
                            return
                        transport, session = await self._start_call(ws, start, pending)
                elif isinstance(message, Stop):
                    break
        except WebSocketDisconnect:
            reason = "socket closed"
        except TwilioProtocolError as exc:
            reason = f"protocol error: {exc}"
            logger.warning("twilio stream: %s", exc)
        finally:
            if transport is not None:
                transport.stopped(reason)
            if session is not None:
                session.context.end_because(_why_ended(session.context))
                session.context.mark_ended()
            with contextlib.suppress(Exception):
                await ws.close()

    async def _hang_up_unwanted(self, call_sid: str, why: str) -> None:
        # A stream nobody takes: "canceled" does not end an answered call at Twilio
        # (an originate that gave up), and nobody waits for this one.
        logger.info("twilio call %s: %s: hung up", call_sid, why)
        with contextlib.suppress(TwilioApiError):
            await self.update_call(call_sid, status="completed")

    def _gave_up(self, call_sid: str) -> None:
        now = time.monotonic()
        for sid, when in list(self._given_up.items()):
            if now - when > GIVEN_UP_KEPT:
                del self._given_up[sid]
        self._given_up[call_sid] = now

    def stream_token(self, call_sid: str, at: int | None = None) -> str:
        """``"<time>.<mac>"``: when the webhook answered ``call_sid``, and an HMAC of
        both under the auth token. The stream's own ``X-Twilio-Signature`` covers only
        its URL, the same for every call: a signature seen once opens the socket again,
        but without a token for a call Twilio announced, within
        :data:`STREAM_START_WINDOW`, its ``start`` makes no call."""
        at = int(time.time()) if at is None else at
        key = secret_value(self.settings.auth_token or "").encode()
        mac = hmac.new(key, f"voxtra-stream:{at}:{call_sid}".encode(), hashlib.sha256)
        return f"{at}.{mac.hexdigest()[:32]}"

    def _announced(self, start: Start) -> Start | None:
        """``start`` without its token if the token is the webhook's for this call, in
        time, and the call has no stream yet; else None."""
        params = dict(start.custom_parameters)
        token = params.pop(STREAM_TOKEN, "")
        at, _, _ = token.partition(".")
        now = time.time()
        for sid, when in list(self._streamed.items()):
            if now - when > STREAM_START_WINDOW:
                del self._streamed[sid]  # its token has expired anyway
        # Whatever the socket sent is refused here, never raised: str.isdigit() takes
        # "²" (int() does not), compare_digest() raises on non-ASCII str, and int() on
        # more than 4300 digits. The webhook's tokens and Twilio's CallSids are ASCII,
        # the time ten digits.
        if not (
            token.isascii()
            and start.call_sid.isascii()
            and at.isascii()
            and at.isdigit()
            and len(at) <= 12
        ):
            return None
        if (
            not hmac.compare_digest(token, self.stream_token(start.call_sid, int(at)))
            or not 0 <= now - int(at) <= STREAM_START_WINDOW
            or start.call_sid in self._streamed
            or start.call_sid in self.sessions
        ):
            return None
        self._streamed[start.call_sid] = now
        return replace(start, custom_parameters=params)

    async def _start_call(
        self, ws: WebSocket, start: Start, pending: _Outbound | None
    ) -> tuple[TwilioMediaTransport, CallSession]:
        params = start.custom_parameters
        call_sid = start.call_sid
        caller, called = params.get("From", ""), params.get("To", "")

        async def close_socket() -> None:
            with contextlib.suppress(Exception):
                await ws.close()

        transport = TwilioMediaTransport(
            start.stream_sid, ws.send_text, close_socket, self.app.ticker, call_sid=call_sid
        )
        channel = Channel(
            id=call_sid,
            name=f"Twilio/{call_sid}",
            state="Up",
            caller=CallerID(number=caller),
            dialplan=DialplanCEP(exten=called),
        )

        def control(context: CallContext) -> TwilioCallControl:
            return TwilioCallControl(context, self, call_sid, transport)

        session = CallSession(
            self.app,
            channel,
            direction=CallDirection.OUTBOUND if pending is not None else CallDirection.INBOUND,
            metadata=dict(pending.metadata) if pending is not None else None,
            called_number=(pending.to if pending is not None else called),
            voice=self.app.voice,
            control=control,
        )
        session.context.metadata.setdefault("twilio", {"stream_sid": start.stream_sid, **params})
        self.sessions[call_sid] = session

        def forget() -> None:
            if self.sessions.get(call_sid) is session:
                del self.sessions[call_sid]

        session.context.on_end(forget)
        if pending is not None:
            self.app.start_session(session, None, pending.handler or _hold)
            if not pending.future.done():
                pending.future.set_result(session)
        else:
            info = CallInfo(
                channel_name=channel.name,
                extension=called,
                called_number=called,
                caller=caller,
                variables=params,
            )
            self.app.start_session(session, info)
        logger.info("twilio call %s: stream %s started", call_sid, start.stream_sid)
        return transport, session

    async def _outbound_for(self, start: Start) -> _Outbound | None:
        """The originate of an outbound call's stream: it can start before
        ``calls.create`` returned here (the webhook is Twilio's, as soon as the call is
        answered). None for an inbound call, or one whose originate gave up meanwhile
        (cancelled during its ``calls.create``: see :meth:`_cancel_created`)."""
        if not start.custom_parameters.get("Direction", "").startswith("outbound"):
            return None
        call_sid = start.call_sid

        def known() -> bool:
            return call_sid in self._outbound or call_sid in self._given_up

        async with self._registered:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._registered.wait_for(known), 5.0)
        return self._outbound.get(call_sid)

    # -- REST ---------------------------------------------------------------------------------

    def client(self) -> Client:
        """The SDK's client (asyncio HTTP), made on first use."""
        if self._client is None:
            self._http = _RestHttpClient(self.settings.api_base_url)
            self._client = Client(
                self.account_sid,
                secret_value(self.settings.auth_token or ""),
                http_client=self._http,
            )
        return self._client

    async def update_call(self, call_sid: str, **changes: Any) -> None:
        """``calls(sid).update``: ``status="completed"`` hangs up, ``twiml=...`` redirects.
        Raises :class:`TwilioApiError`."""
        async with _rest(f"call {call_sid} update"):
            await self.client().calls(call_sid).update_async(**changes)

    async def start_recording(self, call_sid: str) -> str:
        calls = self.client().calls(call_sid)
        async with _rest(f"call {call_sid} recording"):
            recording = await calls.recordings.create_async(recording_channels="dual")
        return str(recording.sid)

    async def stop_recording(self, call_sid: str, recording_sid: str) -> None:
        recordings = self.client().calls(call_sid).recordings(recording_sid)
        async with _rest(f"recording {recording_sid} stop"):
            await recordings.update_async(status="stopped")

    async def deliver_recording(
        self,
        context: CallContext,
        recording: StartedRecording,
        *,
        end_reason: str,
        ready_timeout: float = 60.0,
    ) -> RecordingMetadata:
        """Wait until Twilio has the recording's file, fetch it, hand it to the app's
        recording delivery (spooled, then its sink or the app's)."""
        recording_sid, name, fmt = recording.sid, recording.name, recording.fmt
        recordings = self.app.recordings
        if recordings is None:
            raise RecordingError("the app is not started: no recording delivery")
        client = self.client()
        deadline = time.monotonic() + ready_timeout
        while True:
            async with _rest(f"recording {recording_sid} fetch"):
                found = await client.recordings(recording_sid).fetch_async()
            if found.status in ("completed", "absent", "failed"):
                break
            if time.monotonic() > deadline:
                raise RecordingError(f"Twilio recording {recording_sid}: still {found.status}")
            await asyncio.sleep(0.5)
        if found.status != "completed":
            raise RecordingError(f"Twilio recording {recording_sid}: {found.status}")
        folder = Path(self.app.settings.spool_dir) / "twilio-incoming"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{sanitize_component(name)}-{uuid.uuid4().hex[:8]}.{fmt}"
        await self._download(recording_sid, fmt, path)
        started = found.start_time or datetime.now(UTC)
        duration = float(found.duration or 0)
        meta = RecordingMetadata(
            name=name,
            call_id=context.id,
            format=fmt,
            caller=context.caller_id or None,
            called_number=context.called_number or None,
            duration=duration or None,
            started_at=started,
            ended_at=datetime.now(UTC),
            end_reason=end_reason,
        )
        await recordings.submit(path, meta, sink=recording.sink, move=True)
        return meta

    async def _download(self, recording_sid: str, fmt: str, path: Path) -> None:
        base = self.settings.api_base_url or "https://api.twilio.com"
        url = (
            f"{base.rstrip('/')}/2010-04-01/Accounts/{self.account_sid}/Recordings/"
            f"{recording_sid}.{fmt}"
        )
        if self._downloads is None:
            self._downloads = aiohttp.ClientSession()
        auth = basic_auth_header(self.account_sid, self.settings.auth_token or "")
        async with (
            _rest(f"recording {recording_sid} download"),
            self._downloads.get(url, headers={"Authorization": auth}) as response,
        ):
            if response.status != 200:
                raise RecordingError(
                    f"Twilio recording {recording_sid}: download answered {response.status}"
                )
            data = await response.read()
        await asyncio.to_thread(path.write_bytes, data)

    # -- outbound ------------------------------------------------------------------------------

    async def originate(
        self,
        to: str,
        *,
        caller_id: str | None = None,
        timeout: int = 30,
        handler: CallHandler | None = None,
        metadata: Mapping[str, Any] | None = None,
        on_ringing: Callable[[], None] | None = None,
    ) -> CallSession:
        """Call ``to`` through Twilio's REST API and wait until its stream starts
        (``caller_id``: one of your Twilio numbers; default ``twilio.from_number``).

        Returns the answered :class:`~voxtra.CallSession` (running ``handler`` as its
        route handler, if given). Raises :class:`~voxtra.errors.CallBusy`,
        :class:`~voxtra.errors.CallNoAnswer` or :class:`~voxtra.errors.CallFailed`,
        from Twilio's status callback, as ``VoxtraApp.originate`` does on Asterisk.
        ``on_ringing()`` runs when Twilio's ``ringing`` status callback comes. Cancelled
        while the call rings, it cancels the call at Twilio (``status=canceled``); while
        ``calls.create`` is under way, the cancel waits for Twilio's answer and cancels
        the call it names. Raises :class:`~voxtra.errors.AppNotRunning` (nothing placed)
        while the app is not started or is stopping, as on Asterisk.
        """
        caller = caller_id or self.settings.from_number
        if not caller:
            raise ConfigError("originate needs caller_id= (a Twilio number) or twilio.from_number")
        if not self.app.accepting:
            # As VoxtraApp.originate refuses. Placed anyway, the callee's phone rang and
            # the answered call met the webhook's <Reject> (or no server at all): the
            # originate waited out timeout + 10 s to raise CallNoAnswer, and "canceled"
            # left the answered call up at Twilio.
            raise AppNotRunning("the app is not running or is stopping: it places no new calls")
        pending = _Outbound(to, handler, dict(metadata or {}), on_ringing)
        self._creating += 1
        # The create in a task of its own, shielded: cancelled while the request is out,
        # the request has reached Twilio all the same and the call is made there (its
        # answer, which a cancelled request never reads, is the only word of its
        # CallSid). Left alone it rang on, and its answer streamed into nothing.
        create = asyncio.ensure_future(self._create(to, caller, timeout))
        try:
            try:
                call_sid = await asyncio.shield(create)
            except asyncio.CancelledError:
                # As a cancelled originate on Asterisk hangs its channel up: wait for
                # the answer and cancel the call it names. Shielded (and kept): a second
                # cancel must not leave it ringing either.
                cleanup = asyncio.ensure_future(self._cancel_created(create))
                self._cancelling.add(cleanup)
                cleanup.add_done_callback(self._cancelling.discard)
                await asyncio.shield(cleanup)
                raise
            # A status callback handled between the create's answer and here found
            # _creating > 0 and the CallSid unregistered: it is in _early. One handled
            # from now on finds the call registered (nothing suspends in between).
            self._outbound[call_sid] = pending
            _, early = self._early.pop(call_sid, (0.0, []))
        except TwilioApiError as exc:
            # Refused before it rang (a number Twilio will not call, a caller id not
            # the account's): an originate's failure, as Asterisk's refusals are.
            said = f"Twilio: refused, {exc.reference}" if exc.reference else "Twilio"
            raise CallFailed(to, None, said, exc.detail) from exc
        finally:
            self._creating -= 1
            if not self._creating:
                self._early.clear()  # no originate left that could claim them
            del create  # it holds what it raised, which holds this frame: a cycle
        try:
            for status, sip_code in early:
                self._apply_status(call_sid, pending, status, sip_code)
            async with self._registered:
                self._registered.notify_all()  # a stream that came first waits for it
            # asyncio.timeout, not wait_for: wait_for's frame keeps the future that
            # holds what it raises, a reference cycle of every busy or unanswered call.
            async with asyncio.timeout(timeout + 10):
                return await asyncio.shield(pending.future)
        except TimeoutError:
            self._gave_up(call_sid)
            with contextlib.suppress(Exception):
                await self.update_call(call_sid, status="canceled")
            raise CallNoAnswer(to, None, "", f"not answered within {timeout} s") from None
        except asyncio.CancelledError:
            # Given up while ringing (the platform's hang-up of a call still dialling):
            # left alone, the call would ring on and its stream, once answered, would
            # find no originate waiting for it.
            answered = pending.future.done() and pending.future.exception() is None
            if not answered:
                self._gave_up(call_sid)
            with contextlib.suppress(Exception):
                status = "completed" if answered else "canceled"
                await asyncio.shield(self.update_call(call_sid, status=status))
            raise
        finally:
            self._outbound.pop(call_sid, None)
            del pending  # it holds what was raised through this frame: a cycle a call

    async def _create(self, to: str, caller: str, timeout: int) -> str:
        """``calls.create`` of an originate: the new call's CallSid. Raises
        :class:`TwilioApiError`."""
        async with _rest("calls.create"):
            call = await self.client().calls.create_async(
                to=to,
                from_=caller,
                url=self.voice_url,
                status_callback=self.status_url,
                status_callback_event=["initiated", "ringing", "answered", "completed"],
                timeout=timeout,
            )
        return str(call.sid)

    async def _cancel_created(self, create: asyncio.Future[str]) -> None:
        """End the call of an originate cancelled during its ``calls.create``, once
        Twilio's answer names it: ``canceled`` while it rings; a stream that came (or
        comes) for it is hung up, not routed (:meth:`_stream`)."""
        # Whatever fails here is not raised: the originate's cancel goes on as one.
        try:
            call_sid = await create
        except Exception:
            return  # refused, or Twilio unreachable: no call was made
        finally:
            del create  # a refusal holds this frame: a cycle otherwise
        self._gave_up(call_sid)
        self._early.pop(call_sid, None)
        async with self._registered:
            self._registered.notify_all()  # a stream waiting for its originate: none
        logger.info("twilio call %s: created after its originate was cancelled", call_sid)
        with contextlib.suppress(Exception):
            await self.update_call(call_sid, status="canceled")

    # -- lifecycle -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the REST client's HTTP sessions (calls are the app's to drain)."""
        if self._http is not None:
            await self._http.close()
            self._http = None
            self._client = None
        if self._downloads is not None:
            await self._downloads.close()
            self._downloads = None
