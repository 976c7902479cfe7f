"""G.711 must be bit-exact with audioop (CPython 3.11's C implementation) everywhere."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from voxtra.errors import MediaError
from voxtra.media import g711
from voxtra.media.frames import AudioChunk, Codec

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

ALL_PCM = np.arange(-32768, 32768, dtype="<i2").tobytes()
ALL_CODES = bytes(range(256))


def test_ulaw_encode_matches_audioop_for_every_int16() -> None:
    assert g711.pcm16_to_ulaw(ALL_PCM) == audioop.lin2ulaw(ALL_PCM, 2)


def test_alaw_encode_matches_audioop_for_every_int16() -> None:
    assert g711.pcm16_to_alaw(ALL_PCM) == audioop.lin2alaw(ALL_PCM, 2)


def test_ulaw_decode_matches_audioop_for_every_code() -> None:
    assert g711.ulaw_to_pcm16(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)


def test_alaw_decode_matches_audioop_for_every_code() -> None:
    assert g711.alaw_to_pcm16(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)


def test_pure_reference_matches_audioop() -> None:
    # Every code, and a stride through all int16 values (the full sweep is slow in pure Python).
    sample = np.arange(-32768, 32768, 7, dtype="<i2").tobytes() + ALL_PCM[-4:]
    assert g711.pcm16_to_ulaw_pure(sample) == audioop.lin2ulaw(sample, 2)
    assert g711.pcm16_to_alaw_pure(sample) == audioop.lin2alaw(sample, 2)
    assert g711.ulaw_to_pcm16_pure(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)
    assert g711.alaw_to_pcm16_pure(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)


def test_silence_codes_decode_to_zero() -> None:
    assert g711.ulaw_to_pcm16(b"\xff") == b"\x00\x00"
    assert g711.alaw_to_pcm16(b"\xd5") == b"\x08\x00"  # A-law has no exact zero
    assert g711.pcm16_to_ulaw(b"\x00\x00") == b"\xff"
    assert g711.pcm16_to_alaw(b"\x00\x00") == b"\xd5"


def test_chunk_helpers_round_trip() -> None:
    pcm = AudioChunk(np.array([0, 1000, -1000, 32767], "<i2").tobytes(), 8000, Codec.PCM16)
    u = g711.encode(pcm, Codec.ULAW)
    assert u.codec is Codec.ULAW and u.samples == 4
    back = g711.to_pcm16(u)
    assert back.codec is Codec.PCM16 and back.sample_rate == 8000
    assert back.data == audioop.ulaw2lin(audioop.lin2ulaw(pcm.data, 2), 2)
    a = g711.encode(u, Codec.ALAW)  # transcodes through PCM
    assert a.data == audioop.lin2alaw(back.data, 2)
    assert g711.encode(pcm, Codec.PCM16) is pcm
    assert g711.to_pcm16(pcm) is pcm


def test_encode_rejects_wrong_rate_and_odd_length() -> None:
    with pytest.raises(MediaError):
        g711.encode(AudioChunk(b"\x00\x00" * 320, 16000, Codec.PCM16), Codec.ULAW)
    with pytest.raises(MediaError):
        g711.pcm16_to_ulaw(b"\x00")
