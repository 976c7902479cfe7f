"""MkDocs hook: show the code's Sphinx-style roles (:class:`X`) as plain code in the site.

Docstrings in ``voxtra/`` write cross references the Sphinx way (``:class:`CallBusy```,
``:meth:`~voxtra.call.SipCall.recording_offset```); mkdocstrings renders them as
Markdown, which would print the role (":class:") in front of the code. This drops the
role and, like Sphinx, shortens a ``~``-prefixed dotted name to its last part.
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|func|meth|mod|data|attr|exc|obj|const):(<code>)")
_TILDE = re.compile(r"<code>~(?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*)</code>")


def on_page_content(html: str, **kwargs: Any) -> str:
    return _TILDE.sub(r"<code>\1</code>", _ROLE.sub(r"\1", html))
