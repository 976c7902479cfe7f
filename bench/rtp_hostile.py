"""Cost of hostile RTP on the inbound path (issue 16): jump packets, converting reader.

Feeds N packets whose sequence number jumps ahead by ``--step`` (250: the issue's
attack; 90: a gap the jitter buffer still counts as loss) into one RtpTransport's
inbound path (``_datagram``, no socket: the source check is tested elsewhere), with a
reader converting to PCM16 at 16 kHz, then runs the tick's batch conversion once and
reports the frames it produced and the time it took.

    python bench/rtp_hostile.py [--packets 8 24 64] [--step 250] [--burst 1]

``--burst 4`` sends each jump as 4 packets in sequence, the most a jump can make the
jitter buffer emit (a gap is given up once 3 packets wait behind it): with ``--step
60`` that is the worst case per packet now (10 concealment frames per 4 packets).

Measured before the fix (2 cores, shared): 8 packets of +250 made 2,001 frames and
142 ms in one tick, 64 made 16,001 frames and 7.3 s. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import time

from voxtra.media.frames import Codec
from voxtra.media.pacer import Ticker
from voxtra.media.rtp import RtpPacket
from voxtra.media.rtp_transport import RtpTransport


def run(packets: int, step: int, burst: int = 1) -> tuple[int, float, float]:
    tr = RtpTransport("ulaw", remote=("127.0.0.1", 9), ticker=Ticker())
    tr.set_inbound_format(Codec.PCM16, 16000)
    seq = 1000
    tr._datagram(RtpPacket(0, seq, 0, 7, b"\xff" * 160).build())
    tr._batch.after_tick()
    t0 = time.perf_counter()
    for i in range(packets):
        seq = (seq + (step if i % burst == 0 else 1)) & 0xFFFF
        tr._datagram(RtpPacket(0, seq, 0, 7, b"\xff" * 160).build())
    t1 = time.perf_counter()
    tr._batch.after_tick()
    t2 = time.perf_counter()
    return tr.stats.frames_in - 1, (t1 - t0) * 1000, (t2 - t1) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, nargs="*", default=[8, 24, 64])
    parser.add_argument("--step", type=int, default=250)
    parser.add_argument("--burst", type=int, default=1)
    args = parser.parse_args()
    for n in args.packets:
        run(n, args.step, args.burst)  # warm up (numpy, filter tables)
        frames, parse_ms, batch_ms = run(n, args.step, args.burst)
        print(
            f"{n:4d} packets of +{args.step} (bursts of {args.burst}): {frames:6d} frames out, "
            f"inbound {parse_ms:7.2f} ms, tick batch {batch_ms:8.2f} ms"
        )


if __name__ == "__main__":
    main()
