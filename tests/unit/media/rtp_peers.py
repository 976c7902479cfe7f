"""The far end of an engine's RTP streams in the engine's tests: a UDP socket on
loopback and an RTP sender each (Asterisk's end of a call, or a stranger's)."""

from __future__ import annotations

import socket

from voxtra.media.rtp import RtpPacket, RtpSender


class Peer:
    """Asterisk's end of one stream (or a stranger): a UDP socket of its own, an RTP
    sender."""

    def __init__(self, pt: int = 0, ssrc: int = 1000) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.rtp = RtpSender(pt, ssrc=ssrc, sequence=100, timestamp=0)

    def send(self, to: tuple[str, int], payload: bytes, seq: int | None = None) -> None:
        if seq is None:
            self.sock.sendto(self.rtp.build(payload), to)
            return
        pkt = RtpPacket(self.rtp.payload_type, seq & 0xFFFF, 0, self.rtp.ssrc, payload)
        self.sock.sendto(pkt.build(), to)

    def received(self) -> list[RtpPacket]:
        out = []
        while True:
            try:
                out.append(RtpPacket.parse(self.sock.recv(2048)))
            except BlockingIOError:
                return out


def frame_of(code: int) -> bytes:
    """A 20 ms mu-law frame of one code: decoded, a constant row that names it."""
    return bytes([code]) * 160
