"""ElevenLabs streaming TTS through the official ``elevenlabs`` SDK (``voxtra[elevenlabs]``).

``ulaw_8000`` (the default) is what a phone line carries, so its audio goes to the wire
with no conversion; ``pcm_16000`` (or another ``pcm_<rate>``) suits wideband transports.
The SDK hands over the audio as it arrives from the network (``chunk_size=None``), not
in 1 KB lumps it waits to fill (its default), nor in 20 ms pieces: each piece costs a
pass through the SDK, this iterator, the pipeline's deadline and the transport's
``send`` (about 30 us of CPU; a 3 s answer was 150 of them, measured with
bench/agent_density.py).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from pydantic import SecretStr

from voxtra.config import secret_value
from voxtra.errors import ConfigError, ProviderError
from voxtra.media.frames import AudioChunk, Codec
from voxtra.pipeline.pipeline import ProviderTimeout
from voxtra.providers.http import ScopedSdk, seconds_text

__all__ = ["ElevenLabsTTS"]

logger = logging.getLogger(__name__)

_FORMATS = {
    "ulaw_8000": (Codec.ULAW, 8000),
    "alaw_8000": (Codec.ALAW, 8000),
    **{f"pcm_{r}": (Codec.PCM16, r) for r in (8000, 16000, 22050, 24000, 44100, 48000)},
}


class ElevenLabsTTS:
    """Streaming TTS on ElevenLabs. ``base_url`` points the SDK at a proxy or at
    ``FakeElevenLabs``; ``max_retries`` defaults to 0 (a late voice is worse than a
    clear failure the pipeline can cover with a fallback)."""

    name = "elevenlabs"

    def __init__(
        self,
        api_key: str | SecretStr,
        voice_id: str,
        model_id: str = "eleven_flash_v2_5",
        *,
        output_format: str = "ulaw_8000",
        base_url: str | None = None,
        max_retries: int = 0,
        timeout: float = 30.0,
        optimize_streaming_latency: int | None = None,
        chunk_bytes: int | None = None,
    ) -> None:
        try:
            from elevenlabs.client import AsyncElevenLabs
        except ImportError as exc:
            raise ConfigError("ElevenLabsTTS needs: pip install 'voxtra[elevenlabs]'") from exc
        if output_format not in _FORMATS:
            raise ConfigError(
                f"ElevenLabsTTS output_format must be one of {sorted(_FORMATS)}, "
                f"not {output_format!r}"
            )
        if not secret_value(api_key) or not voice_id:
            raise ConfigError("ElevenLabsTTS needs an api_key and a voice_id")
        self.voice_id = voice_id
        self.model_id = model_id
        self.output_format = output_format
        self.codec, self.sample_rate = _FORMATS[output_format]
        self.optimize_streaming_latency = optimize_streaming_latency
        self.timeout = timeout
        self._request_options: dict[str, Any] = {
            "max_retries": max_retries,
            "timeout_in_seconds": timeout,
            # None: whatever the network delivered, at once; else pieces of that size
            "chunk_size": chunk_bytes,
        }
        kwargs: dict[str, Any] = {"api_key": secret_value(api_key), "timeout": timeout}
        if base_url is not None:
            kwargs["base_url"] = base_url
        self._client = AsyncElevenLabs(**kwargs)
        # Inside an app, on the app's shared aiohttp-backed httpx client
        # (voxtra.providers.http: a quarter of the CPU a 3 s answer costs through
        # httpx's own stack).
        self._scoped = ScopedSdk(
            self._client,
            "httpx",
            _aiohttp_client,
            lambda http: AsyncElevenLabs(**kwargs, httpx_client=http),
        )

    def _sdk(self) -> Any:
        """The SDK client for this request (see ``_scoped``)."""
        return self._scoped.get()

    async def synthesize(self, text: str) -> AsyncIterator[AudioChunk]:
        """Stream audio for ``text``; closing the iterator closes the HTTP response."""
        if not text.strip():
            return
        width = self.codec.bytes_per_sample
        carry = b""
        stream = self._sdk().text_to_speech.stream(
            self.voice_id,
            text=text,
            model_id=self.model_id,
            output_format=self.output_format,
            optimize_streaming_latency=self.optimize_streaming_latency,
            request_options=self._request_options,
        )
        try:
            async for piece in stream:
                data = carry + piece
                cut = len(data) - len(data) % width
                carry = data[cut:]
                if cut:
                    yield AudioChunk(data[:cut], self.sample_rate, self.codec)
        except Exception as exc:
            raise self._error(exc) from exc
        finally:
            await stream.aclose()

    def _error(self, exc: Exception) -> ProviderError:
        """What the SDK raised, as the error to raise. No byte within ``timeout`` (httpx's
        ``TimeoutException``, which the aiohttp-backed client raises too: a service that
        accepted the request and went silent) is a ``ProviderTimeout``, as a pipeline
        deadline is: it was a ``ProviderError`` reading "ReadTimeout: " (httpx's own
        client gives it no message), which named neither the wait nor the timeout."""
        import httpx

        if isinstance(exc, httpx.TimeoutException | TimeoutError):
            return ProviderTimeout(self.name, f"no audio within {seconds_text(self.timeout)}")
        return ProviderError(self.name, _describe(exc))


def _aiohttp_client() -> Any:
    """An httpx client on aiohttp (``httpx-aiohttp``, in the ``elevenlabs`` extra),
    with the OpenAI SDK's connection limits: many calls' requests at once."""
    import httpx
    from httpx_aiohttp import HttpxAiohttpClient

    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
    return HttpxAiohttpClient(limits=limits)


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    if status is not None:
        body = getattr(exc, "body", None)
        detail = body.get("detail") if isinstance(body, dict) else body
        if isinstance(detail, dict):
            detail = detail.get("message", detail)
        return f"HTTP {status}: {detail}"
    return f"{type(exc).__name__}: {exc}"
