"""Routing as data: which handler answers a call, decided from facts about the call.

Nothing here talks to Asterisk. The application builds a :class:`CallInfo` from the
``StasisStart`` event, asks a :class:`Router` to :meth:`~Router.resolve` it and runs the
handler it gets back. Keeping the decision pure makes every routing rule testable
without a phone call.

Resolution order (first hit wins):

1. the optional ``dispatcher`` (dynamic routing, e.g. a database lookup);
2. the routes, in the order they were declared (no Asterisk-style "most specific
   pattern first" sorting: what you write first is tried first);
3. the ``default`` handler;
4. nothing: :meth:`Router.resolve` returns ``None`` and the application applies its
   ``unrouted`` policy.

Extension patterns follow Asterisk's dialplan syntax; see :class:`ExtensionPattern`.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeAlias, TypeVar

from voxtra._callbacks import check_callback
from voxtra.ari.models import Channel
from voxtra.errors import CallbackSignatureError, ConfigError, VoxtraError

__all__ = [
    "ArgsPredicate",
    "CallHandler",
    "CallInfo",
    "Dispatcher",
    "ExtensionPattern",
    "Route",
    "RouteMatch",
    "Router",
    "RoutingError",
]

logger = logging.getLogger(__name__)

#: A call handler: an async callable taking the call object (``CallSession``, defined by
#: the application layer; routing never looks inside it).
CallHandler: TypeAlias = Callable[[Any], Awaitable[None]]
#: Decides on the Stasis arguments when a fixed prefix is not enough.
ArgsPredicate: TypeAlias = Callable[[tuple[str, ...]], bool]

H = TypeVar("H", bound=CallHandler)

#: Channel variables that, when set (e.g. by the dialplan from the SIP To header),
#: carry the dialed number when it differs from the dialplan extension.
DEFAULT_NUMBER_VARIABLES: tuple[str, ...] = ("VOXTRA_CALLED_NUMBER", "VOXTRA_DID")


class RoutingError(VoxtraError):
    """A dispatcher failed or returned something that is not a handler or a Route."""


# --------------------------------------------------------------------------- CallInfo


@dataclass(frozen=True, slots=True)
class CallInfo:
    """The facts about a new call that routes look at; immutable so routes can't edit it."""

    channel_name: str = ""
    extension: str | None = None
    called_number: str | None = None
    caller: str | None = None
    caller_name: str | None = None
    context: str | None = None
    args: tuple[str, ...] = ()
    variables: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Freeze the containers too: a handler must not be able to change what the
        # next route sees.
        object.__setattr__(self, "args", tuple(str(a) for a in self.args))
        object.__setattr__(self, "variables", MappingProxyType(dict(self.variables)))

    @classmethod
    def from_ari(
        cls,
        channel: Mapping[str, Any],
        args: Sequence[str] = (),
        *,
        variables: Mapping[str, str] | None = None,
        number_variables: Sequence[str] = DEFAULT_NUMBER_VARIABLES,
    ) -> CallInfo:
        """Build from an ARI ``Channel`` JSON object and the Stasis arguments.

        ``extension`` is ``args[0]`` when present (the dialplan passes ``${EXTEN}``
        there), else the channel's dialplan extension. ``called_number`` is the first
        non-empty variable of ``number_variables``, else the extension. ``variables``
        are merged over the channel's ``channelvars``.
        """
        if not isinstance(channel, Mapping):
            raise VoxtraError(f"expected an ARI channel object, got {type(channel).__name__}")
        dialplan = _mapping(channel.get("dialplan"))
        caller = _mapping(channel.get("caller"))
        return cls._build(
            name=_text(channel.get("name")) or "",
            exten=_text(dialplan.get("exten")),
            context=_text(dialplan.get("context")),
            caller=_text(caller.get("number")),
            caller_name=_text(caller.get("name")),
            sources=(channel.get("channelvars"), variables),
            args=args,
            number_variables=number_variables,
        )

    @classmethod
    def from_channel(
        cls,
        channel: Channel,
        args: Sequence[str] = (),
        *,
        variables: Mapping[str, str] | None = None,
        number_variables: Sequence[str] = DEFAULT_NUMBER_VARIABLES,
    ) -> CallInfo:
        """Build from the typed :class:`~voxtra.ari.models.Channel` an event carries
        (what the app routes with: the event's channel is not dumped and re-parsed).
        The same rules as :meth:`from_ari`."""
        return cls._build(
            name=channel.name,
            exten=channel.dialplan.exten or None,
            context=channel.dialplan.context or None,
            caller=channel.caller.number or None,
            caller_name=channel.caller.name or None,
            sources=(channel.channelvars, variables),
            args=args,
            number_variables=number_variables,
        )

    @classmethod
    def _build(
        cls,
        *,
        name: str,
        exten: str | None,
        context: str | None,
        caller: str | None,
        caller_name: str | None,
        sources: tuple[Any, ...],
        args: Sequence[str],
        number_variables: Sequence[str],
    ) -> CallInfo:
        merged: dict[str, str] = {}
        for source in sources:
            if isinstance(source, Mapping):
                merged.update({str(k): "" if v is None else str(v) for k, v in source.items()})
        stasis_args = tuple(str(a) for a in args)
        extension = stasis_args[0] if stasis_args and stasis_args[0] else exten
        called = next((merged[n] for n in number_variables if merged.get(n)), None)
        return cls(
            channel_name=name,
            extension=extension,
            called_number=called if called is not None else extension,
            caller=caller,
            caller_name=caller_name,
            context=context,
            args=stasis_args,
            variables=merged,
        )

    @classmethod
    def from_stasis_start(cls, event: Mapping[str, Any], **kwargs: Any) -> CallInfo:
        """Build from a raw ``StasisStart`` event (``channel`` and ``args``)."""
        raw_args = event.get("args") or ()
        if isinstance(raw_args, str) or not isinstance(raw_args, Sequence):
            raise VoxtraError("StasisStart event: 'args' is not a list")
        return cls.from_ari(_mapping(event.get("channel")), raw_args, **kwargs)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: object) -> str | None:
    """ARI sends empty strings for unknown caller ids; treat those as absent."""
    if value is None:
        return None
    text = str(value)
    return text or None


# ------------------------------------------------------------------- ExtensionPattern

_DIGIT_CLASSES = {"X": "[0-9]", "Z": "[1-9]", "N": "[2-9]"}


class ExtensionPattern:
    """An Asterisk dialplan extension pattern, compiled once to a regular expression.

    * Without a leading ``_`` the text is a literal extension and matches exactly.
    * With a leading ``_``: ``X`` is 0-9, ``Z`` 1-9, ``N`` 2-9 (in either case, as in
      Asterisk, so ``_nxx`` equals ``_NXX``); ``[15-7]`` is a character set of single
      characters and ``a-b`` ranges; ``.`` matches one or more characters and ``!`` zero
      or more; any other character matches itself, case-sensitively.
    * ``-`` outside a set is a visual separator, ignored in the pattern and in the value
      (Asterisk does the same), so ``_555-XXXX`` matches both ``5551234`` and
      ``555-1234``.

    Stricter than Asterisk, on purpose: an unclosed or empty ``[]``, a reversed range
    and text after ``.`` or ``!`` (which Asterisk silently ignores) raise
    :class:`~voxtra.errors.ConfigError`.
    """

    __slots__ = ("_regex", "source")

    def __init__(self, pattern: str) -> None:
        if not isinstance(pattern, str):
            raise ConfigError(f"extension pattern must be a string, got {pattern!r}")
        self.source = pattern
        self._regex = re.compile(_compile(pattern), re.DOTALL)

    @classmethod
    def coerce(cls, value: str | ExtensionPattern) -> ExtensionPattern:
        """Accept either a pattern string or an already compiled pattern."""
        return value if isinstance(value, ExtensionPattern) else cls(value)

    @property
    def is_pattern(self) -> bool:
        """True for ``_`` patterns, False for literal extensions."""
        return self.source.startswith("_")

    @property
    def regex(self) -> str:
        """The compiled regular expression's source (for debugging and docs)."""
        return self._regex.pattern

    def matches(self, value: str | None) -> bool:
        """Whether ``value`` (an extension, number or caller id) matches; None never does."""
        if value is None:
            return False
        return self._regex.fullmatch(value.replace("-", "")) is not None

    def __repr__(self) -> str:
        return f"ExtensionPattern({self.source!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ExtensionPattern):
            return self.source == other.source
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.source)


def _compile(pattern: str) -> str:
    """Translate one dialplan pattern into a regex, rejecting malformed ones."""
    if not pattern.startswith("_"):
        literal = pattern.replace("-", "")
        if not literal:
            raise ConfigError(f"invalid extension pattern {pattern!r}: empty")
        return re.escape(literal)
    body = pattern[1:]
    parts: list[str] = []
    i = 0
    while i < len(body):
        char = body[i]
        if char == "-":
            i += 1
            continue
        if char.upper() in _DIGIT_CLASSES:
            parts.append(_DIGIT_CLASSES[char.upper()])
        elif char == "[":
            end = body.find("]", i + 1)
            if end < 0:
                raise ConfigError(f"invalid extension pattern {pattern!r}: unclosed '['")
            parts.append(_char_set(pattern, body[i + 1 : end]))
            i = end
        elif char in ".!":
            if body[i + 1 :].replace("-", ""):
                raise ConfigError(
                    f"invalid extension pattern {pattern!r}: {char!r} must be the last "
                    "character (Asterisk ignores what follows it)"
                )
            parts.append(".+" if char == "." else ".*")
        else:
            parts.append(re.escape(char))
        i += 1
    if not parts:
        raise ConfigError(f"invalid extension pattern {pattern!r}: empty")
    return "".join(parts)


def _char_set(pattern: str, content: str) -> str:
    """``[...]``: single characters and ``a-b`` ranges; no escapes, as in Asterisk."""
    if not content:
        raise ConfigError(f"invalid extension pattern {pattern!r}: empty '[]'")
    members: list[str] = []
    i = 0
    while i < len(content):
        first = content[i]
        if i + 2 < len(content) and content[i + 1] == "-":
            last = content[i + 2]
            if first > last:
                raise ConfigError(
                    f"invalid extension pattern {pattern!r}: reversed range '{first}-{last}'"
                )
            members.append(f"{re.escape(first)}-{re.escape(last)}")
            i += 3
        else:
            members.append(re.escape(first))
            i += 1
    return "[" + "".join(members) + "]"


# ------------------------------------------------------------------------------ Route


class _ValueMatcher:
    """A channel-variable criterion: exact text, or a pattern when it starts with ``_``."""

    __slots__ = ("_exact", "_pattern")

    def __init__(self, value: str | ExtensionPattern) -> None:
        self._pattern: ExtensionPattern | None = None
        self._exact: str | None = None
        if isinstance(value, ExtensionPattern):
            self._pattern = value
        elif isinstance(value, str):
            if value.startswith("_"):
                self._pattern = ExtensionPattern(value)
            else:
                self._exact = value
        else:
            raise ConfigError(f"variable criterion must be a string, got {value!r}")

    def matches(self, value: str | None) -> bool:
        if value is None:
            return False
        if self._pattern is not None:
            return self._pattern.matches(value)
        return value == self._exact

    def __repr__(self) -> str:
        return repr(self._pattern.source if self._pattern is not None else self._exact)


class Route:
    """One routing rule: criteria on a :class:`CallInfo`, and the handler to run.

    Every given criterion must hold (logical AND); a route without criteria matches
    every call, which makes it a catch-all when declared last.

    * ``extension`` / ``number`` / ``caller``: :class:`ExtensionPattern` (or its text)
      for the dialed extension, the called number and the caller id number.
    * ``context``: exact dialplan context name.
    * ``args``: a prefix the Stasis arguments must start with (a bare string means a
      one-element prefix), or a predicate taking the arguments tuple.
    * ``variables``: channel variable name -> exact value, or a pattern if the value
      starts with ``_``; a missing variable never matches.
    * ``metadata``: copied into ``call.metadata`` when this route is chosen.
    """

    __slots__ = (
        "args",
        "caller",
        "context",
        "extension",
        "handler",
        "metadata",
        "name",
        "number",
        "variables",
    )

    def __init__(
        self,
        handler: CallHandler,
        *,
        extension: str | ExtensionPattern | None = None,
        number: str | ExtensionPattern | None = None,
        caller: str | ExtensionPattern | None = None,
        context: str | None = None,
        args: Iterable[str] | ArgsPredicate | None = None,
        variables: Mapping[str, str | ExtensionPattern] | None = None,
        metadata: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        _check_handler(handler)
        self.handler: CallHandler = handler
        self.extension = None if extension is None else ExtensionPattern.coerce(extension)
        self.number = None if number is None else ExtensionPattern.coerce(number)
        self.caller = None if caller is None else ExtensionPattern.coerce(caller)
        if context is not None and not isinstance(context, str):
            raise ConfigError(f"route context must be a string, got {context!r}")
        self.context = context
        self.args: tuple[str, ...] | ArgsPredicate | None
        if args is None or callable(args):
            self.args = args
        elif isinstance(args, str):
            self.args = (args,)
        else:
            self.args = tuple(str(a) for a in args)
        self.variables: Mapping[str, _ValueMatcher] = MappingProxyType(
            {str(k): _ValueMatcher(v) for k, v in (variables or {}).items()}
        )
        self.metadata: Mapping[str, Any] = MappingProxyType(dict(metadata or {}))
        self.name: str = name or getattr(handler, "__name__", None) or repr(handler)

    @property
    def is_catch_all(self) -> bool:
        """True when the route has no criteria and so matches every call."""
        return (
            self.extension is None
            and self.number is None
            and self.caller is None
            and self.context is None
            and self.args is None
            and not self.variables
        )

    def matches(self, info: CallInfo) -> bool:
        """Whether every criterion of this route holds for ``info``."""
        if self.extension is not None and not self.extension.matches(info.extension):
            return False
        if self.number is not None and not self.number.matches(info.called_number):
            return False
        if self.caller is not None and not self.caller.matches(info.caller):
            return False
        if self.context is not None and info.context != self.context:
            return False
        if self.args is not None:
            if callable(self.args):
                if not self.args(info.args):
                    return False
            elif info.args[: len(self.args)] != self.args:
                return False
        return all(m.matches(info.variables.get(k)) for k, m in self.variables.items())

    def __repr__(self) -> str:
        fields = [f"name={self.name!r}"]
        for label in ("extension", "number", "caller"):
            pattern: ExtensionPattern | None = getattr(self, label)
            if pattern is not None:
                fields.append(f"{label}={pattern.source!r}")
        if self.context is not None:
            fields.append(f"context={self.context!r}")
        if self.args is not None:
            shown = getattr(self.args, "__name__", "<predicate>") if callable(self.args) else None
            fields.append(f"args={shown if shown is not None else self.args!r}")
        if self.variables:
            fields.append(f"variables={dict(self.variables)!r}")
        if self.metadata:
            fields.append(f"metadata={dict(self.metadata)!r}")
        return f"Route({', '.join(fields)})"


def _check_handler(handler: object) -> None:
    """Catch the classic mistakes (a plain ``def``, a handler without its ``call``
    parameter) at declaration, not on the first call: CallbackSignatureError."""
    if not callable(handler):
        raise CallbackSignatureError(f"route handler must be an async function, got {handler!r}")
    check_callback(handler, "route handler", ("call",))


def _criteria(route: Route) -> tuple[Any, ...]:
    """What ``route`` matches on, comparable: routes with equal criteria match the same
    calls."""
    variables = frozenset(
        (name, matcher._pattern, matcher._exact) for name, matcher in route.variables.items()
    )
    return (route.extension, route.number, route.caller, route.context, route.args, variables)


# ----------------------------------------------------------------------------- Router

#: Dynamic routing hook: returns a handler, a :class:`Route`, or ``None`` to fall
#: through to the declared routes. May be a plain or an async function.
Dispatcher: TypeAlias = Callable[
    [CallInfo], Awaitable[CallHandler | Route | None] | CallHandler | Route | None
]


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """The outcome of routing: what to run, which route chose it, metadata to attach."""

    handler: CallHandler
    route: Route | None
    metadata: Mapping[str, Any] = field(default_factory=dict)


class Router:
    """An ordered list of routes plus an optional dispatcher and default handler."""

    def __init__(
        self,
        routes: Iterable[Route] = (),
        *,
        default: CallHandler | None = None,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        self._routes: list[Route] = []
        for r in routes:
            self.add(r)
        if default is not None:
            _check_handler(default)
        self.default: CallHandler | None = default
        self.dispatcher: Dispatcher | None = None
        if dispatcher is not None:
            self.set_dispatcher(dispatcher)

    @property
    def routes(self) -> tuple[Route, ...]:
        """The routes in the order they are tried."""
        return tuple(self._routes)

    def __len__(self) -> int:
        return len(self._routes)

    def add(self, route: Route) -> Route:
        """Append ``route``; it is tried after every route added before it."""
        if not isinstance(route, Route):
            raise ConfigError(f"expected a Route, got {route!r}")
        # Any earlier route that takes every call this one would: it was checked against
        # the last route only, so the second route after a catch-all (and a route
        # declared twice, from two modules or a copy) was never used, without a word.
        criteria = _criteria(route)
        for earlier in self._routes:
            if earlier.is_catch_all or _criteria(earlier) == criteria:
                shadow = (
                    f"catch-all route {earlier.name!r}"
                    if earlier.is_catch_all
                    else f"route {earlier.name!r}, which has the same criteria,"
                )
                logger.warning(
                    "route %r is declared after %s and will never be used", route.name, shadow
                )
                break
        self._routes.append(route)
        return route

    def route(
        self,
        extension: str | ExtensionPattern | None = None,
        *,
        number: str | ExtensionPattern | None = None,
        caller: str | ExtensionPattern | None = None,
        context: str | None = None,
        args: Iterable[str] | ArgsPredicate | None = None,
        variables: Mapping[str, str | ExtensionPattern] | None = None,
        metadata: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> Callable[[H], H]:
        """Decorator form of :meth:`add`; returns the handler unchanged.

        The pattern is compiled when the decorator is created, so a bad pattern fails
        at import time rather than on the first call.
        """
        if args is not None and not callable(args) and not isinstance(args, str):
            args = tuple(args)  # an iterator must survive being read twice below
        # Validate criteria now with a placeholder handler; the real one comes later.
        Route(
            _placeholder,
            extension=extension,
            number=number,
            caller=caller,
            context=context,
            args=args,
            variables=variables,
        )

        def decorator(handler: H) -> H:
            self.add(
                Route(
                    handler,
                    extension=extension,
                    number=number,
                    caller=caller,
                    context=context,
                    args=args,
                    variables=variables,
                    metadata=metadata,
                    name=name,
                )
            )
            return handler

        return decorator

    def set_default(self, handler: H) -> H:
        """Set the fallback handler; usable as a decorator."""
        _check_handler(handler)
        self.default = handler
        return handler

    def set_dispatcher(self, dispatcher: Dispatcher) -> Dispatcher:
        """Set the dynamic-routing hook; usable as a decorator. A plain or async function
        taking the :class:`CallInfo`: anything else is a CallbackSignatureError here,
        not a RoutingError on every call."""
        check_callback(dispatcher, "dispatcher", ("info",), require_async=False)
        self.dispatcher = dispatcher
        return dispatcher

    def match(self, info: CallInfo) -> Route | None:
        """The first declared route matching ``info`` (dispatcher and default excluded)."""
        return next((r for r in self._routes if r.matches(info)), None)

    async def resolve(self, info: CallInfo) -> RouteMatch | None:
        """Dispatcher, then routes in declaration order, then default; None if none."""
        if self.dispatcher is not None:
            chosen = await self._dispatch(info)
            if chosen is not None:
                return chosen
        route = self.match(info)
        if route is not None:
            return RouteMatch(route.handler, route, dict(route.metadata))
        if self.default is not None:
            return RouteMatch(self.default, None, {})
        return None

    async def _dispatch(self, info: CallInfo) -> RouteMatch | None:
        assert self.dispatcher is not None
        name = getattr(self.dispatcher, "__qualname__", repr(self.dispatcher))
        try:
            result: object = self.dispatcher(info)
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            raise RoutingError(f"dispatcher {name} failed: {exc!r}") from exc
        if result is None:
            return None
        if isinstance(result, Route):
            # The dispatcher's choice is final: the route's criteria are not re-checked.
            return RouteMatch(result.handler, result, dict(result.metadata))
        if callable(result):
            # Checked as a declared route's handler is: a plain ``def`` used to be run,
            # and failed inside the call as the handler's TypeError.
            try:
                _check_handler(result)
            except CallbackSignatureError as exc:
                raise RoutingError(
                    f"dispatcher {name} returned a handler Voxtra cannot run: {exc}"
                ) from exc
            return RouteMatch(result, None, {})
        raise RoutingError(
            f"dispatcher {name} returned {result!r}; expected a handler, a Route or None"
        )


async def _placeholder(call: Any) -> None:
    """Stands in for the handler while a decorator validates its criteria."""
