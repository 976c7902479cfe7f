"""A pocketsphinx decoder in its own process, so its GIL-holding search never stalls the
event loop. Started by ``PocketSphinxSTT`` as ``python -m voxtra.providers._sphinx_worker``
(a plain subprocess, not ``multiprocessing``: spawn would re-run the user's main script).

Protocol on stdin/stdout: one JSON line of configuration in, ``{"ok": true}`` or an error
line out; then per utterance a 4-byte big-endian length plus that much 16 kHz PCM16 in,
one JSON line (``{"text", "prob"}`` or ``{"error", "kind"}``) out. EOF on stdin ends it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any, BinaryIO


def _reply(out: BinaryIO, message: dict[str, Any]) -> None:
    out.write(json.dumps(message).encode() + b"\n")
    out.flush()


def main() -> None:
    # Ctrl+C in the terminal reaches the whole process group: the parent decides when a
    # worker ends (by closing its stdin), so the worker ignores SIGINT.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The protocol owns the real stdout; anything the C library prints goes to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    stdin = sys.stdin.buffer
    from voxtra.providers.pocketsphinx_stt import _Recognizer

    config = json.loads(stdin.readline() or b"{}")
    try:
        recognizer = _Recognizer(config["jsgf"], config["options"], config["vocabulary"])
    except LookupError as exc:
        _reply(out, {"error": str(exc), "kind": "config"})
        return
    except Exception as exc:
        _reply(out, {"error": f"{type(exc).__name__}: {exc}", "kind": "runtime"})
        return
    _reply(out, {"ok": True})
    while len(head := stdin.read(4)) == 4:
        pcm = stdin.read(int.from_bytes(head, "big"))
        try:
            text, prob = recognizer.decode(pcm)
        except Exception as exc:
            _reply(out, {"error": f"{type(exc).__name__}: {exc}", "kind": "runtime"})
            continue
        _reply(out, {"text": text, "prob": prob})


if __name__ == "__main__":
    main()
