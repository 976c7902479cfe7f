"""Voxtra's settings: from keyword arguments, the environment and a YAML file, validated.

Precedence, highest first: explicit keyword overrides > environment (``VOXTRA_*``) >
YAML file > built-in defaults. Each source is validated on its own first, so an error
names the source it came from, then the sources are merged key by key (a YAML
``media.codec`` survives an environment ``VOXTRA_MEDIA__TRANSPORT``).

Every problem surfaces as :class:`SettingsError` (a :class:`~voxtra.errors.ConfigError`)
whose message names the dotted setting and what was wrong, e.g.
``config error in voxtra.yaml: media.transprt: unknown setting (did you mean
'transport'?)``. Pydantic's ``ValidationError`` never reaches the user.

Secrets (the ARI password) are held as pydantic ``SecretStr``: ``repr``, ``str``,
``model_dump()`` and :meth:`VoxtraSettings.redacted` show ``**********``/``***``, and
:meth:`~pydantic.SecretStr.get_secret_value` is called only where the value is sent
(the ARI ``Authorization`` header). A ``SettingsError`` names the setting, never a
secret's value, and carries no chained pydantic error (whose text includes
``input_value=...``): it is raised outside the ``except`` block, ``from None``.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from voxtra.errors import ConfigError

__all__ = [
    "ENV_PREFIX",
    "MediaSettings",
    "PlatformSettings",
    "PlatformToken",
    "SettingsError",
    "TwilioSettings",
    "VoxtraSettings",
    "expand_placeholders",
    "load_settings",
    "secret_value",
]

logger = logging.getLogger(__name__)

ENV_PREFIX = "VOXTRA_"
#: ``VOXTRA_CONFIG`` names the YAML file for :func:`load_settings`; it is not a setting.
CONFIG_FILE_VAR = "CONFIG"
#: Alternative environment names, e.g. to share variables with other ARI tools.
_ENV_ALIASES = {"ari_username": "username", "ari_password": "password"}
#: Settings whose value is never echoed in an error message (nor anything inside them:
#: ``platform.tokens[0]`` given as a bare string is a token).
_SECRET_FIELDS = frozenset(
    {"password", "token", "tokens", "webhook_secret", "ui_secret", "auth_token", "database_url"}
)
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?"
)


class SettingsError(ConfigError):
    """Settings were rejected; ``problems`` lists ``(dotted_path, message)`` pairs."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        detail = "; ".join(f"{path}: {msg}" if path else msg for path, msg in problems)
        super().__init__(f"config error in {source}: {detail}")


def secret_value(value: str | SecretStr) -> str:
    """The plain text of a secret given as ``str`` or ``SecretStr``: call it only where
    the secret is sent (a header, an SDK client), never to build a message."""
    return value.get_secret_value() if isinstance(value, SecretStr) else value


# ------------------------------------------------------------------------------ models


class _SettingsModel(BaseModel):
    """Shared model behaviour: strict keys, validated assignment, readable errors."""

    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        # YAML reads `password: 1234` as an int; a numeric password is still a password.
        coerce_numbers_to_str=True,
        # Every number is a duration, a rate or a port: `ari_heartbeat: inf` passed `> 0`
        # and the app's start then died in aiohttp (OverflowError: cannot convert float
        # infinity to integer), logged as tracebacks, with no config error.
        allow_inf_nan=False,
    )

    if not TYPE_CHECKING:
        # Hidden from type checkers so the pydantic plugin keeps typed constructors.

        def __init__(self, **data: Any) -> None:
            try:
                super().__init__(**data)
                return
            except ValidationError as exc:
                error = _settings_error("arguments", exc)
            # Raised here, not in the except block: no __context__ or __cause__ carries
            # pydantic's error text, which holds the rejected value (a password).
            raise error from None

        # Tell pydantic this wrapper is not a custom __init__ to run *during*
        # validation (nested models would otherwise report errors twice, wrapped).
        __init__.__pydantic_base_init__ = True

        def __setattr__(self, name: str, value: Any) -> None:
            try:
                super().__setattr__(name, value)
                return
            except ValidationError as exc:
                error = _settings_error("assignment", exc)
            raise error from None  # without pydantic's error: see __init__


def _none_if_blank(value: Any) -> Any:
    """An empty environment variable or ``${X:-}`` means "not set" for optional values."""
    if isinstance(value, str) and value.strip().lower() in ("", "none", "null"):
        return None
    return value


def _check_host(value: str) -> str:
    host = value.strip()
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME.fullmatch(host):
            raise ValueError(f"expected an IP address or host name, got {value!r}") from None
    return host


class MediaSettings(_SettingsModel):
    """How call audio reaches the application."""

    transport: Literal["rtp", "websocket", "audiosocket"] = "rtp"
    codec: Literal["ulaw", "alaw", "slin", "slin16"] = "ulaw"
    #: Local address the RTP/AudioSocket listeners bind to.
    bind_host: str = "127.0.0.1"
    #: Address Asterisk should send media to, when it differs from ``bind_host`` (NAT,
    #: containers, ``0.0.0.0``).
    advertise_host: str | None = None
    port_range: tuple[int, int] = (30000, 30999)
    #: Start media as soon as the call is answered instead of on first use.
    attach_on_answer: bool = False
    #: ExternalMedia RTP (ulaw/alaw) of every call on the app's one ``MediaEngine``
    #: (one socket, one recvmmsg/sendmmsg a tick, arrays: docs/performance.md); off:
    #: each call its own ``RtpTransport`` (``slin``/``slin16`` calls always are).
    engine: bool = True
    #: IP addresses AudioSocket connections are taken from (Asterisk's, as this host
    #: sees it); empty: any. Only UUIDs the app handed Asterisk are taken either way.
    audiosocket_peers: tuple[str, ...] = ()

    @field_validator("audiosocket_peers", mode="before")
    @classmethod
    def _peers_text(cls, value: Any) -> Any:
        """Accept ``10.0.0.5,10.0.0.6`` from text."""
        if isinstance(value, str):
            return tuple(p for p in re.split(r"[\s,]+", value.strip().strip("[]")) if p)
        return value

    @field_validator("audiosocket_peers")
    @classmethod
    def _peers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for peer in value:
            try:
                ipaddress.ip_address(peer)
            except ValueError:
                raise ValueError(f"expected IP addresses, got {peer!r}") from None
        return value

    @field_validator("bind_host")
    @classmethod
    def _bind_host(cls, value: str) -> str:
        return _check_host(value)

    @field_validator("advertise_host", mode="before")
    @classmethod
    def _advertise_blank(cls, value: Any) -> Any:
        return _none_if_blank(value)

    @field_validator("advertise_host")
    @classmethod
    def _advertise_host(cls, value: str | None) -> str | None:
        return None if value is None else _check_host(value)

    @field_validator("port_range", mode="before")
    @classmethod
    def _port_range_text(cls, value: Any) -> Any:
        """Accept ``30000-30999``, ``30000,30999`` and ``[30000, 30999]`` from text."""
        if isinstance(value, str):
            parts = [p for p in re.split(r"[\s,:-]+", value.strip().strip("[]()")) if p]
            if len(parts) != 2:
                raise ValueError(f"expected two port numbers like 30000-30999, got {value!r}")
            return tuple(parts)
        return value

    @field_validator("port_range")
    @classmethod
    def _port_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        low, high = value
        if not 1 <= low <= high <= 65535:
            raise ValueError(f"expected 1 <= low <= high <= 65535, got {low}-{high}")
        return value


_SCOPES = ("calls:read", "calls:write", "admin")


class PlatformToken(_SettingsModel):
    """A bearer token of the platform's API (``voxtra serve``): give ``token`` (a secret,
    hashed at start and never logged) or its ``sha256`` (hex) only."""

    name: str
    token: SecretStr | None = Field(default=None, repr=False)
    sha256: str | None = None
    scopes: tuple[str, ...] = ("calls:read",)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.@-]{1,100}", value):
            raise ValueError(f"expected 1-100 letters, digits, '_', '.', '@' or '-', got {value!r}")
        return value

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        # Never echo the value: this message may end up in logs.
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("expected a token of at least 16 characters")
        return value

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-f]{64}", value.lower()):
            raise ValueError("expected 64 hex digits (sha256 of the token)")
        return None if value is None else value.lower()

    @field_validator("scopes", mode="before")
    @classmethod
    def _scopes_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(p for p in re.split(r"[\s,]+", value.strip()) if p)
        return value

    @field_validator("scopes")
    @classmethod
    def _scopes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for scope in value:
            if scope not in _SCOPES:
                raise ValueError(f"expected scopes among {', '.join(_SCOPES)}, got {scope!r}")
        return value

    def model_post_init(self, context: Any, /) -> None:
        if (self.token is None) == (self.sha256 is None):
            raise ValueError("give exactly one of token and sha256")


class PlatformSettings(_SettingsModel):
    """The call platform (``voxtra serve``, the ``platform`` extra): store and API."""

    #: SQLAlchemy URL of the store: ``sqlite:///path.db`` or ``postgresql://user@host/db``.
    #: None: the SQLite file ``platform.db`` in the working directory.
    database_url: str | None = Field(default=None, repr=False)  # may hold a password
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    tokens: tuple[PlatformToken, ...] = ()
    #: Requests a second each token may make on average, and the burst it may spend.
    rate_limit: float = Field(default=20.0, gt=0)
    rate_burst: int = Field(default=40, ge=1)
    #: The longest request body the API reads, in bytes; a longer one is answered 413.
    #: 32 MiB holds the largest the API takes, a campaign's: its contacts as an uploaded
    #: CSV of up to 20 MiB, or as JSON, where the most contacts a campaign may have
    #: (100 000), each with a name and an account number, are 11.5 MiB. Only a campaign's
    #: body (``POST /v1/campaigns`` and ``/v1/campaigns/check``, read after the token
    #: check) may be that long; any other is bounded by 256 KiB as well
    #: (``voxtra.platform.api.SMALL_BODY_MAX_BYTES``).
    max_body_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    #: How a number (E.164, ``+4930123``) is dialled: an endpoint template with
    #: ``{number}``, e.g. ``PJSIP/{number}@my-trunk``. None: numbers are refused.
    number_template: str | None = None
    #: The PJSIP endpoint that sends ``sip:`` URIs out. None: SIP URIs are refused.
    sip_uri_endpoint: str | None = None
    #: Channel technologies an endpoint ``to`` may name (``PJSIP/alice``).
    endpoint_technologies: tuple[str, ...] = ("PJSIP",)
    #: Dialplan contexts a ``Local/exten@context`` ``to`` may enter; empty: none.
    local_contexts: tuple[str, ...] = ()
    #: The app's webhook receiver: every call's and campaign's events are POSTed there.
    webhook_url: str | None = None
    #: The HMAC-SHA256 key that signs every webhook (never logged). None: unsigned.
    webhook_secret: SecretStr | None = Field(default=None, repr=False)
    #: Private hosts a client's webhook URL (a call's ``metadata.webhook_url``, a
    #: campaign's or schedule's ``webhook_url``) may name: host names
    #: (``hooks.internal``), addresses or networks (``10.0.0.0/8``). Any other loopback,
    #: private, link-local or reserved address, and ``localhost``, is refused (422):
    #: the platform would otherwise POST to whatever its own network reaches.
    #: ``webhook_url`` above is the operator's and not checked.
    webhook_private_hosts: tuple[str, ...] = ()
    #: Seconds between a scheduling worker's rounds when nothing wakes it.
    worker_poll_interval: float = Field(default=1.0, gt=0, le=60)
    #: Seconds a silent worker keeps its calls before another records them lost.
    worker_lease: float = Field(default=30.0, ge=3, le=3600)
    #: The key that signs the operator page's (``/ui``) session cookies (never logged).
    #: None: a random key per process (sessions end at a restart; workers behind one
    #: address need the same key).
    ui_secret: SecretStr | None = Field(default=None, repr=False)

    @field_validator(
        "database_url", "number_template", "sip_uri_endpoint", "ui_secret", mode="before"
    )
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return _none_if_blank(value)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return _check_host(value)

    @field_validator("webhook_private_hosts")
    @classmethod
    def _private_hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        checked = []
        for entry in value:
            try:
                checked.append(str(ipaddress.ip_network(entry.strip(), strict=False)))
            except ValueError:
                checked.append(_check_host(entry).lower())
        return tuple(checked)

    @field_validator("tokens", mode="before")
    @classmethod
    def _tokens_json(cls, value: Any) -> Any:
        """Accept a JSON list from the environment (``VOXTRA_PLATFORM__TOKENS``)."""
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise ValueError("expected a JSON list of tokens") from None
        return value

    @field_validator(
        "endpoint_technologies", "local_contexts", "webhook_private_hosts", mode="before"
    )
    @classmethod
    def _names_text(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                # A JSON list, as the tokens are given in the environment: it was split
                # on commas as text, quotes and brackets kept ('["PJSIP"', '"SIP"]'), and
                # every endpoint then refused with no config error.
                problem = "expected a JSON list of names, or names split by commas"
                try:
                    names = json.loads(text)
                except ValueError:
                    raise ValueError(problem) from None
                if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                    raise ValueError(problem)
                return tuple(n.strip() for n in names if n.strip())
            return tuple(p for p in re.split(r"[\s,]+", text) if p)
        return value

    @field_validator("number_template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None and "{number}" not in value:
            raise ValueError(f"expected a template with {{number}}, got {value!r}")
        return value


class TwilioSettings(_SettingsModel):
    """Twilio Media Streams as a second telephony backend (``voxtra.twilio``, the
    ``twilio`` extra). ``voxtra serve`` mounts its webhook and stream socket when
    ``account_sid``, ``auth_token`` and ``public_url`` are all set."""

    account_sid: str | None = None
    #: Signs Twilio's webhooks (checked on every request) and the REST API's requests.
    auth_token: SecretStr | None = Field(default=None, repr=False)
    #: The address Twilio reaches this server at (``https://voice.example.com``): the
    #: webhook and stream URLs are built from it, and signatures are checked against it.
    public_url: str | None = None
    #: The caller id (a Twilio number) for outbound calls when none is given.
    from_number: str | None = None
    #: Where the webhook, status callback and stream socket are mounted.
    path_prefix: str = "/twilio"
    #: The REST API's base URL; None: Twilio's (a test points it at a local fake).
    api_base_url: str | None = None
    #: Every call comes through Twilio: ``voxtra serve`` runs the app without Asterisk
    #: (``voxtra.twilio.NoAsterisk`` as its ARI transport).
    without_asterisk: bool = False

    @field_validator("account_sid", "public_url", "from_number", "api_base_url", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return _none_if_blank(value)

    @property
    def configured(self) -> bool:
        return bool(self.account_sid and self.auth_token and self.public_url)


class VoxtraSettings(_SettingsModel):
    """Everything a Voxtra application needs to connect to Asterisk and run calls."""

    #: Base URL of Asterisk's HTTP server (the ARI client adds ``/ari``).
    ari_url: str = "http://127.0.0.1:8088"
    username: str = "voxtra"
    #: A plain ``str`` is accepted and wrapped; read it with ``.get_secret_value()``.
    password: SecretStr = Field(default=SecretStr("voxtra"), repr=False)
    #: The Stasis application name the dialplan hands calls to.
    app_name: str = "voxtra"
    media: MediaSettings = Field(default_factory=MediaSettings)
    platform: PlatformSettings = Field(default_factory=PlatformSettings)
    twilio: TwilioSettings = Field(default_factory=TwilioSettings)
    #: Seconds running handlers get at ``stop()`` before they are cancelled.
    handler_deadline: float = Field(default=10.0, ge=0)
    #: What to do with a call no route, dispatcher or default accepts.
    unrouted: Literal["hangup", "answer_and_hangup"] = "answer_and_hangup"
    #: What to do, after a restart or reconnect, with calls already in the Stasis app.
    reconcile_policy: Literal["adopt", "hangup"] = "hangup"
    recordings_dir: str = "recordings"
    #: Never recordings_dir nor a directory around it (checked: validated even when
    #: left at its default, after recordings_dir).
    spool_dir: str = Field(default=".voxtra-spool", validate_default=True)
    #: Level for Voxtra's own loggers; None leaves logging configuration to the app.
    log_level: str | None = None
    max_call_duration: float | None = Field(default=None, gt=0)
    #: Marks the calls this process owns (reconcile touches no others). None: stable per
    #: host, user, app name and slot (see voxtra.instance), so a restart reclaims a dead
    #: process's calls. Give one only if it is unique among the processes running at once.
    instance_id: str | None = None
    silence_timeout: float | None = Field(default=None, gt=0)
    #: Longest wait between ARI reconnect attempts. At 30 s an app took 12 s to take
    #: calls again after a 12 s Asterisk outage (fault test); a refused connect every
    #: 1.5-3 s costs nothing, and calls work again within ~3 s of Asterisk being back.
    ari_reconnect_max_backoff: float = Field(default=3.0, gt=0)
    ari_heartbeat: float = Field(default=10.0, gt=0)
    #: The loop ``voxtra run`` / ``voxtra serve`` run on (``voxtra.eventloop``): "auto"
    #: takes uvloop when installed (``voxtra[speed]``; ~10% less CPU a call setup),
    #: "uvloop" requires it, "asyncio" keeps asyncio's own.
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"

    @field_validator("ari_url")
    @classmethod
    def _ari_url(cls, value: str) -> str:
        url = value.strip()
        problem = "expected a URL like http://127.0.0.1:8088"
        parts = urlsplit(url)
        if "@" in parts.netloc:
            # Not echoed: the user info may hold a password.
            raise ValueError(f"{problem}, without user:password@ (use username/password)")
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ValueError(f"{problem}, got {value!r}") from None
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.query
            or parts.fragment
            or any(c.isspace() or ord(c) < 32 for c in url)
        ):
            # A query is not echoed: ARI takes ?api_key=user:password too.
            shown = url.split("?", 1)[0] + ("?..." if "?" in url else "")
            raise ValueError(f"{problem}, got {shown!r}")
        base = url.rstrip("/")
        # Accept the common ".../ari" spelling: the ARI client adds it itself.
        return base[: -len("/ari")] if base.endswith("/ari") else base

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        if not value or any(c == ":" or c.isspace() or ord(c) < 32 for c in value):
            raise ValueError("expected a non-empty name without spaces or ':'")
        return value

    @field_validator("password")
    @classmethod
    def _password(cls, value: SecretStr) -> SecretStr:
        # Never echo the value: this message may end up in logs.
        secret = value.get_secret_value()
        if not secret or any(ord(c) < 32 or ord(c) == 127 for c in secret):
            raise ValueError("expected a non-empty password without control characters")
        return value

    @field_validator("app_name")
    @classmethod
    def _app_name(cls, value: str) -> str:
        # It lands in URLs and the dialplan (Stasis(app,...)): keep it to safe characters.
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
            raise ValueError(f"expected letters, digits, '_', '.' or '-' only, got {value!r}")
        return value

    @field_validator("recordings_dir", "spool_dir")
    @classmethod
    def _directory(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip() or "\x00" in value:
            raise ValueError(f"expected a directory path, got {value!r}")
        # The spool takes the directories in it for its own entries: recordings stored
        # in it were moved into its quarantine at the next start. Checked in a field
        # validator, not a model one: pydantic keeps an assignment a model validator
        # refused. info.data holds the other one once it is validated (spool_dir comes
        # second; on assignment, both are there).
        if (info.context or {}).get(_ONE_SOURCE):
            return value  # the merged settings may take the other one from another source
        recordings: str | None = info.data.get("recordings_dir")
        spool: str | None = info.data.get("spool_dir")
        if info.field_name == "recordings_dir":
            recordings = value
        else:
            spool = value
        if recordings is not None and spool is not None and _within(recordings, spool):
            raise ValueError(
                f"recordings_dir {recordings!r} must not be spool_dir {spool!r} nor inside "
                "it (the spool holds recordings until they are delivered, and takes its "
                "subdirectories for its own): put them side by side, e.g. data/recordings "
                "and data/spool"
            )
        return value

    @field_validator(
        "log_level", "max_call_duration", "silence_timeout", "instance_id", mode="before"
    )
    @classmethod
    def _optional_blank(cls, value: Any) -> Any:
        return _none_if_blank(value)

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str | None) -> str | None:
        if value is None:
            return None
        level = value.strip().upper()
        level = "WARNING" if level == "WARN" else level
        if level not in _LOG_LEVELS:
            raise ValueError(f"expected one of {', '.join(_LOG_LEVELS)}, got {value!r}")
        return level

    @field_validator("instance_id")
    @classmethod
    def _instance_id(cls, value: str | None) -> str | None:
        # It lands in channel ids split on '-': keep it to a safe, short alphabet.
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_.]{1,32}", value):
            raise ValueError(f"expected 1-32 letters, digits, '_' or '.', got {value!r}")
        return value

    def redacted(self) -> dict[str, Any]:
        """The settings as plain data with every secret masked, for logs and ``doctor``."""
        data = self.model_dump(mode="json")
        for name in _SECRET_FIELDS:
            if name in data:
                data[name] = "***"
        platform = data.get("platform")
        if isinstance(platform, dict) and platform.get("database_url"):
            platform["database_url"] = _without_password(platform["database_url"])
        return data

    # -------------------------------------------------------------- constructors

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, prefix: str = ENV_PREFIX
    ) -> VoxtraSettings:
        """Settings from ``VOXTRA_*`` variables; nested ones use ``__``.

        ``VOXTRA_ARI_URL``, ``VOXTRA_USERNAME`` (or ``VOXTRA_ARI_USERNAME``),
        ``VOXTRA_MEDIA__TRANSPORT`` ... Unknown top-level names are ignored, because
        other components share the prefix; an unknown key inside a section
        (``VOXTRA_MEDIA__TRANSPRT``) is an error, and so is a section's setting written
        with one underscore (``VOXTRA_MEDIA_TRANSPORT``).
        """
        values, names = _env_values(os.environ if environ is None else environ, prefix)
        return _validate(values, "environment", names)

    @classmethod
    def from_yaml(
        cls, path_or_text: str | os.PathLike[str], environ: Mapping[str, str] | None = None
    ) -> VoxtraSettings:
        """Settings from a YAML file (a path) or YAML text, ``${VAR}`` expanded.

        A ``str`` is read as a path when it is one line naming an existing file or
        ending in ``.yaml``/``.yml``; otherwise it is the YAML itself.
        """
        values, source = _yaml_values(path_or_text, os.environ if environ is None else environ)
        return _validate(values, source)


# ----------------------------------------------------------------- error conversion


def _settings_error(
    source: str, exc: ValidationError, env_names: Mapping[str, str] | None = None
) -> SettingsError:
    problems = []
    for error in exc.errors(include_url=False):
        loc = error.get("loc", ())
        if error["type"] == "missing" and loc and isinstance(loc[-1], int):
            # A short tuple: report the whole value, not "[1]: field required".
            loc = loc[:-1]
            error = {**error, "type": "too_short"}
        path = _dotted(loc)
        message = _describe(error, loc)
        if env_names and path in env_names:
            path = f"{path} ({env_names[path]})"
        problems.append((path, message))
    return SettingsError(source, problems)


def _dotted(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def _known_keys(loc: tuple[int | str, ...]) -> list[str]:
    """The setting names of the section ``loc`` ends in, for a "did you mean".

    Follows every section and list of sections: a typo in ``twilio`` (or in a platform
    token) was matched against the top-level names, so ``twilio.publc_url`` asked "did
    you mean 'ari_url'?".
    """
    model: type[BaseModel] = VoxtraSettings
    for part in loc[:-1]:
        if isinstance(part, int):
            continue  # an item of a list of sections: the section model stays
        info = model.model_fields.get(part)
        inner = None if info is None else _section_model(info.annotation)
        if inner is None:
            return []
        model = inner
    return list(model.model_fields)


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The model in ``annotation`` (``MediaSettings``, ``tuple[PlatformToken, ...]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _section_model(arg)
        if found is not None:
            return found
    return None


def _is_secret_path(path: str | tuple[int | str, ...]) -> bool:
    """Whether a setting's dotted path (or pydantic ``loc``) is, or is inside, a secret."""
    parts = re.split(r"[.\[\]]", path) if isinstance(path, str) else path
    return any(part in _SECRET_FIELDS for part in parts)


def _shows_no_section(value: Any) -> bool:
    """Whether ``value`` may be quoted in an error: not a section (a mapping) nor a list
    holding one, whose secrets would be quoted with it."""
    if isinstance(value, Mapping):
        return False
    if isinstance(value, (list, tuple)):
        return all(_shows_no_section(item) for item in value)
    return True


def _describe(error: Any, loc: tuple[int | str, ...]) -> str:
    """One pydantic error as a short, plain sentence."""
    kind: str = error["type"]
    ctx: dict[str, Any] = error.get("ctx") or {}
    value = error.get("input")
    if kind == "extra_forbidden":
        name = str(loc[-1]) if loc else ""
        close = difflib.get_close_matches(name, _known_keys(loc), n=1, cutoff=0.5)
        return "unknown setting" + (f" (did you mean {close[0]!r}?)" if close else "")
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "literal_error":
        message = f"expected one of {ctx.get('expected', '')}"
    elif kind in ("float_parsing", "float_type"):
        message = "expected a number"
    elif kind == "finite_number":
        message = "expected a finite number"
    elif kind in ("int_parsing", "int_type", "int_from_float"):
        message = "expected a whole number"
    elif kind in ("bool_parsing", "bool_type"):
        message = "expected true or false"
    elif kind == "string_type":
        message = "expected text"
    elif kind in ("tuple_type", "too_short", "too_long"):
        message = "expected two values, like [30000, 30999]"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        message = "expected a mapping of settings"
    elif kind == "greater_than":
        message = f"must be greater than {_number(ctx.get('gt'))}"
    elif kind == "greater_than_equal":
        message = f"must be at least {_number(ctx.get('ge'))}"
    elif kind == "less_than":
        message = f"must be less than {_number(ctx.get('lt'))}"
    elif kind == "less_than_equal":
        message = f"must be at most {_number(ctx.get('le'))}"
    elif kind == "missing":
        message = "required"
    else:
        message = str(error["msg"])
    # A wrong section (`platform:` written as a list of mappings) holds its secrets: the
    # whole value was quoted, `webhook_secret` and all.
    if not _is_secret_path(loc) and _shows_no_section(value):
        message += f", got {value!r}"
    return message


def _without_password(url: str) -> str:
    """``url`` with the password of its user info masked (``postgresql://u:***@db/x``)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "***"
    if password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    name = user.split(":", 1)[0]
    netloc = f"{name}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _number(value: object) -> str:
    """Bounds print as people write them: ``0``, not ``0.0``."""
    return f"{value:g}" if isinstance(value, float) else str(value)


#: Validation context key of one source among several (see load_settings): checks of
#: one setting against another wait for the merged settings.
_ONE_SOURCE = "one_source"


def _within(path: str, directory: str) -> bool:
    """Whether ``path`` is ``directory`` or inside it (relative paths from the working
    directory, symlinks followed as far as they exist)."""
    inner, outer = Path(os.path.realpath(path)), Path(os.path.realpath(directory))
    return inner == outer or outer in inner.parents


def _validate(
    values: Mapping[str, Any],
    source: str,
    env_names: Mapping[str, str] | None = None,
    *,
    one_of_several: bool = False,
) -> VoxtraSettings:
    context = {_ONE_SOURCE: True} if one_of_several else None
    try:
        return VoxtraSettings.model_validate(values, context=context)
    except ValidationError as exc:
        error = _settings_error(source, exc, env_names)
    raise error from None  # outside the except block: no chained pydantic error text


# ---------------------------------------------------------------------- environment


def _env_values(environ: Mapping[str, str], prefix: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Raw values from the environment, plus dotted path -> variable name for errors."""
    values: dict[str, Any] = {}
    names: dict[str, str] = {}
    sections = {
        name
        for name, info in VoxtraSettings.model_fields.items()
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
    }
    upper_prefix = prefix.upper()
    # Canonical names are applied after aliases, so they win when both are set.
    keys = sorted(
        (k for k in environ if k.upper().startswith(upper_prefix)),
        key=lambda k: k[len(prefix) :].lower() in _ENV_ALIASES,
        reverse=True,
    )
    for key in keys:
        rest = key[len(prefix) :].lower()
        if rest == CONFIG_FILE_VAR.lower():
            continue
        parts = rest.split("__")
        top = _ENV_ALIASES.get(parts[0], parts[0])
        if len(parts) == 1:
            if top not in VoxtraSettings.model_fields:
                _check_not_nested(key, prefix, top, sections)
                logger.debug("ignoring %s: not a Voxtra setting", key)
                continue
            values[top] = environ[key]
            names[top] = key
            continue
        if top not in sections or not all(parts[1:]):
            logger.debug("ignoring %s: not a Voxtra setting", key)
            continue
        node = values.setdefault(top, {})
        if not isinstance(node, dict):
            raise SettingsError("environment", [(top, f"{names[top]} and {key} both set")])
        for part in parts[1:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = environ[key]
        names[".".join([top, *parts[1:]])] = key
    return values, names


def _check_not_nested(key: str, prefix: str, name: str, sections: set[str]) -> None:
    """Refuse ``VOXTRA_MEDIA_TRANSPORT``: a section's setting with one underscore.

    Other unknown names are ignored (providers and tools share the prefix), and this one
    was too: the app ran on RTP with no word of the websocket asked for. No other
    component names a variable after a section and one of its settings.
    """
    for section in sections:
        field = name.removeprefix(f"{section}_")
        model = _section_model(VoxtraSettings.model_fields[section].annotation)
        if field != name and model is not None and field in model.model_fields:
            nested = f"{prefix}{section}__{field}".upper()
            raise SettingsError(
                "environment",
                [(f"{section}.{field} ({key})", f"not a setting: write {nested} (two '_')")],
            )


# --------------------------------------------------------------------- YAML and ${ENV}

# A run of '$' before '{', then an optional "NAME...}" body.
_PLACEHOLDER = re.compile(r"(\$+)\{(?:([^}]*)\})?")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def expand_placeholders(text: str, environ: Mapping[str, str]) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}``; ``$${`` stands for a literal ``${``.

    Before a ``{``, ``$$`` is one literal ``$`` (so ``$$${A}`` is ``$`` then A's value);
    a ``$`` anywhere else is left alone. As in the shell, the default applies when the
    variable is unset or empty. Raises :class:`ConfigError` naming a variable that is
    unset and has no default.
    """

    def replace(match: re.Match[str]) -> str:
        dollars, body = match.group(1), match.group(2)
        literal = "$" * (len(dollars) // 2)
        if len(dollars) % 2 == 0:
            return literal + match.group(0)[len(dollars) :]
        if body is None:
            raise ConfigError("unclosed '${' placeholder (write $${ for a literal '${')")
        name, sep, default = body.partition(":-")
        if not _VAR_NAME.fullmatch(name):
            raise ConfigError(
                f"bad placeholder '${{{body}}}': expected ${{NAME}} or ${{NAME:-default}}"
            )
        value = environ.get(name)
        if sep:
            return literal + (value if value else default)
        if value is None:
            raise ConfigError(
                f"environment variable {name} is not set (give a default: ${{{name}:-value}})"
            )
        return literal + value

    return _PLACEHOLDER.sub(replace, text)


def _expand_tree(node: Any, environ: Mapping[str, str], source: str, path: str) -> Any:
    """Expand placeholders in string values only, after YAML parsing.

    Expanding after parsing means a variable's content is always a value: a password
    containing ``: `` or ``#`` cannot change the document's structure.
    """
    if isinstance(node, str):
        try:
            return expand_placeholders(node, environ)
        except ConfigError as exc:
            # The message quotes the placeholder, i.e. part of the value: not for secrets
            # (`platform.tokens[0]`, a token given as a bare string, is one too).
            secret = _is_secret_path(path)
            message = "bad ${...} placeholder in a secret value" if secret else str(exc)
        raise SettingsError(source, [(path, message)]) from None
    if isinstance(node, dict):
        return {
            k: _expand_tree(v, environ, source, f"{path}.{k}" if path else str(k))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_expand_tree(v, environ, source, f"{path}[{i}]") for i, v in enumerate(node)]
    return node


def _read_yaml_source(path_or_text: str | os.PathLike[str]) -> tuple[str, str]:
    """Return (text, source name) for a path or for literal YAML text."""
    is_path = isinstance(path_or_text, os.PathLike) or (
        "\n" not in path_or_text
        and (path_or_text.endswith((".yaml", ".yml")) or Path(path_or_text).is_file())
    )
    if not is_path:
        return str(path_or_text), "YAML text"
    path = Path(path_or_text)
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except FileNotFoundError:
        raise SettingsError(str(path), [("", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(str(path), [("", f"cannot read: {exc}")]) from None


def _yaml_values(
    path_or_text: str | os.PathLike[str], environ: Mapping[str, str]
) -> tuple[dict[str, Any], str]:
    """Raw, expanded values from YAML. A top-level ``voxtra:`` key holds them if present."""
    text, source = _read_yaml_source(path_or_text)
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SettingsError(source, [("", f"invalid YAML{where}: {problem}")]) from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        problem = "expected a mapping of settings at the top level"
        if source == "YAML text" and isinstance(document, str) and "\n" not in text.strip():
            # One word read as YAML: most likely a file name (`config_file="voxtra.conf"`)
            # that is not there. The text is not quoted: it may be a value.
            problem += " (read as YAML text: no file of that name either)"
        raise SettingsError(source, [("", problem)])
    if "voxtra" in document:
        # Namespaced file: other top-level keys belong to the application and are ignored.
        section = document["voxtra"]
        if section is None:
            section = {}
        if not isinstance(section, dict):
            raise SettingsError(source, [("voxtra", "expected a mapping of settings")])
        document = section
    bad_keys = [k for k in document if not isinstance(k, str)]
    if bad_keys:
        raise SettingsError(source, [(str(bad_keys[0]), "setting names must be text")])
    expanded: dict[str, Any] = _expand_tree(document, environ, source, "")
    return expanded, source


# ------------------------------------------------------------------------ load_settings


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(dict(merged[key]), value)
        else:
            merged[key] = value
    return merged


def _override_values(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword overrides as raw values; None means "not given" and is dropped."""
    values: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, BaseModel):
            value = value.model_dump()
        if isinstance(value, Mapping):
            value = {k: v for k, v in value.items() if v is not None}
        values[key] = value
    return values


def load_settings(
    *,
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    env_prefix: str = ENV_PREFIX,
    **overrides: Any,
) -> VoxtraSettings:
    """Settings from every source: overrides > environment > YAML file > defaults.

    ``config_file`` defaults to ``$VOXTRA_CONFIG`` (always a path) when set. Keyword
    overrides use the setting names (``media`` may be a dict of media settings or a
    ``MediaSettings``); an override of ``None`` counts as not given, so CLI options can
    be passed through.
    """
    env = os.environ if environ is None else environ
    if config_file is None:
        named = env.get(env_prefix + CONFIG_FILE_VAR)
        # A path, never YAML text: `VOXTRA_CONFIG=/etc/voxtra/config`, missing, was read
        # as the YAML text "/etc/voxtra/config" ("config error in YAML text: expected a
        # mapping of settings at the top level"), not as the missing file it names.
        config_file = Path(named) if named else None
    layers: list[tuple[dict[str, Any], str, dict[str, str] | None]] = []
    if config_file is not None:
        yaml_values, source = _yaml_values(config_file, env)
        layers.append((yaml_values, source, None))
    env_values, env_names = _env_values(env, env_prefix)
    layers.append((env_values, "environment", env_names))
    layers.append((_override_values(overrides), "arguments", None))
    merged: dict[str, Any] = {}
    for values, source, names in layers:
        # Blame the right source for its own mistakes.
        _validate(values, source, names, one_of_several=True)
        merged = _merge(merged, values)
    return _validate(merged, "merged settings")
