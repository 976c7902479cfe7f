"""RTP (RFC 3550) packets and an outbound stream, sans-IO.

Only what ExternalMedia needs: fixed header, CSRC list, one header extension, padding.
Parsing never trusts a length field: every overrun is an ``RtpParseError``.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass, field

from voxtra.errors import MediaError

__all__ = [
    "PT_L16_8K",
    "PT_PCMA",
    "PT_PCMU",
    "PT_SLIN16_ASTERISK",
    "RtpPacket",
    "RtpParseError",
    "RtpSender",
    "seq_diff",
]

PT_PCMU = 0
PT_PCMA = 8
PT_L16_8K = 10
"""Asterisk sends 8 kHz ``slin`` with payload type 10 (measured, see notes)."""
PT_SLIN16_ASTERISK = 118
"""Asterisk's dynamic payload type for 16 kHz ``slin16`` (measured, see notes)."""

_HEADER = struct.Struct("!BBHII")
_EXT = struct.Struct("!HH")


class RtpParseError(MediaError):
    """Bytes that are not a valid RTP packet."""


def seq_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` between 16-bit sequence numbers, in [-32768, 32767]."""
    return ((a - b + 0x8000) & 0xFFFF) - 0x8000


@dataclass(slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    version: int = 2
    padding: int = 0
    """Number of padding bytes (0 = no padding bit)."""
    csrc: list[int] = field(default_factory=list)
    extension_profile: int | None = None
    """Header-extension profile id; ``None`` when there is no extension."""
    extension_data: bytes = b""

    @property
    def extension(self) -> bool:
        return self.extension_profile is not None

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        """Parse one datagram; raise ``RtpParseError`` for anything malformed."""
        n = len(data)
        if n < 12:
            raise RtpParseError(f"RTP packet too short ({n} bytes)")
        b0, b1, seq, ts, ssrc = _HEADER.unpack_from(data)
        version = b0 >> 6
        if version != 2:
            raise RtpParseError(f"RTP version {version}, expected 2")
        cc = b0 & 0x0F
        pos = 12 + 4 * cc
        if pos > n:
            raise RtpParseError("CSRC list runs past the end of the packet")
        csrc = list(struct.unpack_from(f"!{cc}I", data, 12)) if cc else []
        profile: int | None = None
        ext = b""
        if b0 & 0x10:
            if pos + 4 > n:
                raise RtpParseError("extension header runs past the end of the packet")
            profile, words = _EXT.unpack_from(data, pos)
            pos += 4
            if pos + 4 * words > n:
                raise RtpParseError("extension data runs past the end of the packet")
            ext = bytes(data[pos : pos + 4 * words])
            pos += 4 * words
        end = n
        padding = 0
        if b0 & 0x20:
            padding = data[-1]
            if padding == 0 or pos + padding > n:
                raise RtpParseError(f"invalid padding count {padding}")
            end = n - padding
        return cls(
            payload_type=b1 & 0x7F,
            sequence=seq,
            timestamp=ts,
            ssrc=ssrc,
            payload=bytes(data[pos:end]),
            marker=bool(b1 & 0x80),
            version=version,
            padding=padding,
            csrc=csrc,
            extension_profile=profile,
            extension_data=ext,
        )

    def build(self) -> bytes:
        """Serialise; raise ``MediaError`` if a field cannot be represented."""
        if len(self.csrc) > 15:
            raise MediaError("at most 15 CSRCs fit in an RTP header")
        if not 0 <= self.payload_type <= 127:
            raise MediaError(f"payload type {self.payload_type} out of range")
        if len(self.extension_data) % 4 or len(self.extension_data) > 4 * 0xFFFF:
            raise MediaError("extension data must be whole 32-bit words")
        if not 0 <= self.padding <= 255:
            raise MediaError("padding must be 0..255 bytes")
        b0 = (
            (self.version << 6)
            | (0x20 if self.padding else 0)
            | (0x10 if self.extension else 0)
            | len(self.csrc)
        )
        b1 = (0x80 if self.marker else 0) | self.payload_type
        parts = [
            _HEADER.pack(
                b0, b1, self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc & 0xFFFFFFFF
            )
        ]
        if self.csrc:
            parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension_profile is not None:
            parts.append(_EXT.pack(self.extension_profile, len(self.extension_data) // 4))
            parts.append(self.extension_data)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)


class RtpSender:
    """Numbers an outbound RTP stream: SSRC, sequence, timestamp, marker.

    Sequence and timestamp start at random values (RFC 3550 section 5.1) and wrap.
    The timestamp keeps counting through silence: when the caller skipped frames it
    says so with ``skipped_frames`` and the next packet starts a new talkspurt (marker).
    """

    def __init__(
        self,
        payload_type: int,
        samples_per_frame: int = 160,
        *,
        ssrc: int | None = None,
        sequence: int | None = None,
        timestamp: int | None = None,
    ) -> None:
        if not 0 <= payload_type <= 127:
            raise MediaError(f"payload type {payload_type} out of range")
        self.payload_type = payload_type
        self.samples_per_frame = samples_per_frame
        self.ssrc = secrets.randbits(32) if ssrc is None else ssrc & 0xFFFFFFFF
        self.sequence = secrets.randbits(16) if sequence is None else sequence & 0xFFFF
        self.timestamp = secrets.randbits(32) if timestamp is None else timestamp & 0xFFFFFFFF
        self._marker_next = True
        self.packets_sent = 0
        self.octets_sent = 0

    def restart(self) -> None:
        """Mark the next packet as the start of a talkspurt."""
        self._marker_next = True

    def packet(
        self, payload: bytes, *, skipped_frames: int = 0, samples: int | None = None
    ) -> RtpPacket:
        """The next packet carrying ``payload`` (one frame unless ``samples`` says otherwise)."""
        if skipped_frames < 0:
            raise MediaError("skipped_frames cannot be negative")
        if skipped_frames:
            self.timestamp = (self.timestamp + skipped_frames * self.samples_per_frame) & 0xFFFFFFFF
            self._marker_next = True
        pkt = RtpPacket(
            payload_type=self.payload_type,
            sequence=self.sequence,
            timestamp=self.timestamp,
            ssrc=self.ssrc,
            payload=payload,
            marker=self._marker_next,
        )
        self._marker_next = False
        self.sequence = (self.sequence + 1) & 0xFFFF
        step = self.samples_per_frame if samples is None else samples
        self.timestamp = (self.timestamp + step) & 0xFFFFFFFF
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return pkt

    def build(
        self, payload: bytes, *, skipped_frames: int = 0, samples: int | None = None
    ) -> bytes:
        """``packet(...).build()``: the datagram to send.

        The per-frame hot path of every outbound stream, so it packs the fixed header
        straight from the counters (no ``RtpPacket`` object, no re-validation: the
        payload type was range-checked once in ``__init__``).
        """
        if skipped_frames:
            if skipped_frames < 0:
                raise MediaError("skipped_frames cannot be negative")
            self.timestamp = (self.timestamp + skipped_frames * self.samples_per_frame) & 0xFFFFFFFF
            self._marker_next = True
        b1 = self.payload_type | 0x80 if self._marker_next else self.payload_type
        data = _HEADER.pack(0x80, b1, self.sequence, self.timestamp, self.ssrc) + payload
        self._marker_next = False
        self.sequence = (self.sequence + 1) & 0xFFFF
        step = self.samples_per_frame if samples is None else samples
        self.timestamp = (self.timestamp + step) & 0xFFFFFFFF
        self.packets_sent += 1
        self.octets_sent += len(payload)
        return data
