"""Deepgram live STT through the official ``deepgram-sdk`` 7.x (``voxtra[deepgram]``).

Telephone u-law at 8 kHz goes to Deepgram untouched (``encoding="mulaw"``), so there is no
conversion cost on the hot path. Deepgram's ``is_final`` marks a *segment* as settled,
while ``speech_final`` (or ``UtteranceEnd``, or the reply to our ``Finalize``) ends the
caller's utterance; Voxtra's ``Transcript.is_final`` means the latter, so settled segments
are joined until the utterance ends. Interim transcripts carry the joined text so far.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator
from typing import Any

from pydantic import SecretStr

from voxtra.config import secret_value
from voxtra.errors import ConfigError, ProviderError
from voxtra.media.convert import ChunkConverter
from voxtra.media.frames import AudioChunk, Codec
from voxtra.pipeline.pipeline import ProviderTimeout
from voxtra.providers.base import Transcript

__all__ = ["DeepgramSTT", "DeepgramStream"]

logger = logging.getLogger(__name__)

_ENCODINGS = {"mulaw": Codec.ULAW, "alaw": Codec.ALAW, "linear16": Codec.PCM16}


_CONNECT_OPTIONS: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "voxtra_deepgram_connect_options", default=None
)
"""websockets ``connect()`` options for the next socket this task connects
(``compression``, ``open_timeout``, ``close_timeout``): set around our own connect
only, so other code in the process that uses the SDK keeps its defaults."""


def _hook_sdk_connect() -> bool:
    """Let ``DeepgramSTT``'s socket options reach the SDK's WebSocket connect.

    deepgram-sdk 7 connects with ``websockets.connect(url, extra_headers=...)`` and
    takes no other option. So websockets offers permessage-deflate, and a server that
    accepts it (FakeDeepgram's aiohttp does) makes both ends run zlib over every audio
    message: telephone audio barely compresses, and each 20 ms frame cost ~20 us of
    zlib here (bench/agent_density.py profile). And its timeouts are websockets' own:
    against a server that accepted the TCP connection and never answered the
    handshake, ``stream()`` failed after 20 s (10 s ``open_timeout``, then 10 s
    ``close_timeout`` for the half-open socket to close), with "TimeoutError: ". The
    SDK looks its connect function up in its module at each call; it is wrapped once
    to pass what ``_CONNECT_OPTIONS`` holds (by default nothing: the SDK's own
    behaviour). False if that SDK layout is not there (another version): the socket
    then keeps the SDK's defaults."""
    try:
        from deepgram.listen.v1 import client, raw_client
    except ImportError:
        return False
    hooked = False
    for module in (client, raw_client):  # listen.v1.connect is client's; raw_client's too
        connect = getattr(module, "websockets_client_connect", None)
        if connect is None:
            continue
        hooked = True
        if not getattr(connect, "_voxtra_options", False):
            setattr(module, "websockets_client_connect", _with_options(connect))  # noqa: B010
    return hooked


def _with_options(connect: Any) -> Any:
    def connect_with_options(*args: Any, **kwargs: Any) -> Any:
        for name, value in (_CONNECT_OPTIONS.get() or {}).items():
            kwargs.setdefault(name, value)
        return connect(*args, **kwargs)

    connect_with_options._voxtra_options = True  # type: ignore[attr-defined]
    return connect_with_options


_shutting_down: set[asyncio.Task[None]] = set()
"""Streams' shutdowns in progress, held here: a close() cancelled meanwhile no longer
holds its shutdown, and the event loop keeps only a weak reference to a task."""


def _ws_url(base_url: str) -> str:
    if base_url.startswith("https://"):
        return "wss://" + base_url[len("https://") :]
    if base_url.startswith("http://"):
        return "ws://" + base_url[len("http://") :]
    return base_url


class DeepgramSTT:
    """Streaming STT on Deepgram. ``base_url`` (``https://...`` or ``wss://...``) points
    the SDK elsewhere: a proxy, a self-hosted Deepgram, or ``FakeDeepgram`` in tests."""

    name = "deepgram"

    def __init__(
        self,
        api_key: str | SecretStr,
        model: str = "nova-3",
        *,
        encoding: str = "mulaw",
        sample_rate: int = 8000,
        language: str | None = "en-US",
        endpointing: int | None = 300,
        utterance_end_ms: int | None = 1000,
        interim_results: bool = True,
        vad_events: bool = True,
        smart_format: bool | None = None,
        keyterms: list[str] | None = None,
        base_url: str | None = None,
        keepalive_s: float = 5.0,
        connect_timeout_s: float = 5.0,
        close_timeout_s: float = 3.0,
        batch_ms: float = 100.0,
        compression: bool = False,
    ) -> None:
        if not secret_value(api_key):
            raise ConfigError("DeepgramSTT needs an api_key")
        if encoding not in _ENCODINGS:
            raise ConfigError(f"DeepgramSTT encoding must be one of {sorted(_ENCODINGS)}")
        self.api_key = SecretStr(secret_value(api_key))
        self.model = model
        self.codec = _ENCODINGS[encoding]
        self.encoding = encoding
        self.sample_rate = sample_rate
        self.base_url = base_url
        self.keepalive_s = keepalive_s
        self.connect_timeout_s = connect_timeout_s
        """``stream()`` raises ``ProviderTimeout`` when the WebSocket handshake takes
        longer (the half-open socket then has ``close_timeout_s`` to close): the
        pipeline's ``stt_timeout`` (5 s) gives up on the turn by then."""
        self.close_timeout_s = close_timeout_s
        """How long ``close()`` waits for the last results, and websockets for the
        closing handshake."""
        self.batch_ms = batch_ms
        """The voice pipeline sends the caller's audio in pieces of this much, one
        WebSocket message each (Deepgram takes 20-100 ms); 0: every 20 ms frame."""
        self.compression = compression
        """Offer permessage-deflate on the socket (websockets' and the SDK's default).
        Off by default: u-law audio barely compresses and zlib costs CPU at both ends
        for every message (see ``_hook_sdk_connect``)."""
        options: dict[str, Any] = {
            "model": model,
            "encoding": encoding,
            "sample_rate": sample_rate,
            "channels": 1,
            "language": language,
            "endpointing": endpointing,
            "utterance_end_ms": utterance_end_ms,
            "interim_results": interim_results,
            "vad_events": vad_events,
            "smart_format": smart_format,
            "keyterm": keyterms,
        }
        self._options = {k: v for k, v in options.items() if v is not None}
        try:
            from deepgram import AsyncDeepgramClient, DeepgramClientEnvironment
        except ImportError as exc:
            raise ConfigError("DeepgramSTT needs: pip install 'voxtra[deepgram]'") from exc
        kwargs: dict[str, Any] = {"api_key": secret_value(api_key)}
        if base_url is not None:
            http = base_url.replace("ws://", "http://").replace("wss://", "https://")
            kwargs["environment"] = DeepgramClientEnvironment(
                base=http,
                production=_ws_url(base_url),
                agent=_ws_url(base_url),
                agent_rest=http,
            )
        self._client = AsyncDeepgramClient(**kwargs)
        _build_headers_once(self._client)
        if not _hook_sdk_connect():
            logger.debug("deepgram-sdk connect not found: the socket keeps its defaults")

    async def stream(self) -> DeepgramStream:
        """Connect one live transcription socket for one call."""
        stack = contextlib.AsyncExitStack()
        token = _CONNECT_OPTIONS.set(
            {
                "compression": "deflate" if self.compression else None,
                "open_timeout": self.connect_timeout_s,
                "close_timeout": self.close_timeout_s,
            }
        )
        try:
            socket = await stack.enter_async_context(
                self._client.listen.v1.connect(**self._options)
            )
        except TimeoutError as exc:
            await stack.aclose()
            raise ProviderTimeout(
                self.name, f"cannot connect: no handshake within {self.connect_timeout_s:g} s"
            ) from exc
        except Exception as exc:
            await stack.aclose()
            raise ProviderError(self.name, f"cannot connect: {_describe(exc)}") from exc
        finally:
            _CONNECT_OPTIONS.reset(token)
        return DeepgramStream(self, stack, socket)


def _build_headers_once(client: Any) -> None:
    """Give ``client`` the headers it builds for each connect, built once.

    deepgram-sdk 7 builds its request headers (user agent, platform, the key) anew on
    every connect, and each time asks ``importlib.metadata`` for its own version, which
    walks the installed packages: 0.9 ms of CPU on this box, once per call (more than a
    call's whole setup through ARI). Nothing in them changes for one client; each
    connect still gets its own copy to add to. An SDK without the hook keeps its own."""
    wrapper = getattr(client, "_client_wrapper", None)
    build = getattr(wrapper, "get_headers", None)
    if build is None:
        return
    headers: dict[str, str] = dict(build())

    def get_headers() -> dict[str, str]:
        return dict(headers)

    wrapper.get_headers = get_headers  # type: ignore[union-attr]


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    if status is not None:
        return f"HTTP {status}: {getattr(exc, 'body', '')}"
    return f"{type(exc).__name__}: {exc}"


class DeepgramStream:
    """One call's Deepgram socket: audio out, transcripts in."""

    def __init__(self, provider: DeepgramSTT, stack: contextlib.AsyncExitStack, socket: Any):
        self._provider = provider
        self._stack = stack
        self._socket = socket
        self._converter = ChunkConverter(provider.codec, provider.sample_rate)
        self._out: asyncio.Queue[Transcript | ProviderError | None] = asyncio.Queue()
        self._segments: list[Any] = []  # settled (is_final) results of this utterance
        self._closed = False
        self._failed: ProviderError | None = None
        self._last_send = asyncio.get_running_loop().time()
        self._reader = asyncio.create_task(self._read())
        self._keepalive: asyncio.Task[None] | None = asyncio.create_task(self._keep_alive())

    async def send(self, chunk: AudioChunk) -> None:
        if self._failed is not None:
            raise self._failed
        if self._closed:
            raise ProviderError(self._provider.name, "stream is closed")
        data = self._converter.convert(chunk).data
        if data:
            await self._guard(self._socket.send_media(data))
            self._last_send = asyncio.get_running_loop().time()

    async def end_of_speech(self) -> None:
        """Ask Deepgram to finalise now rather than wait for its own endpointing."""
        if not self._closed and self._failed is None:
            await self._guard(self._socket.send_finalize())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Let go of the task as it is cancelled: kept, its CancelledError's traceback
        # (the coroutine's frame, which holds this stream) made a reference cycle of
        # every closed stream, left to the cyclic collector (tests/unit/test_call_garbage.py).
        keepalive, self._keepalive = self._keepalive, None
        if keepalive is not None:
            keepalive.cancel()
        try:
            if self._failed is None and not self._reader.done():
                with contextlib.suppress(ProviderError):
                    tail = self._converter.flush().data  # what the resampler still holds
                    if tail:
                        await self._guard(self._socket.send_media(tail))
                    await self._guard(self._socket.send_close_stream())
                try:
                    await asyncio.wait_for(
                        asyncio.shield(self._reader), self._provider.close_timeout_s
                    )
                except TimeoutError:
                    logger.warning("deepgram did not close the stream in time; dropping it")
        finally:
            # A task of its own, so that it also runs when this close() is cancelled: the
            # voice pipeline gives close() 2 s, less than close_timeout_s, and a Deepgram
            # that did not answer CloseStream by then kept its socket (alive on pings)
            # and the reader task until the service dropped it, one per hung stream.
            shutdown = asyncio.get_running_loop().create_task(self._shut_down())
            _shutting_down.add(shutdown)
            shutdown.add_done_callback(_shutting_down.discard)
            await asyncio.shield(shutdown)

    async def _shut_down(self) -> None:
        """Stop the reader and close the socket."""
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        with contextlib.suppress(Exception):
            await self._stack.aclose()

    async def transcripts(self) -> AsyncIterator[Transcript]:
        while (item := await self._out.get()) is not None:
            if isinstance(item, ProviderError):
                raise item
            yield item

    async def _guard(self, op: Any) -> None:
        try:
            await op
        except Exception as exc:
            self._failed = ProviderError(self._provider.name, f"send failed: {_describe(exc)}")
            raise self._failed from exc

    async def _keep_alive(self) -> None:
        """Deepgram drops a socket after ~10 s without data; a paused call must not."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._provider.keepalive_s / 2)
            if loop.time() - self._last_send >= self._provider.keepalive_s:
                try:
                    await self._socket.send_keep_alive()
                except Exception:
                    return  # the reader reports the broken socket
                self._last_send = loop.time()

    async def _read(self) -> None:
        try:
            async for msg in self._socket:
                kind = getattr(msg, "type", None)
                if kind == "Results":
                    self._on_results(msg)
                elif kind == "UtteranceEnd":
                    self._end_utterance()
                elif kind == "Error":
                    desc = getattr(msg, "description", "") or getattr(msg, "message", "")
                    raise ProviderError(self._provider.name, f"server error: {desc}")
            self._end_utterance()
        except asyncio.CancelledError:
            raise
        except ProviderError as exc:
            self._fail(exc)
        except Exception as exc:
            if not self._closed:
                self._fail(ProviderError(self._provider.name, f"connection lost: {_describe(exc)}"))
        finally:
            self._out.put_nowait(None)

    def _fail(self, exc: ProviderError) -> None:
        self._failed = exc
        self._out.put_nowait(exc)

    def _on_results(self, msg: Any) -> None:
        alts = msg.channel.alternatives
        text = alts[0].transcript.strip() if alts else ""
        if msg.is_final:
            if text:
                self._segments.append(msg)
            if msg.speech_final or getattr(msg, "from_finalize", False):
                self._end_utterance(getattr(msg, "from_finalize", False))
        elif text:
            so_far = " ".join([*self._texts(), text])
            start = self._segments[0].start if self._segments else msg.start
            conf = alts[0].confidence
            self._out.put_nowait(Transcript(so_far, False, conf, start, msg.start + msg.duration))

    def _texts(self) -> list[str]:
        return [s.channel.alternatives[0].transcript.strip() for s in self._segments]

    def _end_utterance(self, asked: bool = False) -> None:
        if not self._segments:
            if asked:  # our Finalize found no words: say so (else: a hung STT)
                self._out.put_nowait(Transcript("", True))
            return
        segs, self._segments = self._segments, []
        confs = [s.channel.alternatives[0].confidence for s in segs]
        text = " ".join(s.channel.alternatives[0].transcript.strip() for s in segs)
        end = segs[-1].start + segs[-1].duration
        self._out.put_nowait(Transcript(text, True, min(confs), segs[0].start, end))
