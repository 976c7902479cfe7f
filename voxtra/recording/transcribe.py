"""Transcribe a recorded file with the app's STT (``call.record(..., transcribe=True)``).

The file is read as the STT would hear the call: 20 ms PCM16 frames at the STT's own
``sample_rate`` (converted once), fed as fast as the engine takes them, with an end of
speech after every pause of ``pause_ms`` so an engine that finalises per utterance
(pocketsphinx, Whisper) gives one final per sentence. The finals are joined in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import wave
from pathlib import Path

from voxtra.errors import RecordingError
from voxtra.media.convert import ChunkConverter
from voxtra.media.frames import AudioChunk, Codec
from voxtra.pipeline.turn import frame_energy_db
from voxtra.providers.base import STT

__all__ = ["transcribe_file"]

SPEECH_DB = -45.0
"""A frame at least this loud counts as speech when looking for pauses (phone speech
sits around -30 to -20 dBFS; line noise well below -50)."""


async def transcribe_file(
    path: str | Path, stt: STT, *, pause_ms: float = 600.0, timeout: float = 60.0
) -> str:
    """The text of the WAV file at ``path`` as ``stt`` recognises it ("" for silence).

    Raises :class:`~voxtra.errors.RecordingError` for a file that is not 16-bit PCM
    WAV, or when the engine gives no final within ``timeout`` seconds.
    """
    frames, rate = await asyncio.to_thread(_read_wav, Path(path))
    target = getattr(stt, "sample_rate", None)
    converter = ChunkConverter(Codec.PCM16, int(target) if target else rate, source_rate=rate)
    stream = await stt.stream()
    finals: list[str] = []

    async def collect() -> None:
        async for transcript in stream.transcripts():
            if transcript.is_final and transcript.text.strip():
                finals.append(transcript.text.strip())

    reader = asyncio.ensure_future(collect())
    try:
        step = rate // 50 * 2  # 20 ms of PCM16
        silent_ms = 0.0
        spoke = False
        for start in range(0, len(frames), step):
            chunk = AudioChunk(frames[start : start + step], rate, Codec.PCM16)
            if len(chunk.data) < step:
                break
            loud = frame_energy_db(chunk) >= SPEECH_DB
            converted = converter.convert(chunk)
            if converted.data:
                await stream.send(converted)
            if loud:
                spoke, silent_ms = True, 0.0
            elif spoke:
                silent_ms += 20.0
                if silent_ms >= pause_ms:
                    await stream.end_of_speech()
                    spoke = False
            await asyncio.sleep(0)  # a long file must not hold the event loop
        if spoke:
            await stream.end_of_speech()
        await stream.close()
        await asyncio.wait_for(reader, timeout)
    except TimeoutError:
        raise RecordingError(f"{stt.name} gave no transcript of {path} in {timeout} s") from None
    finally:
        if not reader.done():
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
    return " ".join(finals)


def _read_wav(path: Path) -> tuple[bytes, int]:
    try:
        with wave.open(str(path), "rb") as wav:
            if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
                raise RecordingError(f"{path}: transcription needs 16-bit mono PCM WAV")
            return wav.readframes(wav.getnframes()), wav.getframerate()
    except (wave.Error, EOFError) as exc:
        raise RecordingError(f"{path}: not a WAV file Voxtra can read: {exc}") from exc
