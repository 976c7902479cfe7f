"""The local LLM when something goes wrong, for real: llama-server from the sid chroot
and Qwen2.5-Coder-1.5B's cached weights (marker ``llm``, as tests/integration/
test_local_llm.py), real sockets and real signals.

One server for the module (the prompt head is restored from disk: a few seconds), one
restart of it, and one server shared by two apps on the Asterisk sandbox.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from local_llm_setup import TOOLS, assistant

from voxtra import VoiceConfig, VoxtraApp
from voxtra.errors import ProviderError
from voxtra.local import LlamaServer, LocalLLM, RuntimeUnavailable
from voxtra.pipeline import Agent

pytestmark = [
    pytest.mark.llm,
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.skipif(os.geteuid() != 0, reason="llama-server runs in a chroot (root)"),
]


async def test_a_port_in_use_is_refused_not_taken_for_a_ready_server(
    local: LocalLLM, tmp_path: Path
) -> None:
    """A second server on a port another llama-server holds: its own process could not
    bind and exited with 1, but the other one's /health answered 200 first, so
    ``start()`` returned "ready" in 0.02 s and its requests went to a server it did not
    start (a different model, perhaps, and stopped whenever its owner stops it)."""
    taken = local.server.port
    other = LlamaServer(
        local.server.model, runtime=local.runtime, port=taken, log_file=tmp_path / "other.log"
    )
    try:
        with pytest.raises(RuntimeUnavailable, match=f"127.0.0.1:{taken} is in use"):
            await other.start(ready_timeout=30)
        assert other.pid() is None  # nothing was started
    finally:
        await other.aclose()
    assert local.server.healthy()  # the server that holds the port is untouched


def _processing(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/slots", timeout=2.0) as response:
        slots = json.load(response)
    return any(slot.get("is_processing") for slot in slots)


async def test_a_server_killed_mid_answer_is_started_again(local: LocalLLM) -> None:
    """llama-server killed outright while it answers (the OOM killer: it holds 1.9 GB):
    the answer in progress fails at once (the pipeline speaks its fallback line), and
    the server is started again, so the next question is answered. Before, it stayed
    dead: every later turn of every call failed and got the fallback line."""
    killed = local.server.pid()
    assert killed is not None
    agent = Agent(local.llm, system_prompt=assistant.SYSTEM_PROMPT, tools=TOOLS)
    answer = asyncio.create_task(agent.respond("hello, who am I talking to and what can you do"))
    deadline = time.monotonic() + 60
    while not await asyncio.to_thread(_processing, local.server.url):
        assert not answer.done() and time.monotonic() < deadline, "no request in progress"
        await asyncio.sleep(0.02)
    local.warm_source = None  # set again by the next start, once its head is warm
    os.kill(killed, signal.SIGKILL)
    with pytest.raises(ProviderError):
        await asyncio.wait_for(answer, 10)

    deadline = time.monotonic() + 120  # loading the model on a loaded 2-core box: ~10 s
    while local.warm_source is None:
        assert time.monotonic() < deadline, "llama-server was not started again"
        await asyncio.sleep(0.1)
    assert local.server.running and local.server.pid() != killed
    assert local.warm_source == "restored"  # the prompt head saved at the first start
    agent = Agent(local.llm, system_prompt=assistant.SYSTEM_PROMPT, tools=TOOLS)
    event = await agent.respond("is it raining in Madrid right now")
    assert [(c.name, c.arguments.get("city")) for c in event.tool_calls] == [
        ("get_weather", "Madrid")
    ], event


async def test_two_apps_sharing_one_local_llm_keep_it_until_the_last_stops(
    make_app: Callable[..., Awaitable[Any]], tmp_path: Path
) -> None:
    """One ``LocalLLM`` attached to two apps of one process: the first app to start
    started the server and stopped it when it stopped, under the other app, whose
    calls then all got the fallback line."""
    shared = LocalLLM()
    apps: list[VoxtraApp] = []

    def configure(app: VoxtraApp) -> None:
        app.voice = VoiceConfig(system_prompt=assistant.SYSTEM_PROMPT, tools=TOOLS)
        shared.attach(app)

    try:
        for name in ("first", "second"):
            app = await make_app(
                configure,
                app_name=f"voxtra-llm-{name}-{uuid.uuid4().hex[:8]}",
                spool_dir=str(tmp_path / name),
            )
            apps.append(app)
        assert shared.server.running and shared.warm_source == "restored"
        await apps[0].stop()
        assert shared.server.running, "the first app to stop stopped the other's server"
        agent = Agent(shared.llm, system_prompt=assistant.SYSTEM_PROMPT, tools=TOOLS)
        event = await agent.respond("could you put me through to somebody")
        assert [c.name for c in event.tool_calls] == ["transfer_to_person"], event
        await apps[1].stop()
        assert not shared.server.running  # the last one to stop stops it
    finally:
        await shared.aclose()
