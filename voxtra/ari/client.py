"""The ARI REST client: typed methods over an :class:`~voxtra.ari.transport.AriTransport`.

Grouped as Asterisk's own API is (``ari.channels.answer(id)``, ``ari.bridges.create()``,
...). Every method returns a pydantic model (or None for 204 answers) and raises an
:class:`~voxtra.ari.errors.AriError` subclass on failure. The wire is the transport's
business: :class:`~voxtra.ari.aiohttp_transport.AiohttpTransport` (HTTP to a real
Asterisk) unless another one is given, e.g. :class:`voxtra.testing.FakeAsterisk`.
"""

from __future__ import annotations

import asyncio
import base64
import json as jsonlib
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote

from pydantic import BaseModel, SecretStr, TypeAdapter

from voxtra.ari.aiohttp_transport import AiohttpTransport
from voxtra.ari.errors import AriInvalidId, error_for_status
from voxtra.ari.models import (
    Application,
    AsteriskInfo,
    AsteriskPing,
    Bridge,
    Channel,
    Endpoint,
    LiveRecording,
    PlaybackResource,
    StoredRecording,
    Variable,
)
from voxtra.ari.transport import AriRequest, AriTransport, without_userinfo

__all__ = ["AriClient"]

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
Direction = Literal["both", "in", "out"]
Params = Mapping[str, str | int | float | bool | Sequence[str] | None]


def basic_auth_header(username: str, password: str | SecretStr) -> str:
    """The ``Authorization`` header value; the only place the password is unwrapped."""
    secret = password.get_secret_value() if isinstance(password, SecretStr) else password
    token = base64.b64encode(f"{username}:{secret}".encode()).decode("ascii")
    return f"Basic {token}"


def _encode_params(params: Params | None) -> dict[str, str]:
    """ARI query strings: booleans as true/false, lists comma-joined, None left out."""
    out: dict[str, str] = {}
    for key, value in (params or {}).items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, str):
            out[key] = value
        elif isinstance(value, int | float):
            out[key] = str(value)
        else:
            out[key] = ",".join(value)
    return out


def _seg(value: str) -> str:
    """One URL path segment (ids may hold characters such as ``;`` or ``/``).

    Raises :class:`AriInvalidId` for an empty or dot-only value: ``quote`` leaves dots
    alone and URL resolution removes ``.``/``..`` segments, so ``hangup("..")`` sent
    ``DELETE /ari/`` (another resource than the one named).
    """
    if not isinstance(value, str) or not value.strip("."):
        raise AriInvalidId(f"{value!r} is not a valid ARI id or name (empty or only dots)")
    return quote(value, safe="")


class AriClient:
    """Asterisk REST Interface client. Use as ``async with AriClient(...) as ari:``.

    ``base_url`` is Asterisk's HTTP server (``http://host:8088``); ``/ari`` is added,
    and a ``user:password@`` in it is dropped (``username``/``password`` are what log in).
    ``password`` may be a plain ``str`` or a pydantic ``SecretStr``; it is kept as a
    ``SecretStr`` (:attr:`password`) so it never shows in a repr, log or traceback.
    ``transport``: how requests and events reach Asterisk (default: an
    :class:`AiohttpTransport` to ``base_url``, closed by :meth:`close`); a transport
    passed in is left open for its owner to close.
    """

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str | SecretStr,
        *,
        timeout: float = 10.0,
        transport: AriTransport | None = None,
    ) -> None:
        self.base_url = without_userinfo(base_url).rstrip("/")
        if self.base_url.endswith("/ari"):
            self.base_url = self.base_url[: -len("/ari")]
        self.username = username
        self.password: SecretStr = (
            password if isinstance(password, SecretStr) else SecretStr(password)
        )
        self.timeout = timeout
        # Kept wrapped too: the header is the password in base64 (vars(), debuggers).
        self._auth = SecretStr(basic_auth_header(username, self.password))
        self._own_transport = transport is None
        self.transport: AriTransport = (
            transport
            if transport is not None
            else AiohttpTransport(self.base_url, self._auth, timeout=timeout)
        )
        self.asterisk = AsteriskApi(self)
        self.applications = ApplicationsApi(self)
        self.channels = ChannelsApi(self)
        self.bridges = BridgesApi(self)
        self.playbacks = PlaybacksApi(self)
        self.recordings = RecordingsApi(self)
        self.endpoints = EndpointsApi(self)
        self.events = EventsApi(self)

    async def __aenter__(self) -> AriClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the transport if this client made it (it reopens on the next request)."""
        if self._own_transport:
            await self.transport.aclose()

    @property
    def auth_header(self) -> str:
        """The ``Authorization`` header value (holds the password: never log it)."""
        return self._auth.get_secret_value()

    def url(self, path: str) -> str:
        return f"{self.base_url}/ari{path}"

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        raw: bool = False,
    ) -> Any:
        """Send one request; returns decoded JSON (or bytes when ``raw``), None on 204.

        Raises the :mod:`voxtra.ari.errors` class of an HTTP status of 400 or more, and
        :class:`~voxtra.ari.errors.AriConnectionError` (from the transport) when no
        answer came.
        """
        request = AriRequest(method, path, _encode_params(params), json)
        response = await self.transport.handle_request(request)
        body = response.body
        if response.status >= 400:
            raise error_for_status(
                response.status, method, path, _error_message(body, response.reason)
            )
        if response.status == 204 or not body:
            return None
        if raw:
            return body
        try:
            return jsonlib.loads(body)
        except ValueError:  # UnicodeDecodeError is one too
            return body.decode(errors="replace")

    async def get_model(self, model: type[M], path: str, params: Params | None = None) -> M:
        return model.model_validate(await self.request("GET", path, params=params))

    async def get_list(self, model: type[M], path: str, params: Params | None = None) -> list[M]:
        data = await self.request("GET", path, params=params)
        return TypeAdapter(list[model]).validate_python(data or [])  # type: ignore[valid-type]

    async def post_model(
        self, model: type[M], path: str, params: Params | None = None, json: Any = None
    ) -> M:
        return model.model_validate(await self.request("POST", path, params=params, json=json))


def _error_message(body: bytes, reason: str | None) -> str:
    try:
        data = jsonlib.loads(body)
    except ValueError:
        text = body.decode(errors="replace").strip()
        return text or (reason or "")
    if isinstance(data, dict):
        # ARI says "message" on most errors, "error" on some (e.g. "Allocation failed").
        for key in ("message", "error"):
            if key in data:
                return str(data[key])
    return str(data)


def _variables_body(variables: Mapping[str, str] | None) -> dict[str, Any] | None:
    # ARI takes channel variables in the JSON body; in the query string they would
    # need ARI's own bracketed syntax and are easily mangled.
    return {"variables": dict(variables)} if variables else None


IfExists = Literal["fail", "overwrite", "append"]


async def _record(
    client: AriClient,
    path: str,
    name: str,
    fmt: str,
    max_duration: int | None,
    max_silence: int | None,
    if_exists: IfExists,
    beep: bool,
    terminate_on: str | None,
) -> LiveRecording:
    """Start a live recording of a channel or a bridge (the same query either way)."""
    params = {
        "name": name,
        "format": fmt,
        "maxDurationSeconds": max_duration,
        "maxSilenceSeconds": max_silence,
        "ifExists": if_exists,
        "beep": beep,
        "terminateOn": terminate_on,
    }
    return await client.post_model(LiveRecording, path, params)


class _Api:
    def __init__(self, client: AriClient) -> None:
        self._c = client


class AsteriskApi(_Api):
    async def info(self, only: Iterable[str] | None = None) -> AsteriskInfo:
        params = {"only": ",".join(only)} if only else None
        return await self._c.get_model(AsteriskInfo, "/asterisk/info", params)

    async def ping(self) -> AsteriskPing:
        return await self._c.get_model(AsteriskPing, "/asterisk/ping")

    async def get_variable(self, variable: str) -> str:
        data = await self._c.request("GET", "/asterisk/variable", params={"variable": variable})
        return Variable.model_validate(data).value

    async def set_variable(self, variable: str, value: str) -> None:
        params = {"variable": variable, "value": value}
        await self._c.request("POST", "/asterisk/variable", params=params)


class ApplicationsApi(_Api):
    async def list(self) -> list[Application]:
        return await self._c.get_list(Application, "/applications")

    async def get(self, app: str) -> Application:
        return await self._c.get_model(Application, f"/applications/{_seg(app)}")

    async def subscribe(self, app: str, event_source: str | Sequence[str]) -> Application:
        params = {"eventSource": event_source}
        return await self._c.post_model(
            Application, f"/applications/{_seg(app)}/subscription", params
        )

    async def unsubscribe(self, app: str, event_source: str | Sequence[str]) -> Application:
        path = f"/applications/{_seg(app)}/subscription"
        data = await self._c.request("DELETE", path, params={"eventSource": event_source})
        return Application.model_validate(data)

    async def filter_events(
        self,
        app: str,
        *,
        allowed: Sequence[str] = (),
        disallowed: Sequence[str] = (),
    ) -> Application:
        """Which event kinds Asterisk sends ``app`` (``PUT .../eventFilter``).

        Empty lists: every kind (Asterisk's default). A kind kept off the socket costs
        nothing to read, parse or route; but nothing of the app can wait for it either
        (``call.wait_for_event``). Measured with ``bench/call_setup.py --event-filter``
        (docs/performance.md).
        """
        body = {
            "allowed": [{"type": t} for t in allowed],
            "disallowed": [{"type": t} for t in disallowed],
        }
        data = await self._c.request("PUT", f"/applications/{_seg(app)}/eventFilter", json=body)
        return Application.model_validate(data)


class EventsApi(_Api):
    async def user_event(
        self,
        event_name: str,
        application: str,
        *,
        source: str | Sequence[str] | None = None,
        variables: Mapping[str, str] | None = None,
    ) -> None:
        """Send ``application`` a ``ChannelUserevent`` (``POST /events/user/{name}``).

        ``source``: ``channel:ID``, ``bridge:ID``, ... the event names; ``variables``
        arrive in its ``userevent``. 404 (:class:`~voxtra.ari.errors.AriNotFound`) when
        Asterisk has no application of that name.
        """
        params = {"application": application, "source": source}
        body = {"variables": dict(variables or {})}
        await self._c.request("POST", f"/events/user/{_seg(event_name)}", params=params, json=body)


class ChannelsApi(_Api):
    async def list(self) -> list[Channel]:
        return await self._c.get_list(Channel, "/channels")

    async def get(self, channel_id: str) -> Channel:
        return await self._c.get_model(Channel, f"/channels/{_seg(channel_id)}")

    async def originate(
        self,
        endpoint: str,
        *,
        app: str | None = None,
        app_args: str | Sequence[str] | None = None,
        extension: str | None = None,
        context: str | None = None,
        priority: int | None = None,
        label: str | None = None,
        caller_id: str | None = None,
        timeout: int | None = None,
        channel_id: str | None = None,
        other_channel_id: str | None = None,
        originator: str | None = None,
        formats: str | Sequence[str] | None = None,
        variables: Mapping[str, str] | None = None,
    ) -> Channel:
        """Dial ``endpoint``; the answered channel enters ``app`` (or the dialplan)."""
        params: dict[str, Any] = {
            "endpoint": endpoint,
            "app": app,
            "appArgs": app_args,
            "extension": extension,
            "context": context,
            "priority": priority,
            "label": label,
            "callerId": caller_id,
            "timeout": timeout,
            "channelId": channel_id,
            "otherChannelId": other_channel_id,
            "originator": originator,
            "formats": formats,
        }
        return await self._c.post_model(Channel, "/channels", params, _variables_body(variables))

    async def create(
        self,
        endpoint: str,
        app: str,
        *,
        app_args: str | Sequence[str] | None = None,
        channel_id: str | None = None,
        other_channel_id: str | None = None,
        originator: str | None = None,
        formats: str | Sequence[str] | None = None,
        variables: Mapping[str, str] | None = None,
    ) -> Channel:
        """Create a channel without dialing it (``dial()`` it later)."""
        params: dict[str, Any] = {
            "endpoint": endpoint,
            "app": app,
            "appArgs": app_args,
            "channelId": channel_id,
            "otherChannelId": other_channel_id,
            "originator": originator,
            "formats": formats,
        }
        return await self._c.post_model(
            Channel, "/channels/create", params, _variables_body(variables)
        )

    async def dial(
        self, channel_id: str, *, caller: str | None = None, timeout: int | None = None
    ) -> None:
        params = {"caller": caller, "timeout": timeout}
        await self._c.request("POST", f"/channels/{_seg(channel_id)}/dial", params=params)

    async def hangup(
        self, channel_id: str, *, reason: str | None = None, reason_code: int | None = None
    ) -> None:
        """Hang up. ``reason`` is ARI's name (normal, busy, congestion, no_answer, ...)."""
        params = {"reason": reason, "reason_code": reason_code}
        await self._c.request("DELETE", f"/channels/{_seg(channel_id)}", params=params)

    async def answer(self, channel_id: str) -> None:
        await self._c.request("POST", f"/channels/{_seg(channel_id)}/answer")

    async def ring(self, channel_id: str) -> None:
        await self._c.request("POST", f"/channels/{_seg(channel_id)}/ring")

    async def ring_stop(self, channel_id: str) -> None:
        await self._c.request("DELETE", f"/channels/{_seg(channel_id)}/ring")

    async def hold(self, channel_id: str) -> None:
        await self._c.request("POST", f"/channels/{_seg(channel_id)}/hold")

    async def unhold(self, channel_id: str) -> None:
        await self._c.request("DELETE", f"/channels/{_seg(channel_id)}/hold")

    async def start_moh(self, channel_id: str, moh_class: str | None = None) -> None:
        params = {"mohClass": moh_class}
        await self._c.request("POST", f"/channels/{_seg(channel_id)}/moh", params=params)

    async def stop_moh(self, channel_id: str) -> None:
        await self._c.request("DELETE", f"/channels/{_seg(channel_id)}/moh")

    async def start_silence(self, channel_id: str) -> None:
        await self._c.request("POST", f"/channels/{_seg(channel_id)}/silence")

    async def stop_silence(self, channel_id: str) -> None:
        await self._c.request("DELETE", f"/channels/{_seg(channel_id)}/silence")

    async def mute(self, channel_id: str, direction: Direction = "both") -> None:
        params = {"direction": direction}
        await self._c.request("POST", f"/channels/{_seg(channel_id)}/mute", params=params)

    async def unmute(self, channel_id: str, direction: Direction = "both") -> None:
        params = {"direction": direction}
        await self._c.request("DELETE", f"/channels/{_seg(channel_id)}/mute", params=params)

    async def play(
        self,
        channel_id: str,
        media: str | Sequence[str],
        *,
        playback_id: str | None = None,
        lang: str | None = None,
        offsetms: int | None = None,
        skipms: int | None = None,
    ) -> PlaybackResource:
        params = {"media": media, "lang": lang, "offsetms": offsetms, "skipms": skipms}
        path = f"/channels/{_seg(channel_id)}/play"
        if playback_id:
            path += f"/{_seg(playback_id)}"
        return await self._c.post_model(PlaybackResource, path, params)

    async def record(
        self,
        channel_id: str,
        name: str,
        fmt: str = "wav",
        *,
        max_duration: int | None = None,
        max_silence: int | None = None,
        if_exists: IfExists = "fail",
        beep: bool = False,
        terminate_on: str | None = None,
    ) -> LiveRecording:
        return await _record(
            self._c,
            f"/channels/{_seg(channel_id)}/record",
            name,
            fmt,
            max_duration,
            max_silence,
            if_exists,
            beep,
            terminate_on,
        )

    async def snoop(
        self,
        channel_id: str,
        app: str,
        *,
        spy: Literal["none", "both", "out", "in"] = "both",
        whisper: Literal["none", "both", "out", "in"] = "none",
        app_args: str | Sequence[str] | None = None,
        snoop_id: str | None = None,
    ) -> Channel:
        params = {"spy": spy, "whisper": whisper, "app": app, "appArgs": app_args}
        path = f"/channels/{_seg(channel_id)}/snoop"
        if snoop_id:
            path += f"/{_seg(snoop_id)}"
        return await self._c.post_model(Channel, path, params)

    async def external_media(
        self,
        app: str,
        *,
        external_host: str = "",
        format: str = "ulaw",
        encapsulation: Literal["rtp", "audiosocket", "none"] = "rtp",
        transport: Literal["udp", "tcp", "websocket"] = "udp",
        connection_type: Literal["client", "server"] | None = None,
        direction: Literal["both"] = "both",
        channel_id: str | None = None,
        data: str | None = None,
        transport_data: str | None = None,
        variables: Mapping[str, str] | None = None,
    ) -> Channel:
        """Create an ExternalMedia channel (RTP, AudioSocket or chan_websocket)."""
        params = {
            "app": app,
            "external_host": external_host,
            "format": format,
            "encapsulation": encapsulation,
            "transport": transport,
            "connection_type": connection_type,
            "direction": direction,
            "channelId": channel_id,
            "data": data,
            "transport_data": transport_data,
        }
        return await self._c.post_model(
            Channel, "/channels/externalMedia", params, _variables_body(variables)
        )

    async def continue_in_dialplan(
        self,
        channel_id: str,
        *,
        context: str | None = None,
        extension: str | None = None,
        priority: int | None = None,
        label: str | None = None,
    ) -> None:
        """Leave Stasis and go on in the dialplan (ARI ``continue``)."""
        params = {"context": context, "extension": extension, "priority": priority, "label": label}
        await self._c.request("POST", f"/channels/{_seg(channel_id)}/continue", params=params)

    async def redirect(self, channel_id: str, endpoint: str) -> None:
        """Ask the channel's technology to redirect the call (a SIP 302 for PJSIP)."""
        params = {"endpoint": endpoint}
        await self._c.request("POST", f"/channels/{_seg(channel_id)}/redirect", params=params)

    async def send_dtmf(
        self,
        channel_id: str,
        dtmf: str,
        *,
        before: int | None = None,
        between: int | None = None,
        duration: int | None = None,
        after: int | None = None,
    ) -> None:
        params = {
            "dtmf": dtmf,
            "before": before,
            "between": between,
            "duration": duration,
            "after": after,
        }
        await self._c.request("POST", f"/channels/{_seg(channel_id)}/dtmf", params=params)

    async def get_variable(self, channel_id: str, variable: str) -> str:
        data = await self._c.request(
            "GET", f"/channels/{_seg(channel_id)}/variable", params={"variable": variable}
        )
        return Variable.model_validate(data).value

    async def set_variable(self, channel_id: str, variable: str, value: str) -> None:
        params = {"variable": variable, "value": value}
        await self._c.request("POST", f"/channels/{_seg(channel_id)}/variable", params=params)

    async def rtp_statistics(self, channel_id: str) -> dict[str, Any]:
        data = await self._c.request("GET", f"/channels/{_seg(channel_id)}/rtp_statistics")
        return dict(data or {})


class BridgesApi(_Api):
    async def list(self) -> list[Bridge]:
        return await self._c.get_list(Bridge, "/bridges")

    async def get(self, bridge_id: str) -> Bridge:
        return await self._c.get_model(Bridge, f"/bridges/{_seg(bridge_id)}")

    async def create(
        self,
        bridge_type: str | Sequence[str] = "mixing",
        *,
        bridge_id: str | None = None,
        name: str | None = None,
    ) -> Bridge:
        params = {"type": bridge_type, "bridgeId": bridge_id, "name": name}
        return await self._c.post_model(Bridge, "/bridges", params)

    async def destroy(self, bridge_id: str) -> None:
        await self._c.request("DELETE", f"/bridges/{_seg(bridge_id)}")

    async def add_channel(
        self,
        bridge_id: str,
        channel: str | Sequence[str],
        *,
        role: str | None = None,
        absorb_dtmf: bool | None = None,
        mute: bool | None = None,
        inhibit_connected_line_updates: bool | None = None,
    ) -> None:
        params = {
            "channel": channel,
            "role": role,
            "absorbDTMF": absorb_dtmf,
            "mute": mute,
            "inhibitConnectedLineUpdates": inhibit_connected_line_updates,
        }
        await self._c.request("POST", f"/bridges/{_seg(bridge_id)}/addChannel", params=params)

    async def remove_channel(self, bridge_id: str, channel: str | Sequence[str]) -> None:
        params = {"channel": channel}
        await self._c.request("POST", f"/bridges/{_seg(bridge_id)}/removeChannel", params=params)

    async def start_moh(self, bridge_id: str, moh_class: str | None = None) -> None:
        params = {"mohClass": moh_class}
        await self._c.request("POST", f"/bridges/{_seg(bridge_id)}/moh", params=params)

    async def stop_moh(self, bridge_id: str) -> None:
        await self._c.request("DELETE", f"/bridges/{_seg(bridge_id)}/moh")

    async def play(
        self,
        bridge_id: str,
        media: str | Sequence[str],
        *,
        playback_id: str | None = None,
        lang: str | None = None,
    ) -> PlaybackResource:
        path = f"/bridges/{_seg(bridge_id)}/play"
        if playback_id:
            path += f"/{_seg(playback_id)}"
        return await self._c.post_model(PlaybackResource, path, {"media": media, "lang": lang})

    async def record(
        self,
        bridge_id: str,
        name: str,
        fmt: str = "wav",
        *,
        max_duration: int | None = None,
        max_silence: int | None = None,
        if_exists: IfExists = "fail",
        beep: bool = False,
        terminate_on: str | None = None,
    ) -> LiveRecording:
        return await _record(
            self._c,
            f"/bridges/{_seg(bridge_id)}/record",
            name,
            fmt,
            max_duration,
            max_silence,
            if_exists,
            beep,
            terminate_on,
        )


class PlaybacksApi(_Api):
    async def get(self, playback_id: str) -> PlaybackResource:
        return await self._c.get_model(PlaybackResource, f"/playbacks/{_seg(playback_id)}")

    async def stop(self, playback_id: str) -> None:
        await self._c.request("DELETE", f"/playbacks/{_seg(playback_id)}")

    async def control(
        self,
        playback_id: str,
        operation: Literal["restart", "pause", "unpause", "reverse", "forward"],
    ) -> None:
        params = {"operation": operation}
        await self._c.request("POST", f"/playbacks/{_seg(playback_id)}/control", params=params)


def _commit_file(tmp: Path, path: Path) -> None:
    """Rename a finished, fsynced download into place and make the rename durable."""
    tmp.replace(path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RecordingsApi(_Api):
    async def list_stored(self) -> list[StoredRecording]:
        return await self._c.get_list(StoredRecording, "/recordings/stored")

    async def get_stored(self, name: str) -> StoredRecording:
        return await self._c.get_model(StoredRecording, f"/recordings/stored/{_seg(name)}")

    async def delete_stored(self, name: str) -> None:
        await self._c.request("DELETE", f"/recordings/stored/{_seg(name)}")

    async def get_file(self, name: str) -> bytes:
        """The stored recording's bytes, over ARI (works when Asterisk is remote)."""
        data = await self._c.request("GET", f"/recordings/stored/{_seg(name)}/file", raw=True)
        return bytes(data or b"")

    async def download(
        self,
        name: str,
        path: Path,
        chunk_size: int = 1 << 16,
        *,
        read_timeout: float | None = None,
    ) -> int:
        """Stream the stored recording to ``path`` (atomically and durably); returns bytes.

        There is no limit on the whole download: an hour-long recording from a remote
        Asterisk over a slow link takes as long as it takes (the session's 10 s *total*
        timeout failed such downloads every time). Instead each read must bring data
        within ``read_timeout`` s (default: the client's ``timeout``), so a stalled
        connection is still noticed. The bytes go to ``<path>.part``, are fsynced,
        then renamed to ``path`` and the directory fsynced: a ``path`` that exists is
        complete. Transport failures (reset, stall) raise AriConnectionError and leave
        no file behind; the caller decides whether to retry.
        """
        api_path = f"/recordings/stored/{_seg(name)}/file"
        tmp = path.with_name(path.name + ".part")
        per_read = self._c.timeout if read_timeout is None else read_timeout
        size = 0
        try:
            with tmp.open("wb") as out:

                def write(chunk: bytes) -> None:
                    nonlocal size
                    out.write(chunk)
                    size += len(chunk)

                response = await self._c.transport.handle_download(
                    AriRequest("GET", api_path),
                    write,
                    chunk_size=chunk_size,
                    read_timeout=per_read,
                )
                if response.status >= 400:
                    raise error_for_status(
                        response.status,
                        "GET",
                        api_path,
                        _error_message(response.body, response.reason),
                    )
                out.flush()
                await asyncio.to_thread(os.fsync, out.fileno())
        except BaseException:
            # Stalls, resets and short bodies (AriConnectionError from the transport),
            # error statuses, a full disk: no partial file is left behind.
            tmp.unlink(missing_ok=True)
            raise
        await asyncio.to_thread(_commit_file, tmp, path)
        return size

    async def copy_stored(self, name: str, destination: str) -> StoredRecording:
        params = {"destinationRecordingName": destination}
        return await self._c.post_model(
            StoredRecording, f"/recordings/stored/{_seg(name)}/copy", params
        )

    async def get_live(self, name: str) -> LiveRecording:
        return await self._c.get_model(LiveRecording, f"/recordings/live/{_seg(name)}")

    async def stop(self, name: str) -> None:
        """Stop and store a live recording."""
        await self._c.request("POST", f"/recordings/live/{_seg(name)}/stop")

    async def cancel(self, name: str) -> None:
        """Stop a live recording and discard it."""
        await self._c.request("DELETE", f"/recordings/live/{_seg(name)}")

    async def pause(self, name: str) -> None:
        await self._c.request("POST", f"/recordings/live/{_seg(name)}/pause")

    async def unpause(self, name: str) -> None:
        await self._c.request("DELETE", f"/recordings/live/{_seg(name)}/pause")

    async def mute(self, name: str) -> None:
        await self._c.request("POST", f"/recordings/live/{_seg(name)}/mute")

    async def unmute(self, name: str) -> None:
        await self._c.request("DELETE", f"/recordings/live/{_seg(name)}/mute")


class EndpointsApi(_Api):
    async def list(self, technology: str | None = None) -> list[Endpoint]:
        path = f"/endpoints/{_seg(technology)}" if technology else "/endpoints"
        return await self._c.get_list(Endpoint, path)

    async def get(self, technology: str, resource: str) -> Endpoint:
        return await self._c.get_model(Endpoint, f"/endpoints/{_seg(technology)}/{_seg(resource)}")
