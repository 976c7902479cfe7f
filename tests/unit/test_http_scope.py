"""The HTTP providers' shared clients (voxtra.providers.http): made once per scope, seen
by the tasks started inside it, closed with it; an app holds one from start to stop."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
from fake_apps import fake_app

from voxtra import CallSession
from voxtra.providers.base import ChatMessage
from voxtra.providers.http import HttpScope, shared_client, shared_http
from voxtra.providers.openai_llm import OpenAILLM
from voxtra.testing import FakeAsterisk
from voxtra.testing.fakes import FakeOpenAI, OpenAIReply


class Closable:
    def __init__(self) -> None:
        self.closed = 0

    async def aclose(self) -> None:
        self.closed += 1


async def test_a_client_is_made_once_seen_by_child_tasks_and_closed_with_the_scope() -> None:
    made: list[Closable] = []

    def make() -> Closable:
        made.append(Closable())
        return made[-1]

    assert shared_client("x", make) is None  # outside a scope nothing is made
    async with shared_http() as scope:
        first = shared_client("x", make)
        in_task = await asyncio.create_task(asyncio.sleep(0, shared_client("x", make)))

        async def later() -> Any:
            return shared_client("x", make)

        assert await asyncio.create_task(later()) is first is in_task
        assert scope.clients == {"x": first}
    assert len(made) == 1 and made[0].closed == 1
    assert shared_client("x", make) is None  # the scope is gone from this context
    assert scope.client("x", make) is None  # and a closed scope makes nothing


async def test_a_client_that_cannot_be_made_is_asked_for_once() -> None:
    tries: list[int] = []

    def broken() -> Any:
        tries.append(1)
        raise RuntimeError("the SDK's aiohttp extra is not installed")

    async with shared_http() as scope:
        assert shared_client("y", broken) is None
        assert shared_client("y", broken) is None
    assert tries == [1] and scope.clients == {}


async def test_a_scope_closed_from_another_task_still_closes_its_clients() -> None:
    scope = HttpScope()
    scope.enter()
    client = scope.client("x", Closable)
    await asyncio.create_task(scope.aclose())
    assert client.closed == 1 and shared_client("x", Closable) is None


async def test_an_apps_calls_share_one_aiohttp_session_closed_at_stop(
    tmp_path: Path, fake_asterisk: FakeAsterisk
) -> None:
    app = fake_app(tmp_path, "http-scope-tests", environ={})
    answers: list[str] = []
    clients: list[Any] = []
    async with FakeOpenAI("sk-test", [OpenAIReply(text="Hello there.")] * 3) as oa:
        llm = OpenAILLM("sk-test", base_url=oa.base_url)

        @app.route("1000")
        async def handler(call: CallSession) -> None:
            await call.answer()
            chunks = [c async for c in llm.generate([ChatMessage("user", "hi")])]
            answers.append("".join(c.text for c in chunks))
            clients.append(llm._sdk()._client)
            await call.hangup()

        async with fake_asterisk.serve(app):
            for _ in range(3):
                await fake_asterisk.incoming(extension="1000")
            await fake_asterisk.wait_until(
                lambda: app.calls_handled == 3 and not app.active_sessions
            )
            session = clients[0]._transport.client
            assert isinstance(session, aiohttp.ClientSession) and not session.closed
        assert answers == ["Hello there."] * 3 and len(oa.requests) == 3
    assert clients[0] is clients[1] is clients[2]  # one client, one session, for every call
    assert session.closed and clients[0].is_closed  # closed by app.stop()
