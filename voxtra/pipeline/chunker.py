"""Cut a streamed LLM answer into speakable pieces as soon as each one is complete.

TTS engines sound better on whole clauses and start faster on short ones, so the first
sentence should reach TTS while the LLM is still writing the second. A piece ends at
``. ! ? ; :`` followed by white space, at a newline, at a comma once the piece is long
enough, or at white space once it is far too long. A full stop does not end a piece
after a known abbreviation ("Dr.", "e.g."), inside a number ("3.5"), or after a list
number at the start of a piece ("1. "). A boundary is only decided once the next
character is known, so "3." waits for the "5".
"""

from __future__ import annotations

__all__ = ["ABBREVIATIONS", "SentenceChunker"]

ABBREVIATIONS = frozenset(
    {
        "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "etc", "no",
        "e.g", "i.e", "a.m", "p.m", "approx", "dept", "inc", "ltd", "co", "jan", "feb",
        "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "u.s",
        "fig", "ave", "blvd", "rd", "min", "max", "tel", "ext",
    }
)  # fmt: skip
_CLOSERS = "\"')]}\u00bb\u201d\u2019"
_STRONG = ".!?"
_WEAK = ";:"


class SentenceChunker:
    """Push text deltas, get back finished chunks; ``flush()`` returns the tail.

    ``min_comma_chars``: a comma ends a piece only once it holds that many characters.
    ``max_chars``: a piece longer than this is cut at its last space.
    """

    def __init__(self, *, min_comma_chars: int = 40, max_chars: int = 240) -> None:
        if min_comma_chars < 1 or max_chars < 16:
            raise ValueError("min_comma_chars must be >= 1 and max_chars >= 16")
        self.min_comma_chars = min_comma_chars
        self.max_chars = max_chars
        self._buf = ""
        self._scan = 0

    def push(self, text: str) -> list[str]:
        """Add a delta of the streamed text; return the pieces it completed."""
        self._buf += text
        out: list[str] = []
        while True:
            cut = self._find_cut()
            if cut is None:
                break
            self._emit(self._buf[:cut], out)
            self._buf = self._buf[cut:]
            self._scan = 0
        return out

    def flush(self) -> list[str]:
        """End of the stream: whatever is left is the last piece."""
        out: list[str] = []
        self._emit(self._buf, out)
        self._buf = ""
        self._scan = 0
        return out

    def reset(self) -> None:
        """Forget the buffered text (after a barge-in)."""
        self._buf = ""
        self._scan = 0

    @staticmethod
    def _emit(piece: str, out: list[str]) -> None:
        piece = piece.strip()
        if any(ch.isalnum() for ch in piece):
            out.append(piece)

    def _find_cut(self) -> int | None:
        """End index of the first complete piece in the buffer, or None to wait."""
        buf = self._buf
        n = len(buf)
        i = self._scan
        while i < n:
            ch = buf[i]
            if ch == "\n":
                return i + 1
            if ch in _STRONG or ch in _WEAK or ch == ",":
                j = i + 1
                if ch in _STRONG:
                    while j < n and (buf[j] in _CLOSERS or buf[j] in _STRONG):
                        j += 1
                if j >= n:
                    self._scan = i  # need the next character to decide
                    return None
                if buf[j].isspace() and self._ends_piece(buf, i, ch):
                    return j
            if i >= self.max_chars:
                space = buf.rfind(" ", 0, i)
                if space > 0:
                    return space + 1
            i += 1
        self._scan = n
        if n > self.max_chars:
            space = buf.rfind(" ", 0, n)
            if space > 0:
                return space + 1
        return None

    def _ends_piece(self, buf: str, i: int, ch: str) -> bool:
        if ch == ",":
            return len(buf[:i].strip()) >= self.min_comma_chars
        if ch != ".":
            return True
        start = i
        while start > 0 and not buf[start - 1].isspace():
            start -= 1
        token = buf[start:i].lstrip(_CLOSERS + "([{").lower()
        if token in ABBREVIATIONS:
            return False
        # "1. First step" at the start of a piece is a list number, not a sentence.
        return not (token.isdigit() and not buf[:start].strip())
