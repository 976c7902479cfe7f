"""The lean HTTP/1.1 client's response parser, sans-IO: bytes in, responses out.

The Asterisk answers below are the bytes Asterisk 22.10's HTTP server sent the sandbox
(a raw socket, ``GET /ari/asterisk/ping`` and friends): every answer has a
``Content-Length``, a 204 too. The others are what a proxy in front of it may send.
"""

from __future__ import annotations

import pytest

from voxtra.ari.http11 import ParsedResponse, parse_response, response_at_close

_SERVER = (
    b"Server: Asterisk/22.10.1+dfsg+~cs6.17.60671434-1\r\n"
    b"Date: Tue, 01 Dec 2026 22:04:20 GMT\r\nCache-Control: no-cache, no-store\r\n"
)
PING = (
    b'{"ping":"pong","timestamp":"2026-12-01T22:04:20.392+0000","asterisk_id":"02:fc:00:00:00:01"}'
)

ANSWERS: dict[str, tuple[bytes, ParsedResponse]] = {
    "asterisk 200": (
        b"HTTP/1.1 200 OK\r\n" + _SERVER + b"Content-type: application/json\r\n"
        b"Content-Length: 92\r\n\r\n" + PING,
        (200, "OK", PING, True),
    ),
    "asterisk 204": (
        b"HTTP/1.1 204 No Content\r\n" + _SERVER + b"Content-Length: 0\r\n\r\n",
        (204, "No Content", b"", True),
    ),
    "asterisk 404": (
        b"HTTP/1.1 404 Not Found\r\n" + _SERVER + b"Content-type: application/json\r\n"
        b'Content-Length: 31\r\n\r\n{"message":"Channel not found"}',
        (404, "Not Found", b'{"message":"Channel not found"}', True),
    ),
    "asterisk 401": (
        b"HTTP/1.1 401 Unauthorized\r\n" + _SERVER + b'WWW-Authenticate: Basic realm="Asterisk'
        b' REST Interface"\r\nContent-type: application/json\r\nContent-Length: 37\r\n\r\n'
        b'{"message":"Authentication required"}',
        (401, "Unauthorized", b'{"message":"Authentication required"}', True),
    ),
    "204 without a length": (b"HTTP/1.1 204 No Content\r\n\r\n", (204, "No Content", b"", True)),
    "chunked, extension and trailer": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'4\r\n{"a"\r\n3;ext=1\r\n:1}\r\n0\r\nX-Trailer: 1\r\n\r\n',
        (200, "OK", b'{"a":1}', True),
    ),
    "interim answers first": (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]",
        (200, "OK", b"[]", True),
    ),
    "connection close": (
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
        (200, "OK", b"{}", False),
    ),
    "close among other tokens": (
        b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close\r\nContent-Length: 0\r\n\r\n",
        (200, "OK", b"", False),
    ),
    "HTTP/1.0 closes by default": (
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        (200, "OK", b"", False),
    ),
    "HTTP/1.0 kept alive when told": (
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
        (200, "OK", b"", True),
    ),
    "no reason phrase": (b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", (200, "", b"", True)),
}


@pytest.mark.parametrize("name", ANSWERS)
def test_an_answer_split_at_any_byte_parses_the_same(name: str) -> None:
    data, expected = ANSWERS[name]
    for cut in range(len(data) + 1):
        buf = bytearray(data[:cut])
        got = parse_response(buf)
        if cut < len(data):
            assert got is None, (name, cut)
            buf += data[cut:]
            got = parse_response(buf)
        assert got == expected, (name, cut)
        assert buf == b"", (name, cut)  # nothing of it is left for the next answer


@pytest.mark.parametrize("name", ANSWERS)
def test_an_answer_fed_byte_by_byte_completes_on_its_last_byte(name: str) -> None:
    data, expected = ANSWERS[name]
    buf = bytearray()
    for i in range(len(data)):
        buf += data[i : i + 1]
        got = parse_response(buf)
        assert got == (expected if i == len(data) - 1 else None), (name, i)


def test_answers_back_to_back_are_taken_one_at_a_time() -> None:
    first, second = ANSWERS["asterisk 404"], ANSWERS["chunked, extension and trailer"]
    buf = bytearray(first[0] + second[0])
    assert parse_response(buf) == first[1]
    assert parse_response(buf) == second[1]
    assert parse_response(buf) is None and buf == b""


def test_thousands_of_interim_answers_in_one_read_are_skipped() -> None:
    # Skipped by recursion before: 3,000 in one read raised RecursionError, which no
    # caller maps to an ARI error.
    buf = bytearray(b"HTTP/1.1 100 Continue\r\n\r\n" * 3000 + ANSWERS["asterisk 204"][0])
    assert parse_response(buf) == (204, "No Content", b"", True)


def test_a_body_ended_by_the_close() -> None:
    data = b"HTTP/1.1 200 OK\r\n\r\nuntil the end"
    buf = bytearray(data)
    assert parse_response(buf) is None  # it may go on
    assert response_at_close(buf) == (200, "OK", b"until the end", False)
    for cut_short in (
        ANSWERS["asterisk 200"][0][:-5],
        ANSWERS["chunked, extension and trailer"][0][:-9],
    ):
        buf = bytearray(cut_short)
        assert parse_response(buf) is None
        assert response_at_close(buf) is None  # cut short: the caller's error
    assert response_at_close(bytearray(b"HTTP/1.1 200 OK\r\nContent-")) is None


@pytest.mark.parametrize(
    "data",
    [
        # A negative chunk size walked the parser back onto the same line for ever
        # (-6: the size line and its CRLFs are 6 bytes), blocking the event loop.
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-6\r\nabcdef\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n+2\r\nab\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\nab\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"f" * 16 + b"\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXX0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"1" * 70_000,
        b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\n\r\nab",
        b"HTTP/1.1 -200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X-Pad: y\r\n" * 7000,
    ],
)
def test_a_broken_framing_is_refused_at_once(data: bytes) -> None:
    with pytest.raises(ValueError):
        parse_response(bytearray(data))
