"""The operator page's sessions: a bearer token exchanged once for a signed cookie.

A browser cannot add ``Authorization: Bearer`` to a page load, an ``<audio>`` source or
an ``EventSource``, and a token in a URL ends up in access logs and browser history.
So ``POST /ui/login`` takes the token in a form body, checks it like the API does
(its SHA-256 against every configured digest, in constant time), and answers with a
cookie ``voxtra_ui``: ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other
site's page sends it), ``Secure`` over HTTPS (or when the sign-in's ``Origin`` is
https, behind a proxy), ``Path=/ui``. The cookie holds the token's name, the first 16
hex digits of its digest (a rotated token ends its sessions), a random session id and
an expiry, signed with HMAC-SHA256 under ``platform.ui_secret`` (or, unset or blank, a
random per-process key). Scopes are read from the current settings on every request,
never from the cookie.

Actions (hang up, pause, resume, log out) are POSTs that must carry the session's CSRF
token (an HMAC of its session id, put in the page) in ``X-CSRF-Token``, and, when the
browser sends ``Origin``, come from the page's own origin.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import weakref
from dataclasses import dataclass

from fastapi import Request

from voxtra.platform.api.auth import RateLimiter
from voxtra.platform.platform import Platform
from voxtra.platform.store.repository import token_digest

__all__ = ["COOKIE", "SESSION_SECONDS", "Session", "SessionKeys", "keys_of", "same_origin"]

COOKIE = "voxtra_ui"
SESSION_SECONDS = 12 * 3600
"""How long a login lasts (a working shift)."""
_DIGEST_PREFIX = 16

_KEYS: weakref.WeakKeyDictionary[Platform, SessionKeys] = weakref.WeakKeyDictionary()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in operator: the token's name and its current scopes."""

    token_name: str
    scopes: frozenset[str]
    session_id: str
    csrf: str

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


class SessionKeys:
    """Signs and checks the session cookies of one platform."""

    def __init__(self, platform: Platform) -> None:
        secret = platform.settings.ui_secret
        # A blank secret is none, as the settings read a blank optional value: its key
        # was sha256(b"voxtra-ui:"), known to all, and a token's digest (the api_tokens
        # table, a `sha256:` in the settings) was then all a forged admin session took.
        self.key = (
            hashlib.sha256(b"voxtra-ui:" + secret.get_secret_value().encode()).digest()
            if secret is not None and secret.get_secret_value().strip()
            else secrets.token_bytes(32)
        )
        self.platform = platform
        # Failed sign-ins per client address: a token has at least 16 characters, so
        # this only keeps a guesser from spending the server's time.
        self.failures = RateLimiter(rate=0.5, burst=10)

    def _mac(self, purpose: str, payload: bytes) -> bytes:
        return hmac.new(self.key, purpose.encode() + b"\x00" + payload, hashlib.sha256).digest()

    def login(self, token: str) -> tuple[str, str] | None:
        """The (token name, cookie value) of a configured token, else None."""
        digest = token_digest(token.strip())
        found: str | None = None
        for name, known, _ in self.platform.tokens:
            if hmac.compare_digest(digest, known) and found is None:
                found = name
        if found is None:
            return None
        body = json.dumps(
            {
                "n": found,
                "d": digest[:_DIGEST_PREFIX],
                "s": secrets.token_hex(16),
                "e": int(time.time()) + SESSION_SECONDS,
            },
            separators=(",", ":"),
        ).encode()
        return found, f"{_b64(body)}.{_b64(self._mac('session', body))}"

    def session(self, cookie: str | None) -> Session | None:
        """The session a cookie value stands for, if it is genuine, unexpired, and its
        token is still configured with the same digest."""
        if not cookie or "." not in cookie or len(cookie) > 1000:
            return None
        body_text, _, mac_text = cookie.partition(".")
        try:
            body, mac = _unb64(body_text), _unb64(mac_text)
            if not hmac.compare_digest(mac, self._mac("session", body)):
                return None
            data = json.loads(body)
            name, prefix, sid, expires = data["n"], data["d"], data["s"], int(data["e"])
        except (ValueError, KeyError, TypeError):
            return None
        if expires < time.time():
            return None
        for known_name, known, scopes in self.platform.tokens:
            if known_name == name and hmac.compare_digest(known[:_DIGEST_PREFIX], str(prefix)):
                return Session(name, scopes, str(sid), self.csrf(str(sid)))
        return None

    def csrf(self, session_id: str) -> str:
        return _b64(self._mac("csrf", session_id.encode()))


def keys_of(platform: Platform) -> SessionKeys:
    """The platform's session keys (made on first use)."""
    keys = _KEYS.get(platform)
    if keys is None:
        keys = _KEYS[platform] = SessionKeys(platform)
    return keys


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another origin."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")
