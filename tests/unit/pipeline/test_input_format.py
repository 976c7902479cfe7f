"""Caller audio is normalised once, at the pipeline's input.

Every inbound frame is converted (decoded, resampled) once to PCM16 at the STT's rate,
and that same frame is what the VAD judges, what the turn detector measures and what
the STT stream is sent. Before, the VAD and the STT each got the wire frame (u-law at
8 kHz) and decoded it again, and the STT resampled it with a converter of its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from voxtra.media.convert import ChunkConverter
from voxtra.media.frames import AudioChunk, Codec
from voxtra.pipeline.pipeline import VoicePipeline
from voxtra.pipeline.testing import MemoryMediaIO, silence_frames, tone_frames
from voxtra.pipeline.turn import frame_energy_db
from voxtra.providers.base import Transcript


class RecordingVAD:
    """A VAD (energy threshold) that keeps every frame it was asked about."""

    name = "recording-vad"

    def __init__(self) -> None:
        self.seen: list[AudioChunk] = []

    def session(self) -> RecordingVAD:
        return self

    def is_speech(self, chunk: AudioChunk) -> bool:
        self.seen.append(chunk)
        return frame_energy_db(chunk) >= -35.0


class RecordingStream:
    def __init__(self) -> None:
        self.sent: list[AudioChunk] = []
        self._done = anyio.Event()

    async def send(self, chunk: AudioChunk) -> None:
        self.sent.append(chunk)

    async def end_of_speech(self) -> None:
        self._done.set()

    async def close(self) -> None:
        self._done.set()

    async def transcripts(self) -> AsyncIterator[Transcript]:
        await self._done.wait()
        yield Transcript("heard", is_final=True)


class RecordingSTT:
    """An STT that records what its stream was sent; ``sample_rate`` as given."""

    name = "recording-stt"

    def __init__(self, sample_rate: int | None) -> None:
        if sample_rate is not None:
            self.sample_rate = sample_rate
        self.streams: list[RecordingStream] = []

    async def stream(self) -> RecordingStream:
        self.streams.append(RecordingStream())
        return self.streams[-1]


async def converse(stt: RecordingSTT, vad: RecordingVAD, media: MemoryMediaIO) -> None:
    p = VoicePipeline(stt, vad=vad, stt_preroll_ms=None)
    with anyio.fail_after(10):
        async with p.attach(media, clock=media.clock):
            media.inject(tone_frames(400, level_db=-15, codec=media.codec))
            media.inject(silence_frames(800, codec=media.codec))
            assert await p.listen(5) is not None
            media.hangup()


@pytest.mark.parametrize(("wire", "stt_rate"), [(Codec.ULAW, 16000), (Codec.ALAW, 8000)])
async def test_vad_and_stt_get_the_same_pcm16_frame_at_the_stt_rate(
    wire: Codec, stt_rate: int
) -> None:
    media = MemoryMediaIO(codec=wire, sample_rate=8000)
    stt, vad = RecordingSTT(stt_rate), RecordingVAD()
    await converse(stt, vad, media)
    [stream] = stt.streams
    assert len(vad.seen) >= 40 and stream.sent
    assert {(c.codec, c.sample_rate) for c in vad.seen} == {(Codec.PCM16, stt_rate)}
    assert {len(c.data) for c in vad.seen} == {stt_rate // 50 * 2}  # whole 20 ms frames
    # converted once: the STT is sent the very frames the VAD judged, in order (joined
    # into pieces of ``stt_batch_ms``)
    sent = b"".join(c.data for c in stream.sent)
    judged = b"".join(c.data for c in vad.seen)
    assert len(sent) >= 30 * len(vad.seen[0].data) and judged.startswith(sent)
    assert {(c.codec, c.sample_rate) for c in stream.sent} == {(Codec.PCM16, stt_rate)}


async def test_without_an_stt_rate_frames_keep_the_call_rate_as_pcm16() -> None:
    media = MemoryMediaIO(codec=Codec.ULAW, sample_rate=8000)
    stt, vad = RecordingSTT(None), RecordingVAD()
    await converse(stt, vad, media)
    assert {(c.codec, c.sample_rate) for c in vad.seen} == {(Codec.PCM16, 8000)}
    assert {(c.codec, c.sample_rate) for c in stt.streams[0].sent} == {(Codec.PCM16, 8000)}


async def test_input_rate_overrides_the_stt_rate() -> None:
    media = MemoryMediaIO(codec=Codec.PCM16, sample_rate=16000)
    vad = RecordingVAD()
    p = VoicePipeline(RecordingSTT(16000), vad=vad, input_rate=8000)
    with anyio.fail_after(10):
        async with p.attach(media, clock=media.clock):
            media.inject(tone_frames(200, level_db=-15, codec=Codec.PCM16, sample_rate=16000))
            await media.wait_until(lambda: len(vad.seen) >= 10, timeout=5)
            media.hangup()
    assert {(c.codec, c.sample_rate, len(c.data)) for c in vad.seen} == {(Codec.PCM16, 8000, 320)}


class ConvertingMedia(MemoryMediaIO):
    """Media that converts its inbound frames itself when asked, as a transport does."""

    def __init__(self) -> None:
        super().__init__(codec=Codec.ULAW, sample_rate=8000)
        self.formats: list[tuple[Codec, int]] = []
        self.delivered: list[AudioChunk] = []
        self._conv: ChunkConverter | None = None

    def set_inbound_format(self, codec: Codec, rate: int) -> None:
        self.formats.append((codec, rate))
        wire = (codec, rate) == (Codec.ULAW, 8000)
        self._conv = None if wire else ChunkConverter(codec, rate, source_rate=8000)

    @property
    def inbound_format(self) -> tuple[Codec, int]:
        return self.formats[-1] if self.formats else (Codec.ULAW, 8000)

    async def frames(self) -> AsyncIterator[AudioChunk]:
        async for frame in super().frames():
            if self._conv is not None:
                frame = self._conv.convert(frame)
            self.delivered.append(frame)
            yield frame


async def test_a_converting_transport_is_asked_for_the_format_and_restored() -> None:
    media = ConvertingMedia()
    stt, vad = RecordingSTT(16000), RecordingVAD()
    await converse(stt, vad, media)
    # asked once for PCM16 at the STT's rate, and given its own format back at the end
    assert media.formats == [(Codec.PCM16, 16000), (Codec.ULAW, 8000)]
    # the transport's frames went through untouched: nothing converted twice
    converted = [f for f in media.delivered if f.codec is Codec.PCM16]
    assert len(converted) >= 40
    assert [id(f) for f in vad.seen] == [id(f) for f in converted][: len(vad.seen)]


@pytest.mark.parametrize(("batch_ms", "frames_per_piece"), [(100.0, 5), (0.0, 1)])
async def test_the_stt_gets_the_audio_in_pieces_of_stt_batch_ms(
    batch_ms: float, frames_per_piece: int
) -> None:
    """One message per ``stt_batch_ms`` of caller audio, not one per 20 ms frame: each
    is a WebSocket message to a cloud STT (issue 15). The end of speech sends the rest."""
    media = MemoryMediaIO(codec=Codec.ULAW, sample_rate=8000)
    stt, vad = RecordingSTT(8000), RecordingVAD()
    p = VoicePipeline(stt, vad=vad, stt_preroll_ms=None, stt_batch_ms=batch_ms)
    with anyio.fail_after(10):
        async with p.attach(media, clock=media.clock):
            await media.wait_until(lambda: bool(stt.streams and stt.streams[0].sent), 5)
            media.inject(tone_frames(400, level_db=-15))
            media.inject(silence_frames(800))
            assert await p.listen(5) is not None
            media.hangup()
    frame = 320  # PCM16, 8 kHz, 20 ms
    sizes = [len(c.data) for c in stt.streams[0].sent]
    piece = frames_per_piece * frame
    assert len(sizes) >= 40 // frames_per_piece  # 400 ms of tone, 600 ms of silence
    assert all(0 < n <= piece and n % frame == 0 for n in sizes)
    # the first two (the stream opening mid-batch) and the last (end of speech) may be short
    assert sizes.count(piece) >= len(sizes) - 3
    sent = b"".join(c.data for c in stt.streams[0].sent)
    assert b"".join(c.data for c in vad.seen).startswith(sent)
