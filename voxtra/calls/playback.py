"""Sounds played to a call: :class:`Playback`, the handle ``call.play_file`` returns."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from voxtra.ari.errors import AriNotFound
from voxtra.ari.events import PlaybackFinished
from voxtra.calls.context import CallContext
from voxtra.calls.state import internal_id
from voxtra.errors import ConfigError, PlaybackFailed

__all__ = ["Playback", "play"]


class Playback:
    """A sound playing to the call: ``await`` it (finished), ``stop()`` it, or ignore it."""

    def __init__(self, context: CallContext, playback_id: str, media: str) -> None:
        self.context = context
        self.id = playback_id
        self.media = media
        self.finished = context.expect(PlaybackFinished, lambda e: e.playback.id == playback_id)
        """Done with the PlaybackFinished event (CallEnded if the call ends first)."""

    @property
    def done(self) -> bool:
        return self.finished.done()

    async def wait(self, timeout: float | None = None) -> None:
        """Until the playback finished (or was stopped). CallEnded if the call ends
        first; PlaybackFailed if Asterisk could not play it (a sound it does not have:
        Asterisk 22 starts such a playback, then finishes it as "failed")."""
        event = await self.context.wait(self.finished, timeout)
        if isinstance(event, PlaybackFinished) and event.playback.state == "failed":
            raise PlaybackFailed(self.context.id, event.playback.media_uri or self.media)

    def __await__(self) -> Any:
        return self.wait().__await__()

    async def stop(self) -> None:
        """Stop playing; a playback already finished is not an error."""
        with contextlib.suppress(AriNotFound):
            await self.context.ari.playbacks.stop(self.id)


async def play(context: CallContext, names: Sequence[str], *, lang: str | None = None) -> Playback:
    """Start playing ``names`` (``sound:`` prefix optional) back to back as one playback."""
    context.check_alive()
    if not names:
        raise ConfigError("play_file needs at least one sound")
    media = [n if ":" in n else f"sound:{n}" for n in names]
    playback_id = internal_id("playback")
    playback = Playback(context, playback_id, ",".join(media))
    try:
        await context.request(
            context.ari.channels.play(context.id, media, playback_id=playback_id, lang=lang)
        )
    except BaseException:
        context.forget(playback.finished)
        raise
    return playback
