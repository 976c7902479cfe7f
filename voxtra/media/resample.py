"""Streaming sample-rate conversion for PCM16 frames, with per-frame output.

Live audio needs output for every input frame. libsoxr's stream API works in internal
blocks instead: measured with python-soxr 1.1 at ``HQ``, 8 -> 16 kHz gives nothing for
five 20 ms frames and then about 100 ms at once (``LQ``/``MQ`` burst too; only ``QQ``,
a cubic interpolator without a proper anti-alias filter, is smooth). Those bursts
starved the outbound pacer and cut 10 ms holes into echoed audio. So the streaming
path is a polyphase windowed-sinc FIR (numpy) that keeps its history across frames and
returns every sample as soon as it is computable: the delay is half the filter
(``taps / 2`` input samples, 2 ms at 16 kHz for ``HQ``), and it never bursts.
soxr still serves whole-buffer conversion (:func:`resample_once`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from functools import lru_cache
from math import gcd
from typing import Literal

import numpy as np
import numpy.typing as npt
import soxr

from voxtra.errors import MediaError

__all__ = [
    "SUPPORTED_RATES",
    "BatchResampler",
    "Quality",
    "StreamResampler",
    "resample_many",
    "resample_once",
]

logger = logging.getLogger(__name__)

Quality = Literal["QQ", "LQ", "MQ", "HQ", "VHQ"]
SUPPORTED_RATES = frozenset({8000, 16000, 22050, 24000, 32000, 44100, 48000})
TAPS_PER_PHASE: dict[str, int] = {"QQ": 16, "LQ": 24, "MQ": 32, "HQ": 48, "VHQ": 96}
KAISER_BETA = 8.6  # about 80 dB of stop-band attenuation
_I16_MAX = np.float32(32767)  # float32 scalars: clipping with Python floats costs 2x more
_I16_MIN = np.float32(-32768)


@lru_cache(maxsize=64)
def _phase_table(
    in_rate: int, out_rate: int, taps: int
) -> tuple[npt.NDArray[np.float32], int, int]:
    """Polyphase filter bank (L phases x ``taps``), and the ratio L/M."""
    g = gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    n = taps * up
    # Cut-off below the lower Nyquist frequency, leaving room for the transition band
    # (whose width shrinks as taps grow), so nothing above Nyquist aliases back.
    nyquist = min(in_rate, out_rate) / 2
    transition = 5.0 * in_rate / taps
    cutoff = max(nyquist - transition / 2, nyquist * 0.6)
    fc = cutoff / (in_rate * up)  # normalised to the upsampled rate
    # Centred on n/2 (not (n-1)/2): the delay is then exactly taps/2 input samples,
    # a whole number of output samples for the usual rate pairs.
    k = np.arange(n) - n / 2
    h = 2 * fc * np.sinc(2 * fc * k) * np.kaiser(n + 1, KAISER_BETA)[:n] * up
    bank = h.reshape(taps, up).T[:, ::-1]  # phase p: h[p + t*L], t reversed
    bank = bank / bank.sum(axis=1, keepdims=True)  # unity gain at DC on every phase
    return np.ascontiguousarray(bank, dtype=np.float32), up, down


class StreamResampler:
    """Resample a stream of PCM16 little-endian mono bytes from ``in_rate`` to ``out_rate``.

    Every call returns all output computable from the input so far (about
    ``duration * out_rate`` samples, never a burst). Equal rates pass bytes through.
    ``quality`` sets the filter length (see ``TAPS_PER_PHASE``).
    """

    dense_max_down = 4
    """Up to this decimation factor all phases are computed by one matrix product (0: never)."""

    def __init__(self, in_rate: int, out_rate: int, quality: Quality = "HQ") -> None:
        for rate in (in_rate, out_rate):
            if rate not in SUPPORTED_RATES:
                raise MediaError(f"unsupported sample rate {rate} Hz")
        if quality not in TAPS_PER_PHASE:
            raise MediaError(f"unknown resampler quality {quality!r}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.quality: Quality = quality
        self._taps = TAPS_PER_PHASE[quality]
        self._pending = b""  # an odd trailing byte waiting for its pair
        self._bank, self._up, self._down = _phase_table(in_rate, out_rate, self._taps)
        self._bank_t = np.ascontiguousarray(self._bank.T)  # taps x phases, for matmul
        self._plans: dict[
            tuple[int, int], tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]
        ] = {}
        self.reset()

    @property
    def passthrough(self) -> bool:
        return self.in_rate == self.out_rate

    @property
    def aligned(self) -> bool:
        """Input so far ends on an output sample: each whole frame in gives whole frames out."""
        return not self._pending and self._next == self._consumed * self._up

    @property
    def delay_samples(self) -> float:
        """Filter delay in input samples."""
        return self._taps / 2

    def reset(self) -> None:
        """Forget filter state and buffered input (e.g. after a barge-in flush)."""
        self._pending = b""
        self._history = np.zeros(self._taps - 1, dtype=np.float32)
        self._consumed = 0  # input samples before the start of ``_history`` + taps - 1
        self._next = 0  # next output position, in upsampled samples

    def process(self, pcm: bytes) -> bytes:
        """Feed PCM16 bytes, get the resampled PCM16 bytes they make available."""
        if self.passthrough:
            return pcm
        data = self._pending + pcm
        cut = len(data) - (len(data) % 2)
        self._pending = data[cut:]
        if not cut:
            return b""
        x = np.frombuffer(data[:cut], dtype="<i2").astype(np.float32)
        return self._run(x)

    def _run(self, x: npt.NDArray[np.float32]) -> bytes:
        taps, up, down = self._taps, self._up, self._down
        buf = np.concatenate((self._history, x))
        total = self._consumed + len(x)  # input samples seen so far
        # output n needs input index i = pos // up, available while i < total
        last = total * up - 1
        count = (last - self._next) // down + 1 if last >= self._next else 0
        if count > 0:
            y = self._filter(buf, count)
            self._next += down * count
            np.rint(y, out=y)
            np.minimum(y, _I16_MAX, out=y)
            np.maximum(y, _I16_MIN, out=y)
            out = y.astype("<i2").tobytes()
        else:
            out = b""
        self._history = buf[len(buf) - (taps - 1) :]
        self._consumed = total
        return out

    def _filter(self, buf: npt.NDArray[np.float32], count: int) -> npt.NDArray[np.float32]:
        """The next ``count`` output samples (float) from ``buf`` (history + new input).

        Output ``n`` sits at ``pos = next % up + n * down`` in upsampled units: it is
        filter phase ``pos % up`` applied to the ``taps``-long window of ``buf`` that
        starts at row ``start + pos // up``. The windows are a strided view (no copy).
        """
        taps, up, down = self._taps, self._up, self._down
        phase0 = self._next % up
        start = self._next // up - self._consumed  # window of output 0, in ``buf``
        step = buf.strides[0]
        if up == 1 and self.dense_max_down:
            # Pure decimation: one matrix-vector product over every ``down``-th window.
            windows = np.ndarray(
                (count, taps),
                np.float32,
                buffer=buf,
                offset=start * step,
                strides=(down * step, step),
            )
            y: npt.NDArray[np.float32] = windows @ self._bank[0]
            return y
        if down <= self.dense_max_down:
            # Every phase of every window needed, in one matrix product (BLAS), then every
            # ``down``-th result: computing up to 4x too much is cheaper than a gather.
            rows = (phase0 + down * (count - 1)) // up + 1
            windows = np.ndarray(
                (rows, taps), np.float32, buffer=buf, offset=start * step, strides=(step, step)
            )
            full = (windows @ self._bank_t).ravel()
            y = full[phase0 : phase0 + down * (count - 1) + 1 : down]
            return np.ascontiguousarray(y) if down > 1 else y
        # Awkward ratios (22.05/44.1 kHz): gather the needed windows and filter rows,
        # caching the plan because live streams repeat the same frame size and phase.
        key = (count, phase0)
        plan = self._plans.get(key)
        if plan is None:
            pos = phase0 + down * np.arange(count, dtype=np.int64)
            plan = (pos // up, np.ascontiguousarray(self._bank[pos % up]))
            if len(self._plans) < 16 and count <= _MAX_PLAN_COUNT:
                self._plans[key] = plan
        rel, bank_rows = plan
        windows = np.ndarray(
            (len(buf) - taps + 1, taps), np.float32, buffer=buf, strides=(step, step)
        )
        y = np.einsum("ij,ij->i", windows[rel + start], bank_rows)
        return y

    def flush(self) -> bytes:
        """Drain the filter tail (its delay) as output; then ready for a new stream."""
        if self.passthrough:
            self._pending = b""
            return b""
        tail = self._run(np.zeros(self._taps // 2, dtype=np.float32))
        self.reset()
        return tail


_BatchKey = tuple[int, int, int, int, int, int]
_BLAS_ROWS_BUDGET = 400_000
"""Multiply-adds per matrix product. OpenBLAS goes multi-threaded above roughly twice
this, and its threads then spin on other cores: measured on 2 cores, 500 streams in
one product cost 2x the CPU of the same work in small single-threaded products."""
_TOEPLITZ: OrderedDict[_BatchKey, tuple[npt.NDArray[np.float32], int]] = OrderedDict()
"""Least recently used last. Keyed by frame length, so before the bounds below frames of
odd lengths grew it without limit in practice: 64 entries of 32 MB (2,000-byte frames)
is 2 GB. Live streams of 20 ms frames use one entry per rate pair and direction."""
_TOEPLITZ_ENTRIES = 8
_TOEPLITZ_MAX_SIZE = 1_000_000
"""Floats in one matrix (4 MB; so at most 32 MB in all). 20 ms at any supported rate
pair and quality needs at most 938,000 (44.1 -> 48 kHz at ``VHQ``; 8 -> 16 kHz at
``HQ``: 33,000); a longer frame is resampled per stream instead."""
_BLOCKS: dict[_BatchKey, tuple[npt.NDArray[np.float32], int, int, int] | None] = {}
"""Per ``_TOEPLITZ`` entry: the same filter as one small block repeated down the
diagonal (``_blocked``), or None when it does not decompose."""
_BLOCK_OUT = 16
"""Outputs per block. The whole-frame matrix is mostly zeros (8 -> 16 kHz at ``HQ``:
48 of 207 rows non-zero per column): cut into blocks of 16 outputs it is 3.8x fewer
multiply-adds (16 -> 8 kHz: 4.7x). Measured for 500 streams on this VM, both
directions: 4.3 ms of CPU per tick with the whole matrix, see docs/performance.md."""
_MAX_PLAN_COUNT = 2048
"""Outputs per frame for which ``StreamResampler`` keeps a gather plan (20 ms at 48 kHz
is 960); a longer frame is planned afresh each time rather than cached."""


def _toeplitz(rs: StreamResampler, key: _BatchKey) -> tuple[npt.NDArray[np.float32], int]:
    """The whole filter for one frame as a matrix: ``output = [history, frame] @ T``.

    About 4x the multiply-adds of the polyphase loop, but one BLAS matrix product
    over all streams' frames at once, which is what makes it cheap per stream.
    """
    cached = _TOEPLITZ.get(key)
    if cached is not None:
        _TOEPLITZ.move_to_end(key)
        return cached
    _, _, taps, n, start, phase0 = key
    up, down = rs._up, rs._down
    count = (n * up - 1 - (start * up + phase0)) // down + 1
    t = np.zeros((taps - 1 + n, count), np.float32)
    for j in range(count):
        pos = phase0 + j * down
        row = start + pos // up
        t[row : row + taps, j] = rs._bank[pos % up]
    _TOEPLITZ[key] = (t, count)
    _BLOCKS[key] = _blocked(t, count, up, down)
    while len(_TOEPLITZ) > _TOEPLITZ_ENTRIES:
        old, _ = _TOEPLITZ.popitem(last=False)
        _BLOCKS.pop(old, None)
    return t, count


def _blocked(
    t: npt.NDArray[np.float32], count: int, up: int, down: int
) -> tuple[npt.NDArray[np.float32], int, int, int] | None:
    """``t`` as one block repeated along the diagonal: (block, first row, row step, blocks).

    Output ``j`` reads input rows from ``(phase0 + j * down) // up``: every ``up``
    outputs the pattern repeats ``down`` rows further on, so a block of ``_BLOCK_OUT``
    outputs (a multiple of ``up``) is the same matrix at each step. Checked against
    ``t`` itself: anything that does not rebuild it exactly is None (use ``t``).
    """
    bo = _BLOCK_OUT - _BLOCK_OUT % up if up <= _BLOCK_OUT else up
    if bo <= 0 or count % bo or count // bo < 2:
        return None
    step = bo * down // up
    nz = np.flatnonzero(np.any(t[:, :bo] != 0, axis=1))
    if not len(nz):
        return None
    r0, span = int(nz[0]), int(nz[-1] - nz[0] + 1)
    blocks = count // bo
    if r0 + (blocks - 1) * step + span > t.shape[0]:
        return None
    block = np.ascontiguousarray(t[r0 : r0 + span, :bo])
    rebuilt = np.zeros_like(t)
    for k in range(blocks):
        rebuilt[r0 + k * step : r0 + k * step + span, k * bo : (k + 1) * bo] = block
    if not np.array_equal(rebuilt, t):
        return None
    return block, r0, step, blocks


def _toeplitz_size(rs: StreamResampler, key: _BatchKey) -> int:
    """Floats in the matrix ``_toeplitz`` would build for ``key`` (without building it)."""
    _, _, taps, n, start, phase0 = key
    count = (n * rs._up - 1 - (start * rs._up + phase0)) // rs._down + 1
    return (taps - 1 + n) * count


def resample_many(resamplers: Sequence[StreamResampler], frames: Sequence[bytes]) -> list[bytes]:
    """``[rs.process(f) for rs, f in zip(resamplers, frames)]``, many streams at once.

    For a server carrying hundreds of calls: streams in the same state (same rates,
    quality, frame length and filter phase, which live streams of whole 20 ms frames
    are) are filtered together in one matrix product; anything else falls back to
    ``process``. Results and the state left in each resampler are those of ``process``
    (to float rounding: at most 1 LSB apart).
    """
    out = [b""] * len(frames)
    groups: dict[_BatchKey, list[int]] = {}
    for i, (rs, data) in enumerate(zip(resamplers, frames, strict=True)):
        if rs.passthrough:
            out[i] = data
        elif rs._pending or not data or len(data) % 2:
            out[i] = rs.process(data)
        else:
            up = rs._up
            key = (
                rs.in_rate,
                rs.out_rate,
                rs._taps,
                len(data) // 2,
                rs._next // up - rs._consumed,
                rs._next % up,
            )
            groups.setdefault(key, []).append(i)
    for key, idx in groups.items():
        if len(idx) == 1 or (
            key not in _TOEPLITZ and _toeplitz_size(resamplers[idx[0]], key) > _TOEPLITZ_MAX_SIZE
        ):
            for i in idx:  # alone, or a frame too long to be worth a cached matrix
                out[i] = resamplers[i].process(frames[i])
            continue
        first = resamplers[idx[0]]
        t, count = _toeplitz(first, key)
        n, h, down = key[3], first._taps - 1, first._down
        buf = np.empty((len(idx), h + n), np.float32)
        buf[:, :h] = np.stack([resamplers[i]._history for i in idx])
        buf[:, h:] = np.frombuffer(b"".join([frames[i] for i in idx]), "<i2").reshape(-1, n)
        y = np.empty((len(idx), count), np.float32)
        blocked = _BLOCKS.get(key)
        if blocked is not None:
            block, r0, step, blocks = blocked
            span, bo = block.shape
            s0, s1 = buf.strides
            windows = np.ndarray(  # as in BatchResampler.process: no as_strided
                (len(idx), blocks, span), np.float32, buf, r0 * s1, (s0, step * s1, s1)
            )
            flat = np.ascontiguousarray(windows).reshape(-1, span)
            yb = y.reshape(-1, bo)
            rows = max(1, _BLAS_ROWS_BUDGET // block.size)
            for r in range(0, len(flat), rows):
                np.matmul(flat[r : r + rows], block, out=yb[r : r + rows])
        else:
            rows = max(1, _BLAS_ROWS_BUDGET // t.size)
            for r in range(0, len(idx), rows):
                np.matmul(buf[r : r + rows], t, out=y[r : r + rows])
        np.rint(y, out=y)
        np.minimum(y, _I16_MAX, out=y)
        np.maximum(y, _I16_MIN, out=y)
        data = y.astype("<i2").tobytes()
        size = 2 * count
        for j, i in enumerate(idx):
            out[i] = data[j * size : (j + 1) * size]
            rs = resamplers[i]
            rs._history = buf[j, n:]
            rs._consumed += n
            rs._next += down * count
    return out


_BATCH_BLAS_BUDGET = 250_000
"""``BatchResampler``'s multiply-adds per product: below OpenBLAS's 262,144 (its
``GEMM_MULTITHREAD_THRESHOLD`` x 65,536), so each product stays on this thread. The
media engine at N=500, three alternated pairs of runs: 341-355 us per call-second with
250,000, 354-363 with ``_BLAS_ROWS_BUDGET``, 360-379 with 130,000 (more calls), 1,443-1,857
with one product for all rows (OpenBLAS's threads spinning); rows in passes of 64 that
fit the cache, 411-429 (more numpy calls)."""


class BatchResampler:
    """Many streams resampled together, each a whole frame per call, state in one array.

    The array form of ``StreamResampler`` for streams that always move frames of
    ``frame_samples`` (20 ms): ``process(x, history)`` resamples row ``i`` of ``x``
    (int16, one stream's frame) with that stream's filter history, row ``i`` of
    ``history`` (float32, ``history_len`` wide, updated in place), and returns the
    int16 output rows. Output equals ``StreamResampler.process`` fed the same frames
    (to 1 LSB: float rounding). Nothing is made per stream: one product for all rows.
    """

    def __init__(
        self, in_rate: int, out_rate: int, frame_samples: int, quality: Quality = "HQ"
    ) -> None:
        ref = StreamResampler(in_rate, out_rate, quality)
        self.in_rate, self.out_rate = in_rate, out_rate
        self.frame_samples = frame_samples
        self.passthrough = ref.passthrough
        self.history_len = 0 if ref.passthrough else ref._taps - 1
        self.out_samples = frame_samples
        self._t: npt.NDArray[np.float32] | None = None
        self._blocked: tuple[npt.NDArray[np.float32], int, int, int] | None = None
        if ref.passthrough:
            return
        key = (in_rate, out_rate, ref._taps, frame_samples, 0, 0)
        if _toeplitz_size(ref, key) > _TOEPLITZ_MAX_SIZE:
            raise MediaError(f"a {frame_samples}-sample frame is too long to batch")
        t, count = _toeplitz(ref, key)
        if (frame_samples * out_rate) % in_rate or count * in_rate != frame_samples * out_rate:
            raise MediaError("a frame must resample to a whole number of samples")
        self._t = t
        self._blocked = _blocked(t, count, ref._up, ref._down)
        self.out_samples = count

    def new_history(self, rows: int) -> npt.NDArray[np.float32]:
        """Filter history for ``rows`` new streams (silence before their first frame)."""
        return np.zeros((rows, self.history_len), np.float32)

    def process(
        self, x: npt.NDArray[np.int16], history: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.int16]:
        """Resample each row of ``x``; ``history`` (one row per row of ``x``) moves on."""
        if self._t is None:
            return x
        rows, n = x.shape
        h = self.history_len
        buf = np.empty((rows, h + n), np.float32)
        buf[:, :h] = history
        buf[:, h:] = x
        y = np.empty((rows, self.out_samples), np.float32)
        if self._blocked is not None:
            block, r0, step, blocks = self._blocked
            span, bo = block.shape
            s0, s1 = buf.strides
            # The windows as a view made by the constructor, not as_strided (a Python
            # function of several numpy steps): 2.7 -> 0.6 us a call with hot caches,
            # and in the media bench, where each 20 ms tick starts cold, 59-70 -> 42-47
            # us a call at N=1 (three alternated pairs).
            windows = np.ndarray(
                (rows, blocks, span), np.float32, buf, r0 * s1, (s0, step * s1, s1)
            )
            flat = np.ascontiguousarray(windows).reshape(-1, span)
            yb = y.reshape(-1, bo)
            per = max(1, _BATCH_BLAS_BUDGET // block.size)
            for r in range(0, len(flat), per):
                np.matmul(flat[r : r + per], block, out=yb[r : r + per])
        else:
            t = self._t
            per = max(1, _BLAS_ROWS_BUDGET // t.size)
            for r in range(0, rows, per):
                np.matmul(buf[r : r + per], t, out=y[r : r + per])
        history[:] = buf[:, n:]
        np.rint(y, out=y)
        np.clip(y, _I16_MIN, _I16_MAX, out=y)
        return y.astype(np.int16)


def resample_once(pcm: bytes, in_rate: int, out_rate: int, quality: Quality = "HQ") -> bytes:
    """Resample a whole buffer in one call (for files and tests, not live streams)."""
    if in_rate == out_rate:
        return pcm
    x = np.frombuffer(pcm, dtype="<i2")
    out: bytes = soxr.resample(x, in_rate, out_rate, quality=quality).astype("<i2").tobytes()
    return out
