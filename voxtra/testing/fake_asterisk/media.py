"""The fake's media: Asterisk's RTP end of an ExternalMedia channel, and WAV files.

:class:`FakeRtpEnd` is what Asterisk is for ``externalMedia`` with ``transport=udp``,
``encapsulation=rtp``: a UDP socket on 127.0.0.1 that sends the caller's audio to the
app in 20 ms packets (silence unless a test queued some) and keeps what the app sends
back. Packets are built and parsed with :mod:`voxtra.media.rtp` (the same sans-IO code
the app's transport uses), so a framing mistake on either side shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import wave
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from voxtra.media.rtp import (
    PT_L16_8K,
    PT_PCMA,
    PT_PCMU,
    PT_SLIN16_ASTERISK,
    RtpPacket,
    RtpParseError,
    RtpSender,
)

__all__ = ["RTP_FORMATS", "FakeRtpEnd", "RtpFormat", "silent_wav"]

logger = logging.getLogger(__name__)

FRAME_SECONDS = 0.020


@dataclass(frozen=True, slots=True)
class RtpFormat:
    """One ExternalMedia ``format`` as Asterisk puts it on the wire."""

    name: str
    payload_type: int
    sample_rate: int
    bytes_per_sample: int
    silence_byte: int
    big_endian: bool = False

    @property
    def frame_bytes(self) -> int:
        return int(self.sample_rate * FRAME_SECONDS) * self.bytes_per_sample

    @property
    def samples_per_frame(self) -> int:
        return int(self.sample_rate * FRAME_SECONDS)


RTP_FORMATS: dict[str, RtpFormat] = {
    "ulaw": RtpFormat("ulaw", PT_PCMU, 8000, 1, 0xFF),
    "alaw": RtpFormat("alaw", PT_PCMA, 8000, 1, 0xD5),
    "slin": RtpFormat("slin", PT_L16_8K, 8000, 2, 0x00, big_endian=True),
    "slin16": RtpFormat("slin16", PT_SLIN16_ASTERISK, 16000, 2, 0x00, big_endian=True),
}
"""Formats the fake's ExternalMedia accepts (Asterisk's names)."""


def _swap16(data: bytes) -> bytes:
    out: bytes = np.frombuffer(data[: len(data) // 2 * 2], dtype=np.uint16).byteswap().tobytes()
    return out


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, end: FakeRtpEnd) -> None:
        self.end = end

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.end.received(data)


class FakeRtpEnd:
    """Asterisk's side of one RTP ExternalMedia channel, on 127.0.0.1."""

    def __init__(self, fmt: RtpFormat, remote: tuple[str, int]) -> None:
        self.format = fmt
        self.remote = remote
        self.heard = bytearray()
        """What the app sent (payloads in order; slin as little-endian PCM16)."""
        self.packets_received = 0
        self.packets_sent = 0
        self.malformed = 0
        self._outgoing = bytearray()
        self._sender = RtpSender(fmt.payload_type, fmt.samples_per_frame)
        self._transport: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task[None] | None = None
        self.local: tuple[str, int] = ("127.0.0.1", 0)
        self.on_receive: Callable[[], None] | None = None
        """Called after each packet from the app (the fake re-checks its waiters)."""

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=("127.0.0.1", 0)
        )
        self._transport = transport
        host, port = transport.get_extra_info("sockname")[:2]
        self.local = (str(host), int(port))
        self._task = loop.create_task(self._send_loop(), name="fake-asterisk-rtp")

    def queue_audio(self, payload: bytes) -> None:
        """Queue caller audio in the wire codec (slin as little-endian PCM16)."""
        self._outgoing.extend(_swap16(payload) if self.format.big_endian else payload)

    def received(self, data: bytes) -> None:
        try:
            packet = RtpPacket.parse(data)
        except RtpParseError:
            self.malformed += 1
            return
        self.packets_received += 1
        payload = packet.payload
        self.heard.extend(_swap16(payload) if self.format.big_endian else payload)
        if self.on_receive is not None:
            self.on_receive()

    async def _send_loop(self) -> None:
        loop = asyncio.get_running_loop()
        size = self.format.frame_bytes
        silence = bytes([self.format.silence_byte]) * size
        next_at = loop.time()
        while self._transport is not None and not self._transport.is_closing():
            if len(self._outgoing) >= size:
                frame = bytes(self._outgoing[:size])
                del self._outgoing[:size]
            else:
                frame = silence
            with contextlib.suppress(OSError):
                self._transport.sendto(self._sender.build(frame), self.remote)
                self.packets_sent += 1
            next_at += FRAME_SECONDS
            # Paced on the clock, not "sleep 20 ms": a loaded loop catches up instead
            # of drifting slower than real time.
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    async def close(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def silent_wav(seconds: float, sample_rate: int = 8000) -> bytes:
    """A valid mono 16-bit WAV file of ``seconds`` of silence."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(b"\x00\x00" * int(max(0.0, seconds) * sample_rate))
    return out.getvalue()
