"""FakeOpenAI: OpenAI's chat completions endpoint on loopback, streaming included.

``POST /v1/chat/completions`` with ``stream: true`` answers with server-sent events, one
``data: {chat.completion.chunk}`` line per delta (text pieces, or ``tool_calls`` deltas
whose ``function.arguments`` JSON arrives in fragments, as the real API does) and a final
``data: [DONE]``. Without ``stream`` it returns one ``chat.completion`` object. Replies are
scripted (``OpenAIReply``), and can fail the way the real service does: an HTTP error with
OpenAI's error body, or a connection dropped mid-stream.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from voxtra.testing.fakes._server import FakeServer

__all__ = ["FakeOpenAI", "OpenAIReply"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OpenAIReply:
    """One scripted answer: ``text`` (streamed word by word), ``tool_calls`` as
    ``(name, arguments)`` pairs, or a failure: ``status`` (e.g. 401, 429, 500) or
    ``drop_after`` (chunks sent before the connection is cut)."""

    text: str = ""
    tool_calls: Sequence[tuple[str, Mapping[str, Any] | str]] = ()
    """``(name, arguments)``; a ``str`` is sent as the raw arguments text (even broken)."""
    status: int | None = None
    drop_after: int | None = None
    delay: float = 0.0
    """Seconds between chunks (to test cancellation mid-answer)."""
    pieces: Sequence[str] = ()
    """Content deltas sent exactly as given (instead of ``text`` split into words): a
    JSON reply cut at chosen places, as a server's tokens cut it."""


_ERRORS = {
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    429: ("rate_limit_exceeded", "rate_limit_exceeded", "Rate limit reached."),
    500: ("server_error", None, "The server had an error while processing your request."),
}


class FakeOpenAI(FakeServer):
    """Fake OpenAI-compatible server. Point clients at ``fake.base_url`` (``.../v1``).
    Each request takes the next reply; when they run out, the last one repeats."""

    def __init__(
        self, api_key: str = "test-key", replies: Sequence[OpenAIReply] = (), *, port: int = 0
    ) -> None:
        super().__init__(port=port)
        self.api_key = api_key
        self.replies = list(replies)
        self.requests: list[dict[str, Any]] = []
        self.app.router.add_post("/v1/chat/completions", self._completions)

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def _next(self) -> OpenAIReply:
        if len(self.replies) > 1:
            return self.replies.pop(0)
        return self.replies[0] if self.replies else OpenAIReply(text="OK.")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401)
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "We could not parse the JSON body of your request.")
        if not isinstance(body, dict) or "model" not in body or "messages" not in body:
            return _error(400, "you must provide a model and messages parameter")
        self.requests.append(body)
        reply = self._next()
        if reply.status is not None:
            return _error(reply.status)
        chunks = _chunks(reply, body["model"])
        if not body.get("stream"):
            return web.json_response(_completion(reply, body["model"]))
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        for n, chunk in enumerate(chunks):
            if reply.drop_after is not None and n >= reply.drop_after:
                if request.transport is not None:
                    request.transport.abort()
                return resp
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
            if reply.delay:
                await asyncio.sleep(reply.delay)
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def _arguments(args: Mapping[str, Any] | str) -> str:
    return args if isinstance(args, str) else json.dumps(dict(args))


def _error(status: int, message: str | None = None) -> web.Response:
    kind, code, default = _ERRORS.get(status, ("invalid_request_error", None, "Bad request."))
    payload = {"error": {"message": message or default, "type": kind, "param": None, "code": code}}
    return web.json_response(payload, status=status)


def _chunks(reply: OpenAIReply, model: str) -> list[dict[str, Any]]:
    cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    out = [chunk({"role": "assistant", "content": "", "refusal": None})]
    words = reply.text.split(" ") if reply.text else []
    pieces = list(reply.pieces) or [w if i == 0 else " " + w for i, w in enumerate(words)]
    for piece in pieces:
        out.append(chunk({"content": piece}))
    for index, (name, args) in enumerate(reply.tool_calls):
        call_id = f"call_{uuid.uuid4().hex[:24]}"
        out.append(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call_id,
                            "type": "function",
                            "function": {"name": name, "arguments": ""},
                        }
                    ]
                }
            )
        )
        text = _arguments(args)
        for j in range(0, len(text), 7):  # arguments arrive in fragments
            out.append(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": index,
                                "function": {"arguments": text[j : j + 7]},
                            }
                        ]
                    }
                )
            )
    out.append(chunk({}, "tool_calls" if reply.tool_calls else "stop"))
    return out


def _completion(reply: OpenAIReply, model: str) -> dict[str, Any]:
    calls = [
        {
            "id": f"call_{uuid.uuid4().hex[:24]}",
            "type": "function",
            "function": {"name": name, "arguments": _arguments(args)},
        }
        for name, args in reply.tool_calls
    ]
    content = "".join(reply.pieces) or reply.text
    message: dict[str, Any] = {"role": "assistant", "content": content or None}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if calls else "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
