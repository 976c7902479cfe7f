"""G.711 mu-law and A-law, bit-exact with CPython's (removed in 3.13) ``audioop``.

Per-sample Python is far too slow for hundreds of calls, so every conversion is a
numpy table lookup: 256 entries to decode, 65536 (one per int16 value) to encode.
The tables are computed once at import by vectorised versions of the classic
segment/quantisation rules. The ``*_pure`` functions are the same rules one sample
at a time; they exist only as the slow baseline for ``bench/media_path.py``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from voxtra.errors import MediaError
from voxtra.media.frames import AudioChunk, Codec

__all__ = [
    "alaw_to_pcm16",
    "alaw_to_pcm16_pure",
    "decode",
    "decode_table",
    "encode",
    "encode_table",
    "pcm16_to_alaw",
    "pcm16_to_alaw_pure",
    "pcm16_to_ulaw",
    "pcm16_to_ulaw_pure",
    "to_pcm16",
    "ulaw_to_pcm16",
    "ulaw_to_pcm16_pure",
]

_I16 = np.dtype("<i2")

# Upper bounds of the eight segments, in the reduced-precision domain each law works in.
_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], np.int32)
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], np.int32)
_ULAW_CLIP = 8159
_ULAW_BIAS14 = 0x21  # the 0x84 bias of 16-bit mu-law, scaled to 14 bits


def _all_int16() -> npt.NDArray[np.int32]:
    """Every int16 value, ordered by its uint16 bit pattern (the encode table index)."""
    return np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.int16).astype(np.int32)


def _build_ulaw_encode() -> npt.NDArray[np.uint8]:
    x = _all_int16() >> 2  # mu-law quantises 14-bit magnitude
    mask = np.where(x < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(x), _ULAW_CLIP) + _ULAW_BIAS14
    seg = np.searchsorted(_ULAW_SEG_END, mag, side="left")
    code = (seg << 4) | ((mag >> (seg + 1)) & 0xF)
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


def _build_alaw_encode() -> npt.NDArray[np.uint8]:
    x = _all_int16() >> 3  # A-law quantises 13-bit magnitude
    neg = x < 0
    mask = np.where(neg, 0x55, 0xD5)
    mag = np.where(neg, -x - 1, x)
    seg = np.searchsorted(_ALAW_SEG_END, mag, side="left")
    shift = np.where(seg < 2, 1, seg)
    code = (seg << 4) | ((mag >> shift) & 0xF)
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


def _build_ulaw_decode() -> npt.NDArray[np.int16]:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0xF) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(_I16)


def _build_alaw_decode() -> npt.NDArray[np.int16]:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    seg = (a & 0x70) >> 4
    t = ((a & 0xF) << 4) + np.where(seg == 0, 8, 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(_I16)


_ULAW_ENC = _build_ulaw_encode()
_ALAW_ENC = _build_alaw_encode()
_ULAW_DEC = _build_ulaw_decode()
_ALAW_DEC = _build_alaw_decode()
_ULAW_ENC.setflags(write=False)
_ALAW_ENC.setflags(write=False)
_ULAW_DEC.setflags(write=False)
_ALAW_DEC.setflags(write=False)


def decode_table(codec: Codec) -> npt.NDArray[np.int16]:
    """The 256-entry decode table of ``codec`` (read-only): ``table[code]`` is its PCM16.

    For callers that decode whole arrays of frames at once (``voxtra.media.engine``).
    """
    if codec is Codec.ULAW:
        return _ULAW_DEC
    if codec is Codec.ALAW:
        return _ALAW_DEC
    raise MediaError(f"no G.711 table for {codec}")


def encode_table(codec: Codec) -> npt.NDArray[np.uint8]:
    """The 65,536-entry encode table of ``codec`` (read-only), indexed by the PCM16
    sample's bit pattern as uint16."""
    if codec is Codec.ULAW:
        return _ULAW_ENC
    if codec is Codec.ALAW:
        return _ALAW_ENC
    raise MediaError(f"no G.711 table for {codec}")


def _check_pcm(data: bytes) -> None:
    if len(data) % 2:
        raise MediaError(f"PCM16 data has an odd length ({len(data)} bytes)")


def pcm16_to_ulaw(data: bytes) -> bytes:
    """Encode PCM16 little-endian to mu-law (one byte per sample)."""
    _check_pcm(data)
    out: bytes = _ULAW_ENC[np.frombuffer(data, dtype="<u2")].tobytes()
    return out


def pcm16_to_alaw(data: bytes) -> bytes:
    """Encode PCM16 little-endian to A-law (one byte per sample)."""
    _check_pcm(data)
    out: bytes = _ALAW_ENC[np.frombuffer(data, dtype="<u2")].tobytes()
    return out


def ulaw_to_pcm16(data: bytes) -> bytes:
    """Decode mu-law to PCM16 little-endian."""
    return _ULAW_DEC[np.frombuffer(data, dtype=np.uint8)].tobytes()


def alaw_to_pcm16(data: bytes) -> bytes:
    """Decode A-law to PCM16 little-endian."""
    return _ALAW_DEC[np.frombuffer(data, dtype=np.uint8)].tobytes()


def to_pcm16(chunk: AudioChunk) -> AudioChunk:
    """The chunk as PCM16 at its own rate (a no-op for PCM16)."""
    if chunk.codec is Codec.PCM16:
        return chunk
    dec = ulaw_to_pcm16 if chunk.codec is Codec.ULAW else alaw_to_pcm16
    return AudioChunk(dec(chunk.data), chunk.sample_rate, Codec.PCM16)


def encode(chunk_pcm: AudioChunk, codec: Codec) -> AudioChunk:
    """Encode a PCM16 chunk to ``codec``; G.711 needs 8 kHz input (resample first)."""
    if chunk_pcm.codec is not Codec.PCM16:
        if chunk_pcm.codec is codec:
            return chunk_pcm
        chunk_pcm = to_pcm16(chunk_pcm)
    if codec is Codec.PCM16:
        return chunk_pcm
    if chunk_pcm.sample_rate != 8000:
        raise MediaError(f"{codec} needs 8000 Hz PCM, got {chunk_pcm.sample_rate} Hz")
    enc = pcm16_to_ulaw if codec is Codec.ULAW else pcm16_to_alaw
    return AudioChunk(enc(chunk_pcm.data), 8000, codec)


def decode(data: bytes, codec: Codec) -> bytes:
    """PCM16 bytes from ``data`` in ``codec`` (PCM16 is returned unchanged)."""
    if codec is Codec.ULAW:
        return ulaw_to_pcm16(data)
    if codec is Codec.ALAW:
        return alaw_to_pcm16(data)
    return data


# --- per-sample reference: slow on purpose, the benchmark's baseline -----------------


def _ulaw_sample(s: int) -> int:
    x = s >> 2
    mask = 0x7F if x < 0 else 0xFF
    mag = min(abs(x), _ULAW_CLIP) + _ULAW_BIAS14
    seg = 0
    while seg < 8 and mag > int(_ULAW_SEG_END[seg]):
        seg += 1
    code = 0x7F if seg >= 8 else (seg << 4) | ((mag >> (seg + 1)) & 0xF)
    return code ^ mask


def _alaw_sample(s: int) -> int:
    x = s >> 3
    mask, mag = (0x55, -x - 1) if x < 0 else (0xD5, x)
    seg = 0
    while seg < 8 and mag > int(_ALAW_SEG_END[seg]):
        seg += 1
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((mag >> (1 if seg < 2 else seg)) & 0xF)) ^ mask


def _ulaw_decode_sample(code: int) -> int:
    u = ~code & 0xFF
    t = (((u & 0xF) << 3) + 0x84) << ((u & 0x70) >> 4)
    return 0x84 - t if u & 0x80 else t - 0x84


def _alaw_decode_sample(code: int) -> int:
    a = code ^ 0x55
    seg = (a & 0x70) >> 4
    t = ((a & 0xF) << 4) + (8 if seg == 0 else 0x108)
    if seg > 1:
        t <<= seg - 1
    return t if a & 0x80 else -t


def _samples(data: bytes) -> list[int]:
    _check_pcm(data)
    return [int.from_bytes(data[i : i + 2], "little", signed=True) for i in range(0, len(data), 2)]


def _pack(values: list[int]) -> bytes:
    return b"".join(v.to_bytes(2, "little", signed=True) for v in values)


def pcm16_to_ulaw_pure(data: bytes) -> bytes:
    """Per-sample mu-law encoder (benchmark baseline only)."""
    return bytes(_ulaw_sample(s) for s in _samples(data))


def pcm16_to_alaw_pure(data: bytes) -> bytes:
    """Per-sample A-law encoder (benchmark baseline only)."""
    return bytes(_alaw_sample(s) for s in _samples(data))


def ulaw_to_pcm16_pure(data: bytes) -> bytes:
    """Per-sample mu-law decoder (benchmark baseline only)."""
    return _pack([_ulaw_decode_sample(c) for c in data])


def alaw_to_pcm16_pure(data: bytes) -> bytes:
    """Per-sample A-law decoder (benchmark baseline only)."""
    return _pack([_alaw_decode_sample(c) for c in data])
