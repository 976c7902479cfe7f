"""Request bodies are bounded on both HTTP surfaces, served for real (uvicorn on a
socket): the API refuses a body over its route's limit with a 413 problem document,
before the token is checked or the body read (FastAPI reads and parses a JSON body
before it runs the route's dependencies). That limit is ``platform.max_body_bytes`` for
the campaign routes, which read their bodies after the token check, and
``SMALL_BODY_MAX_BYTES`` (or less) for every other. The Twilio webhook and status
callback refuse a form over ``FORM_MAX_BYTES`` with a plain 413, before it is parsed
(its signature can be checked only over the parsed form). Within its limit, a body to a
``/v1`` route without a known token is answered the token check's 401 unread; the
operator page's sign-in form and the Twilio webhook take theirs without one.

The refusals are sent over a plain socket: a client library sends the whole body before
it reads the answer, and a server that answers early may reset the connection under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from platform_helpers import READ, WRITE, auth, build_app
from twilio.request_validator import RequestValidator

from voxtra.app import VoxtraApp
from voxtra.calls.session import CallSession
from voxtra.platform.api import SMALL_BODY_MAX_BYTES
from voxtra.platform.serve import PlatformServer
from voxtra.testing import FakeAsterisk
from voxtra.testing.fakes.twilio import serve_asgi
from voxtra.twilio import TwilioBackend
from voxtra.twilio.backend import FORM_MAX_BYTES

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

LIMIT = 8192
"""The API's limit in these tests (``platform.max_body_bytes``)."""

TWILIO = {
    "account_sid": "AC" + "0" * 32,
    "auth_token": "body-limit-token",
    "public_url": "http://127.0.0.1:1",
}


@contextlib.asynccontextmanager
async def served(
    app: VoxtraApp, fake_asterisk: FakeAsterisk, tmp_path: Path
) -> AsyncIterator[PlatformServer]:
    app.use_transport(fake_asterisk)
    server = PlatformServer(app, database_url=f"sqlite:///{tmp_path}/p.db", port=0)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def raw_post(
    url: str,
    path: str,
    headers: dict[str, str],
    body: bytes = b"",
    *,
    chunked: bool = False,
    method: str = "POST",
) -> tuple[int, dict[str, str], bytes]:
    """POST (or ``method``) ``body`` (in two chunks if ``chunked``, else with its
    Content-Length unless ``headers`` give one) in one write; the status, headers and
    body of the answer."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    lines = [f"{method} {path} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        half = len(body) // 2
        pieces = (body[:half], body[half:])
        body = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"
    elif not any(name.lower() == "content-length" for name in headers):
        lines.append(f"Content-Length: {len(body)}")
    request = "\r\n".join(lines).encode() + b"\r\n\r\n" + body
    answer = await asyncio.to_thread(exchange, parts.hostname, parts.port, request)
    head, _, content = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    found = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        found[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), found, content


def exchange(host: str, port: int, request: bytes) -> bytes:
    """Send ``request`` and read the answer to the end. A server that answers before it
    has read the body closes the connection under the rest of it: the answer is in the
    socket's buffer all the same."""
    with socket.create_connection((host, port), timeout=10) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := sock.recv(65536):
                answer += chunk
    return answer


def held_app(tmp_path: Path, **platform: Any) -> VoxtraApp:
    """An app with the route ``hold``; the API's limits at their defaults but for
    ``platform`` (settings)."""
    app = build_app(tmp_path, platform=platform)

    @app.route("1000", name="hold")
    async def hold(call: CallSession) -> None:
        await call.answer()
        await call.wait_ended()

    return app


def limited_app(tmp_path: Path) -> VoxtraApp:
    """An app whose API takes bodies up to ``LIMIT``, with the route ``hold``."""
    return held_app(tmp_path, max_body_bytes=LIMIT)


CALL = '{"to": "PJSIP/alice", "route": "hold", "metadata": {"pad": "PAD"}}'
CAMPAIGN = '{"route": "hold", "contacts": [{"to": "PJSIP/alice", "variables": {"pad": "PAD"}}]}'


def padded(template: str, size: int) -> bytes:
    """The JSON ``template`` grown to ``size`` bytes: its ``PAD`` made that many x's."""
    body = template.replace("PAD", "x" * (size - len(template) + len("PAD"))).encode()
    assert len(body) == size
    return body


def assert_refused(
    status: int, headers: dict[str, str], content: bytes, path: str, limit: int = LIMIT
) -> None:
    assert status == 413, content
    assert headers["content-type"] == "application/problem+json"
    problem = json.loads(content)
    assert problem["type"] == "https://voxtra.dev/problems/content-too-large"
    assert problem["status"] == 413
    assert problem["instance"] == path
    assert problem["detail"] == f"the request body exceeds the limit of {limit} bytes"


async def test_a_body_declared_over_the_limit_is_refused_unread_before_the_token_is_checked(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    app = limited_app(tmp_path)
    async with served(app, fake_asterisk, tmp_path) as server:
        # No token (a 401 once the body was read) and no body at all: only its length,
        # declared. The answer comes without a byte of it (before, the server waited).
        status, headers, content = await raw_post(
            server.url,
            "/v1/calls",
            {"Content-Type": "application/json", "Content-Length": str(LIMIT + 1)},
        )
    assert_refused(status, headers, content, "/v1/calls")


async def test_a_chunked_body_over_the_limit_is_refused_and_not_acted_on(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    app = limited_app(tmp_path)
    async with served(app, fake_asterisk, tmp_path) as server:
        status, headers, content = await raw_post(
            server.url,
            "/v1/calls",
            {"Content-Type": "application/json", **auth(WRITE)},
            padded(CALL, LIMIT + 1),
            chunked=True,
        )
        async with httpx.AsyncClient(base_url=server.url) as client:
            listed = await client.get("/v1/calls", headers=auth(READ))
    assert_refused(status, headers, content, "/v1/calls")
    assert listed.status_code == 200 and listed.json()["calls"] == []  # no call placed


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_at_the_limit_is_read(
    fake_asterisk: FakeAsterisk, tmp_path: Path, chunked: bool
) -> None:
    app = limited_app(tmp_path)
    body = padded(CAMPAIGN, LIMIT)

    async def pieces() -> AsyncIterator[bytes]:
        yield body[: LIMIT // 2]
        yield body[LIMIT // 2 :]

    async with (
        served(app, fake_asterisk, tmp_path) as server,
        httpx.AsyncClient(base_url=server.url) as client,
    ):
        checked = await client.post(
            "/v1/campaigns/check",
            content=pieces() if chunked else body,
            headers={"Content-Type": "application/json", **auth(WRITE)},
        )
    assert checked.status_code == 200, checked.text
    assert checked.json() == {"valid": True, "contacts": 1}


SCHEDULE = '{"to": "PJSIP/alice", "route": "hold", "cron": "0 9 * * *", "metadata": {"p": "PAD"}}'


@pytest.mark.parametrize(
    ("path", "template"),
    [("/v1/calls", CALL), ("/v1/schedules", SCHEDULE)],
    ids=["call", "schedule"],
)
async def test_a_strangers_body_over_the_small_limit_is_refused_unparsed(
    fake_asterisk: FakeAsterisk, tmp_path: Path, path: str, template: str
) -> None:
    # The campaigns' limit (max_body_bytes, 32 MiB) was every route's: sent without a
    # token, this body was read and parsed to a 401. Whole and well-formed here: the
    # 413 is for its length alone.
    async with served(held_app(tmp_path), fake_asterisk, tmp_path) as server:
        status, headers, content = await raw_post(
            server.url,
            path,
            {"Content-Type": "application/json"},
            padded(template, SMALL_BODY_MAX_BYTES + 1),
        )
    assert_refused(status, headers, content, path, SMALL_BODY_MAX_BYTES)


@pytest.mark.parametrize("path", ["/v1/campaigns", "/v1/campaigns/check"])
async def test_a_strangers_campaign_is_refused_before_its_body_is_parsed(
    fake_asterisk: FakeAsterisk, tmp_path: Path, path: str
) -> None:
    # Not JSON, and over the small limit (within the campaigns' own): a 401, not the
    # 422 of a body parsed first (/check took it as a CampaignIn parameter, parsed
    # before the token check).
    body = b"[" + b"{}," * (SMALL_BODY_MAX_BYTES // 3) + b"not json"
    async with served(held_app(tmp_path), fake_asterisk, tmp_path) as server:
        status, headers, content = await raw_post(
            server.url, path, {"Content-Type": "application/json"}, body
        )
    assert (status, headers["content-type"]) == (401, "application/problem+json"), content
    assert json.loads(content)["detail"] == "missing bearer token (Authorization: Bearer ...)"


async def test_a_campaign_over_the_small_limit_is_taken_with_a_token(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    # Not due for long: nothing is dialed. 1000 contacts with a note each, rather than
    # more of them without: the test spends its time storing them.
    note = "n" * 300
    contacts = [
        {"to": "PJSIP/alice", "variables": {"account": f"{i:012d}", "note": note}}
        for i in range(1000)
    ]
    body = json.dumps({"route": "hold", "start_at": "2099-01-01T00:00:00Z", "contacts": contacts})
    csv = "to,account,note\n" + "".join(
        f"PJSIP/alice,{c['variables']['account']},{note}\n" for c in contacts
    )
    assert len(body) > SMALL_BODY_MAX_BYTES and len(csv) > SMALL_BODY_MAX_BYTES
    headers = {"Content-Type": "application/json", **auth(WRITE)}
    async with (
        served(held_app(tmp_path), fake_asterisk, tmp_path) as server,
        httpx.AsyncClient(base_url=server.url, timeout=30) as client,
    ):
        checked = await client.post("/v1/campaigns/check", content=body, headers=headers)
        made = await client.post("/v1/campaigns", content=body, headers=headers)
        uploaded = await client.post(
            "/v1/campaigns",
            files={"contacts": ("c.csv", csv.encode(), "text/csv")},
            data={"campaign": '{"route": "hold", "start_at": "2099-01-01T00:00:00Z"}'},
            headers=auth(WRITE),
        )
    assert checked.status_code == 200, checked.text
    assert checked.json() == {"valid": True, "contacts": 1000}
    assert made.status_code == 201, made.text
    assert made.json()["total"] == 1000
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["total"] == 1000


def twilio_app(tmp_path: Path) -> VoxtraApp:
    # The API's own limit left at its default (32 MiB): the Twilio endpoints' is theirs.
    return build_app(tmp_path, twilio=TWILIO)


@pytest.mark.parametrize("path", ["/twilio/voice", "/twilio/status"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("how", ["voxtra-serve", "own-asgi-server"])
async def test_a_twilio_form_over_its_limit_is_refused_before_it_is_parsed(
    fake_asterisk: FakeAsterisk, tmp_path: Path, path: str, chunked: bool, how: str
) -> None:
    form = b"CallSid=CA1&Pad=" + b"x" * FORM_MAX_BYTES
    headers = {"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "x"}
    if not chunked:
        headers["Content-Length"] = str(len(form))
        form = b""  # declared only: refused without a byte read
    answers: dict[str, Any] = {}
    async with contextlib.AsyncExitStack() as stack:
        if how == "voxtra-serve":
            server = await stack.enter_async_context(
                served(twilio_app(tmp_path), fake_asterisk, tmp_path)
            )
            backend, url = server.twilio, server.url
            assert backend is not None
        else:
            backend = TwilioBackend(twilio_app(tmp_path))
            url = await stack.enter_async_context(serve_asgi(backend.asgi()))
        status, answer_headers, content = await raw_post(url, path, headers, form, chunked=chunked)
        answers.update(status=status, type=answer_headers.get("content-type"), text=content)
        # Refused before the signature check, which counts every request it refuses.
        answers["rejected"] = backend.rejected
    assert answers == {
        "status": 413,
        "type": "text/plain; charset=utf-8",
        "text": f"the request body exceeds the limit of {FORM_MAX_BYTES} bytes".encode(),
        "rejected": 0,
    }


NOT_JSON = b"[" + b"{}," * (SMALL_BODY_MAX_BYTES // 4) + b"not json"
"""A body within the small limit that no route can parse: a 422 once read."""

UNAUTHORIZED = {
    "missing": ({}, "missing bearer token (Authorization: Bearer ...)"),
    "unknown": (auth("unknown-token-0123456789abcdef"), "unknown bearer token"),
}


def assert_unauthorized(
    status: int, headers: dict[str, str], content: bytes, path: str, detail: str
) -> None:
    """The 401 of the token check (``auth.authenticate``)."""
    assert (status, headers["content-type"]) == (401, "application/problem+json"), content
    assert headers["www-authenticate"] == 'Bearer realm="voxtra"'
    assert json.loads(content) == {
        "type": "https://voxtra.dev/problems/unauthorized",
        "title": "Unauthorized",
        "status": 401,
        "detail": detail,
        "instance": path,
    }


@pytest.mark.parametrize("token", ["missing", "unknown"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_strangers_body_is_refused_before_it_is_read(
    fake_asterisk: FakeAsterisk, tmp_path: Path, token: str, chunked: bool
) -> None:
    # FastAPI parses a route's JSON body before its dependencies run, the token check
    # among them: this body was read and parsed to a 422 (and 100 of 256 KiB at once
    # took the server's peak RSS from 123 to 762 MiB). Now the token check's 401.
    headers, detail = UNAUTHORIZED[token]
    async with served(held_app(tmp_path), fake_asterisk, tmp_path) as server:
        answer = await raw_post(
            server.url,
            "/v1/calls",
            {"Content-Type": "application/json", **headers},
            NOT_JSON,
            chunked=chunked,
        )
    assert_unauthorized(*answer, "/v1/calls", detail)


async def test_a_zero_content_length_beside_chunked_does_not_pass_the_gate(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    # uvicorn's h11 frames a body with both headers as chunked: "Content-Length: 0"
    # beside it made the gate take the request for bodiless, the body parsed to a 422.
    async with served(held_app(tmp_path), fake_asterisk, tmp_path) as server:
        answer = await raw_post(
            server.url,
            "/v1/calls",
            {"Content-Type": "application/json", "Content-Length": "0"},
            NOT_JSON,
            chunked=True,
        )
    assert_unauthorized(*answer, "/v1/calls", UNAUTHORIZED["missing"][1])


async def test_every_v1_route_refuses_a_strangers_body_unread(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    # Every route of the API's OpenAPI document that takes a body, the ones to come too.
    async with served(held_app(tmp_path), fake_asterisk, tmp_path) as server:
        routes = [
            (method.upper(), path.replace("{", "").replace("}", ""))
            for path, operations in server.api.openapi()["paths"].items()
            if path.startswith("/v1/")
            for method in operations
            if method in ("post", "put", "patch", "delete")
        ]
        answers = {
            route: await raw_post(
                server.url,
                route[1],
                {"Content-Type": "application/json"},
                NOT_JSON,
                method=route[0],
            )
            for route in routes
        }
    assert ("POST", "/v1/calls/call_id/transfer") in answers
    assert ("POST", "/v1/schedules") in answers
    for (_, path), answer in answers.items():
        assert_unauthorized(*answer, path, UNAUTHORIZED["missing"][1])


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_with_a_known_token_is_read_as_before(
    fake_asterisk: FakeAsterisk, tmp_path: Path, chunked: bool
) -> None:
    # Two requests of the token's rate (the burst; refilled in 100 s): the gate spends
    # none of it, so both calls are placed and only a third is over the rate.
    app = held_app(tmp_path, rate_limit=0.01, rate_burst=2)
    call = json.dumps({"to": "PJSIP/alice", "route": "hold"}).encode()
    headers = {"Content-Type": "application/json", **auth(WRITE)}
    async with served(app, fake_asterisk, tmp_path) as server:
        refused = await raw_post(server.url, "/v1/calls", headers, NOT_JSON, chunked=chunked)
        placed = [
            await raw_post(server.url, "/v1/calls", headers, call, chunked=chunked)
            for _ in range(3)
        ]
    # Read and parsed: the body's own error (before the route's dependencies, its rate).
    assert refused[0] == 422, refused[2]
    assert json.loads(refused[2])["type"] == "https://voxtra.dev/problems/invalid-request"
    assert [status for status, _, _ in placed] == [201, 201, 429], placed
    assert json.loads(placed[0][2])["status"] == "queued"


async def test_the_sign_in_form_needs_no_bearer_token(
    fake_asterisk: FakeAsterisk, tmp_path: Path
) -> None:
    # The operator page's session is a cookie: its sign-in form carries the token in
    # its body, not in an Authorization header.
    form = urlencode({"token": WRITE}).encode()
    async with served(held_app(tmp_path), fake_asterisk, tmp_path) as server:
        status, headers, content = await raw_post(
            server.url, "/ui/login", {"Content-Type": "application/x-www-form-urlencoded"}, form
        )
    assert (status, headers["location"]) == (303, "/ui"), content
    assert headers["set-cookie"].startswith("voxtra_ui=")


@pytest.mark.parametrize("prefix", ["/twilio", "/v1/twilio"])
async def test_the_twilio_webhook_needs_no_bearer_token(
    fake_asterisk: FakeAsterisk, tmp_path: Path, prefix: str
) -> None:
    # Signed by Twilio, not by a bearer token: mounted under /v1 too, it is answered.
    app = build_app(tmp_path, twilio={**TWILIO, "path_prefix": prefix})
    params = {"CallSid": "CA1", "From": "+4930123456", "To": "+4930654321"}
    signature = RequestValidator(TWILIO["auth_token"]).compute_signature(
        f"{TWILIO['public_url']}{prefix}/voice", params
    )
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": signature,
    }
    async with served(app, fake_asterisk, tmp_path) as server:
        status, answer_headers, content = await raw_post(
            server.url, f"{prefix}/voice", headers, urlencode(params).encode()
        )
        assert server.twilio is not None and server.twilio.rejected == 0
    assert (status, answer_headers["content-type"]) == (200, "application/xml"), content
    assert b"<Stream" in content
