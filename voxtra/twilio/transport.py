"""A call's audio over a Twilio Media Stream: :class:`TwilioMediaTransport`.

Inbound ``media`` messages carry mu-law 8 kHz in chunks of any size (Twilio sends
20 ms); they are cut into 20 ms frames for ``frames()``.

Outbound audio is paced on the app's shared 20 ms :class:`~voxtra.media.pacer.Ticker`:
one frame per tick, after a first burst of :data:`PRIME_FRAMES` that gives Twilio's
playout buffer a cushion against network jitter (sent at exactly 1x, a late packet
would be a gap the caller hears). No filler silence: Twilio plays silence by itself
when its buffer is empty, unlike Asterisk's chan_websocket.

What was *played* comes from Twilio, not from our clock: a ``mark`` goes out after
every :data:`MARK_EVERY` frames and at the end of each stretch of audio, and Twilio
echoes it once the audio before it has been played to the caller. ``played_ms`` is
the audio confirmed so (plus, between two marks, what has played since the last one
at 1x, never beyond the next mark), ``queued_ms`` the rest of what ``send`` took (our
queue plus what Twilio still holds). ``flush()`` (barge-in) sends ``clear``: Twilio drops its
buffer and echoes the pending marks at once, so those are ignored (each mark carries
the flush generation it belongs to) and what was sent but not confirmed is dropped
from the count: the pipeline's truncation uses what the caller really heard, to
within a mark's :data:`MARK_EVERY` frames.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from voxtra.media.frames import FRAME_MS, AudioChunk, Codec
from voxtra.media.pacer import Ticker
from voxtra.media.transport import DtmfEvent, HangupEvent, MediaTransport
from voxtra.twilio.protocol import clear_message, mark_message, media_message

__all__ = ["MARK_EVERY", "PRIME_FRAMES", "TwilioMediaTransport"]

logger = logging.getLogger(__name__)

FRAME_BYTES = 160
"""20 ms of mu-law 8 kHz."""

MARK_EVERY = 3
"""Frames between two marks (60 ms): the resolution of ``played_ms``."""

PRIME_FRAMES = 3
"""Frames sent at once when audio starts after a pause (60 ms of cushion at Twilio)."""

SendText = Callable[[str], Awaitable[None]]
CloseSocket = Callable[[], Awaitable[None]]


class TwilioMediaTransport(MediaTransport):
    """One call's Media Stream (the server side of Twilio's WebSocket)."""

    def __init__(
        self,
        stream_sid: str,
        send_text: SendText,
        close_socket: CloseSocket,
        ticker: Ticker,
        *,
        call_sid: str = "",
        max_queue_ms: int = 60_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(Codec.ULAW, 8000, max_queue_ms=max_queue_ms)
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        self._send_text = send_text
        self._close_socket = close_socket
        self._ticker = ticker
        self._outbox: asyncio.Queue[str | None] = asyncio.Queue()
        self._writer = asyncio.get_running_loop().create_task(
            self._write(), name=f"voxtra-twilio-write-{stream_sid}"
        )
        self._tick: int | None = ticker.add(self._on_tick)
        self._in_buf = b""
        self._generation = 0
        self._sent = 0  # frames sent to Twilio (never counting flushed ones)
        self._marked = 0  # frames covered by the last mark sent
        self._confirmed = 0  # frames Twilio said it played
        self._clock = clock
        self._confirmed_at = clock()  # when that was said (or the stretch began)
        self._active = False  # sending a stretch of audio (not primed again)
        self.marks_sent = 0
        self.marks_received = 0
        self.clears_sent = 0

    @property
    def call_id(self) -> str:
        return self.call_sid or self.stream_sid

    # --- inbound (from the server's read loop) -------------------------------------------

    def feed(self, payload: bytes) -> None:
        """A ``media`` message's audio: queued for ``frames()`` in 20 ms frames."""
        data = self._in_buf + payload
        whole = len(data) - len(data) % FRAME_BYTES
        for i in range(0, whole, FRAME_BYTES):
            self._deliver(AudioChunk(data[i : i + FRAME_BYTES], 8000, Codec.ULAW))
        self._in_buf = data[whole:]

    def marked(self, name: str) -> None:
        """Twilio echoed a mark: the audio before it has been played."""
        generation, _, frames = name.partition(":")
        if not frames.isdigit() or generation != f"v{self._generation}":
            return  # echoed by a clear (earlier generation), or not ours
        self.marks_received += 1
        # Never past what was sent (a stray or replayed mark must not make queued_ms < 0).
        confirmed = min(int(frames), self._sent)
        if confirmed > self._confirmed:
            self._confirmed = confirmed
            self._confirmed_at = self._clock()

    def dtmf(self, digit: str) -> None:
        self._emit(DtmfEvent(digit))

    def stopped(self, reason: str = "stream stopped") -> None:
        """The stream ended (``stop`` or the socket closed): ``frames()`` ends."""
        if not self._closed:
            self._emit(HangupEvent(reason))
            self._mark_closed(reason)
            self._release()
            self._outbox.put_nowait(None)  # the writer ends; the socket is the peer's

    # --- positions ----------------------------------------------------------------------

    def _played_frames_now(self) -> int:
        """Confirmed frames, plus those played since, at 1x, up to the next mark.

        Between two marks Twilio goes on playing: without this the position would be
        up to a mark's 60 ms behind. Never more than one mark ahead of what was
        confirmed (a stalled stream cannot run it away) nor past what was sent."""
        ahead = self._sent - self._confirmed
        if ahead <= 0:
            return self._confirmed
        since = int((self._clock() - self._confirmed_at) * 1000 // FRAME_MS)
        return self._confirmed + min(ahead, MARK_EVERY, max(0, since))

    @property
    def played_ms(self) -> float:
        return float(self._played_frames_now() * FRAME_MS)

    @property
    def queued_ms(self) -> float:
        return super().queued_ms + (self._sent - self._played_frames_now()) * FRAME_MS

    # --- outbound -------------------------------------------------------------------------

    def _on_tick(self, skipped: int) -> None:
        if self._closed:
            return
        burst = 1 if self._active else PRIME_FRAMES
        for _ in range(burst):
            frame = self._pop_frame()
            if frame is None:
                if self._active:
                    self._active = False
                    self._mark()  # the end of this stretch: played_ms reaches it
                return
            if not self._active:
                self._active = True
                if self._sent == self._confirmed:
                    self._confirmed_at = self._clock()  # playing starts about now
            self._outbox.put_nowait(media_message(self.stream_sid, frame))
            self._sent += 1
            self.stats.frames_out += 1
            if self._sent - self._marked >= MARK_EVERY:
                self._mark()

    def _mark(self) -> None:
        if self._sent == self._marked:
            return
        self._marked = self._sent
        self.marks_sent += 1
        name = f"v{self._generation}:{self._sent}"
        self._outbox.put_nowait(mark_message(self.stream_sid, name))

    async def _on_flush(self) -> None:
        # What Twilio still holds is never played: the count stops where it was
        # confirmed, and the marks it echoes for the clear belong to the old generation.
        self._generation += 1
        self._confirmed = self._played_frames_now()
        self._sent = self._marked = self._confirmed
        self._active = False
        self.clears_sent += 1
        if not self._closed:
            self._outbox.put_nowait(clear_message(self.stream_sid))

    async def _write(self) -> None:
        try:
            while True:
                text = await self._outbox.get()
                if text is None:
                    return
                await self._send_text(text)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.debug("twilio stream %s: send failed: %s", self.stream_sid, exc)
            self.stopped(f"send failed: {exc}")

    def _release(self) -> None:
        if self._tick is not None:
            self._ticker.remove(self._tick)
            self._tick = None

    async def _shutdown(self) -> None:
        self._release()
        self._outbox.put_nowait(None)
        writer = self._writer
        if writer is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(writer), 1.0)
            writer.cancel()
        with contextlib.suppress(Exception):
            await self._close_socket()
