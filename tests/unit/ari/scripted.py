"""A scripted ARI transport: REST answers from a table, events pushed by the test.

Implements the :class:`~voxtra.ari.transport.AriTransport` contract and nothing more,
so the client and the event stream can be tested without Asterisk or a socket.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from voxtra.ari.transport import AriRequest, AriResponse, AriTransport, EventConnection

REST_FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "ari" / "rest"
EVENT_FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "ari" / "events"

Answer = AriResponse | BaseException | Callable[[AriRequest], AriResponse]


def fixture(name: str, status: int = 200, reason: str = "OK") -> AriResponse:
    """A response whose body is a REST answer captured from Asterisk 22."""
    return AriResponse(status, (REST_FIXTURES / f"{name}.json").read_bytes(), reason)


def json_response(data: Any, status: int = 200, reason: str = "OK") -> AriResponse:
    return AriResponse(status, json.dumps(data).encode(), reason)


def event_text(name: str, **changes: Any) -> str:
    """A captured event's JSON text, with top-level fields changed."""
    data = json.loads((EVENT_FIXTURES / f"{name}.json").read_text())
    data.update(changes)
    return json.dumps(data)


NOT_FOUND = AriResponse(404, b'{"message": "Resource not found"}', "Not Found")
_END = object()


class ScriptedEvents(EventConnection):
    """An in-memory events connection: ``push`` a message, ``hang_up`` (server side),
    ``fail`` (the iteration raises)."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._closed = False
        self.closed_by_client = False

    def push(self, data: str | bytes) -> None:
        self._queue.put_nowait(data)

    def hang_up(self) -> None:
        self._closed = True
        self._queue.put_nowait(_END)

    def fail(self, error: BaseException) -> None:
        self._queue.put_nowait(error)

    async def __aiter__(self) -> AsyncIterator[str | bytes]:
        while not self._closed or not self._queue.empty():
            item = await self._queue.get()
            if item is _END:
                break
            if isinstance(item, BaseException):
                self._closed = True
                raise item
            assert isinstance(item, str | bytes)
            yield item
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    async def close(self) -> None:
        if not self._closed:
            self.closed_by_client = True
            self.hang_up()


class ScriptedTransport(AriTransport):
    """Answers ``(method, path)`` from ``answers``; a list there is answered in turn (its
    last entry then repeats). Unlisted requests get a 404. ``connect_outcomes`` are what
    the next ``connect_events`` calls do (an exception is raised); once used up, each
    call opens a new :class:`ScriptedEvents`."""

    base_url = "scripted://asterisk"

    def __init__(self, answers: dict[tuple[str, str], Answer | list[Answer]] | None = None):
        self.answers: dict[tuple[str, str], Answer | list[Answer]] = dict(answers or {})
        self.requests: list[AriRequest] = []
        self.connect_outcomes: list[BaseException] = []
        self.connect_calls: list[tuple[list[str], bool, float]] = []
        self.connections: list[ScriptedEvents] = []
        self.closed = 0

    async def handle_request(self, request: AriRequest) -> AriResponse:
        self.requests.append(request)
        await asyncio.sleep(0)  # a real transport always yields to the loop
        answer = self.answers.get((request.method, request.path), NOT_FOUND)
        if isinstance(answer, list):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        if isinstance(answer, BaseException):
            raise answer
        if callable(answer):
            return answer(request)
        return answer

    async def connect_events(
        self, apps: Sequence[str], *, subscribe_all: bool = False, heartbeat: float = 10.0
    ) -> EventConnection:
        self.connect_calls.append((list(apps), subscribe_all, heartbeat))
        await asyncio.sleep(0)
        if self.connect_outcomes:
            raise self.connect_outcomes.pop(0)
        connection = ScriptedEvents()
        self.connections.append(connection)
        return connection

    async def aclose(self) -> None:
        self.closed += 1


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``condition()`` holds (polled; generous timeout for a loaded box)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)
