"""What a ``to`` (or a transfer target) may be, checked before anything reaches Asterisk.

Three kinds, each matched in full against a strict pattern; anything else is refused:

* an endpoint: ``PJSIP/alice`` (technology in ``platform.endpoint_technologies``), or
  ``Local/100@context`` with the context in ``platform.local_contexts``;
* a number in E.164 form (``+4930123456``), dialled through ``platform.number_template``
  (``PJSIP/{number}@trunk``);
* a SIP URI (``sip:bob@example.com``), sent out through ``platform.sip_uri_endpoint``.

The template and the endpoint come from the settings (the operator's); only the
validated parts come from the request. No request text is ever a dialplan application,
a channel variable name or a file path.

On Twilio (:func:`twilio_target`) a ``to`` is what Twilio's ``calls.create`` and
``<Dial>`` take, each matched in full: an E.164 number, a SIP URI, or ``client:name``
(a Twilio Client identity); the caller id (:func:`twilio_caller_id`) is an E.164
number (one of the account's). Endpoints and ``exten@context`` mean nothing there.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from voxtra.config import PlatformSettings
from voxtra.errors import VoxtraError

__all__ = [
    "InvalidTarget",
    "allowed_address",
    "check_webhook_url",
    "dial_target",
    "host_address",
    "transfer_target",
    "twilio_caller_id",
    "twilio_target",
]

_NUMBER = re.compile(r"\+[1-9][0-9]{6,14}")
_SIP_URI = re.compile(
    r"sips?:[A-Za-z0-9_.+!~*'-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*(?::[0-9]{1,5})?"
)
_ENDPOINT = re.compile(r"([A-Za-z0-9]{1,16})/([A-Za-z0-9_.+-]{1,80})")
_LOCAL = re.compile(r"Local/([A-Za-z0-9_+*#-]{1,80})@([A-Za-z0-9_-]{1,80})", re.IGNORECASE)
_EXTEN_AT_CONTEXT = re.compile(r"([A-Za-z0-9_+*#-]{1,80})@([A-Za-z0-9_-]{1,80})")
_CLIENT = re.compile(r"client:[A-Za-z0-9_.-]{1,121}")


class InvalidTarget(VoxtraError):
    """A ``to`` or transfer target that is none of the accepted kinds; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message


def dial_target(to: str, settings: PlatformSettings, field: str = "to") -> str:
    """The Asterisk endpoint for ``to``; :class:`InvalidTarget` if it is not allowed."""
    if _NUMBER.fullmatch(to):
        if settings.number_template is None:
            raise InvalidTarget(
                field, "numbers are not dialled here (no platform.number_template is set)"
            )
        return settings.number_template.replace("{number}", to)
    if to[:4].lower() in ("sip:", "sips"):
        if not _SIP_URI.fullmatch(to):
            raise InvalidTarget(field, "expected a SIP URI like sip:user@host")
        if settings.sip_uri_endpoint is None:
            raise InvalidTarget(
                field, "SIP URIs are not dialled here (no platform.sip_uri_endpoint is set)"
            )
        return f"PJSIP/{settings.sip_uri_endpoint}/{to}"
    local = _LOCAL.fullmatch(to)
    if local is not None:
        exten, context = local.groups()
        if context not in settings.local_contexts:
            raise InvalidTarget(field, f"Local channels may not enter context {context!r}")
        return f"Local/{exten}@{context}"
    endpoint = _ENDPOINT.fullmatch(to)
    if endpoint is not None:
        technology, resource = endpoint.groups()
        allowed = {t.lower(): t for t in settings.endpoint_technologies}
        if technology.lower() not in allowed or technology.lower() == "local":
            raise InvalidTarget(
                field,
                f"channel technology {technology!r} is not allowed "
                f"(allowed: {', '.join(settings.endpoint_technologies) or 'none'})",
            )
        return f"{allowed[technology.lower()]}/{resource}"
    raise InvalidTarget(
        field,
        "expected an endpoint (PJSIP/name), an E.164 number (+4930123456) or a SIP URI "
        "(sip:user@host)",
    )


def transfer_target(target: str, settings: PlatformSettings) -> str:
    """A transfer target: ``exten@context`` (context in ``platform.local_contexts``) or
    anything :func:`dial_target` accepts."""
    match = _EXTEN_AT_CONTEXT.fullmatch(target)
    if match is not None:
        if match.group(2) not in settings.local_contexts:
            raise InvalidTarget("target", f"transfers may not enter context {match.group(2)!r}")
        return target
    return dial_target(target, settings, "target")


def twilio_target(to: str, field: str = "to") -> str:
    """``to`` for Twilio (a call's ``to`` or a transfer's ``<Dial>``): an E.164 number,
    a SIP URI or ``client:name``, returned as is; :class:`InvalidTarget` otherwise."""
    if _NUMBER.fullmatch(to) or _SIP_URI.fullmatch(to) or _CLIENT.fullmatch(to):
        return to
    if to[:4].lower() in ("sip:", "sips"):
        raise InvalidTarget(field, "expected a SIP URI like sip:user@host")
    raise InvalidTarget(
        field,
        "on Twilio: expected an E.164 number (+4930123456), a SIP URI (sip:user@host) "
        "or a Twilio Client (client:name)",
    )


def twilio_caller_id(caller_id: str | None, field: str = "from") -> str | None:
    """A Twilio caller id: an E.164 number (one of the account's), or None."""
    if caller_id is not None and not _NUMBER.fullmatch(caller_id):
        raise InvalidTarget(
            field, "on Twilio the caller id is an E.164 number of your account (+4930123456)"
        )
    return caller_id


def check_webhook_url(url: str, allowed: Sequence[str], field: str = "webhook_url") -> str:
    """A client's webhook URL: ``http(s)`` to a public host, or to a private one the
    operator allows (``platform.webhook_private_hosts``: names, addresses, networks);
    :class:`InvalidTarget` naming ``field`` otherwise.

    Checked as written: a literal address in a loopback, private, link-local, reserved
    or unspecified range, or ``localhost`` (and ``*.localhost``), is refused. A name is
    not resolved here (what it resolves to may change before the event is sent): keep
    the platform's egress to private networks closed where that matters."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018 - raises ValueError for a port past 65535
    except ValueError:  # "http://[::1/x": an unclosed bracket, a bad port
        raise InvalidTarget(field, "expected an http(s) URL with a host") from None
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidTarget(field, "expected an http(s) URL with a host")
    if host in allowed:
        return url
    name = host.removesuffix(".")  # "localhost." is localhost, "127.0.0.1." 127.0.0.1
    address = host_address(name)
    if address is None:
        if not _host_name(name):
            # "http://a..b/": aiohttp's IDNA encoding raised on it in the background
            raise InvalidTarget(field, f"{host!r} is not a host name")
        if name == "localhost" or name.endswith(".localhost"):
            raise InvalidTarget(field, _private(host))
        return url
    if allowed_address(address, allowed):
        return url
    raise InvalidTarget(field, _private(host))


def host_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a URL's host denotes, if it is one rather than a name: an IPv6 or
    dotted-quad literal, or one of the legacy IPv4 forms resolvers still take
    (``0x7f000001``, ``2130706433``, ``127.1``: each reached 127.0.0.1, measured with
    aiohttp)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):  # not an address: a name
        return None


def allowed_address(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, allowed: Sequence[str]
) -> bool:
    """Whether a webhook may reach ``address``: a global unicast one, or one the
    operator allows (``platform.webhook_private_hosts``: an address or network)."""
    mapped = getattr(address, "ipv4_mapped", None)
    if mapped is not None:  # ::ffff:127.0.0.1 reaches 127.0.0.1
        address = mapped
    for entry in allowed:
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:  # a host name
            continue
    return address.is_global and not address.is_multicast


_LABEL = re.compile(rb"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")


def _host_name(name: str) -> bool:
    """A DNS name aiohttp can encode (IDNA): labels of 1-63 letters, digits, ``-``
    and ``_``, 253 characters in all."""
    try:
        encoded = name.encode("idna").lower()
    except UnicodeError:
        return False
    return len(encoded) <= 253 and all(_LABEL.fullmatch(label) for label in encoded.split(b"."))


def _private(host: str) -> str:
    return (
        f"{host} is a loopback, private or link-local host: webhooks go to public hosts "
        "unless platform.webhook_private_hosts names it"
    )
