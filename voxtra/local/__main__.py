"""``python -m voxtra.local prepare|serve``: the local LLM from the shell.

``prepare`` builds the llama-server chroot and fetches the weights (both cached under
``~/.cache/voxtra``; ``--base-tarball`` starts the chroot from a sid chroot tarball such
as the Asterisk sandbox's, ~5 s instead of ~28 s of debootstrap). ``serve`` runs the
server in the foreground for your own app (``OpenAILLM(base_url=..., tool_mode="json")``)
until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

from voxtra.errors import VoxtraError
from voxtra.local import LocalLLM


def _log(message: str) -> None:
    print(f"[local-llm] {message}", file=sys.stderr, flush=True)


async def _serve(local: LocalLLM) -> None:
    await local.start()
    try:
        print(f"llama-server ready: base_url={local.server.base_url} model={local.spec.filename}")
        print("(Ctrl-C stops it)", flush=True)
        await asyncio.Event().wait()
    finally:
        await local.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m voxtra.local")
    parser.add_argument("action", choices=["prepare", "serve"])
    parser.add_argument("--base-tarball", type=Path, default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    local = LocalLLM(threads=args.threads)
    try:
        local.prepare(args.base_tarball, log=_log)
        if args.action == "serve":
            with contextlib.suppress(KeyboardInterrupt):
                asyncio.run(_serve(local))
    except VoxtraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
