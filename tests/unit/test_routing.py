"""Routing: Asterisk extension patterns, route criteria, and the Router's resolution order."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from voxtra.errors import CallbackSignatureError, ConfigError
from voxtra.routing import (
    CallInfo,
    ExtensionPattern,
    Route,
    RouteMatch,
    Router,
    RoutingError,
)

# ------------------------------------------------------------------ extension patterns

PATTERN_CASES: list[tuple[str, list[str], list[str]]] = [
    # (pattern, values that match, values that don't)
    ("_X.", ["12", "1234567890", "0a"], ["", "1", "a1"]),
    ("_NXX", ["200", "999", "234"], ["100", "099", "20", "2000", "x00"]),
    ("_[1-5]XX", ["100", "599", "312"], ["600", "010", "10", "1000"]),
    ("_Z!", ["1", "9", "10", "9abc"], ["", "0", "01"]),
    ("_1NXXNXXXXXX", ["12125551234", "19995550000"], ["11125551234", "12121551234", "1212555123"]),
    ("_[135-7]", ["1", "3", "5", "6", "7"], ["2", "4", "8", "-"]),
    ("_.", ["1", "abc", "h"], [""]),
    ("_!", ["", "1", "anything"], []),
    ("_011.", ["0114420", "0111"], ["011", "0121"]),
    ("_+X.", ["+4420", "+12"], ["+4", "4420"]),
    ("_[a-zA-Z].", ["ab", "Zx1"], ["a", "1b"]),
    ("_sales", ["sales"], ["Sales", "sale", "saless"]),
    ("_555-XXXX", ["5551234", "555-1234", "55-51234"], ["5561234", "555123"]),
    ("600", ["600", "6-00"], ["6000", "60", "601"]),
    ("queue-agent", ["queue-agent", "queueagent"], ["queue-agent2", "Queue-agent"]),
    ("*98", ["*98"], ["98", "x98"]),
    ("_*X#", ["*1#"], ["*12#", "11#"]),
]


@pytest.mark.parametrize(("pattern", "good", "bad"), PATTERN_CASES)
def test_pattern_matching(pattern: str, good: list[str], bad: list[str]) -> None:
    compiled = ExtensionPattern(pattern)
    for value in good:
        assert compiled.matches(value), f"{pattern} should match {value!r}"
    for value in bad:
        assert not compiled.matches(value), f"{pattern} should not match {value!r}"


def test_pattern_letters_are_case_insensitive_only_after_underscore() -> None:
    # As in Asterisk, x/z/n are the digit classes in either case once a pattern starts.
    assert ExtensionPattern("_nxx").regex == ExtensionPattern("_NXX").regex
    assert ExtensionPattern("_zX").matches("10")
    # Other letters are literal and case-sensitive.
    assert ExtensionPattern("_ab").matches("ab")
    assert not ExtensionPattern("_ab").matches("AB")
    # Without the underscore, X and N are just letters.
    assert ExtensionPattern("NXX").matches("NXX")
    assert not ExtensionPattern("NXX").matches("234")
    # Letters n/x/z inside a word are classes too (a classic dialplan trap).
    assert not ExtensionPattern("_transfer-X").matches("transfer-1")
    assert ExtensionPattern("_tra5sfer-X").matches("tra5sfer1")
    assert ExtensionPattern("_tra[n]sfer-X").matches("transfer-1")


def test_regex_metacharacters_are_literal() -> None:
    assert ExtensionPattern("_1(2)X").matches("1(2)3")
    assert not ExtensionPattern("_1(2)X").matches("123")
    assert ExtensionPattern("a.b").matches("a.b")
    assert not ExtensionPattern("a.b").matches("axb")
    assert ExtensionPattern("_[.]X").matches(".5")
    assert not ExtensionPattern("_[.]X").matches("55")


def test_pattern_none_never_matches() -> None:
    assert not ExtensionPattern("_!").matches(None)
    assert not ExtensionPattern("600").matches(None)


def test_set_range_needs_three_characters_like_asterisk() -> None:
    # '[2-4-]' is the range 2-4 plus a literal '-'; a '-' at the end is a member.
    assert ExtensionPattern("_[2-4-]").regex == r"[2-4\-]"
    assert ExtensionPattern("_[-1]").matches("1")


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("", "empty"),
        ("_", "empty"),
        ("_--", "empty"),
        ("-", "empty"),
        ("_1[23", "unclosed '['"),
        ("_[]X", "empty '[]'"),
        ("_[9-1]", "reversed range '9-1'"),
        ("_X.1", "'.' must be the last"),
        ("_X!X", "'!' must be the last"),
    ],
)
def test_invalid_patterns_raise_config_error_naming_the_pattern(pattern: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        ExtensionPattern(pattern)
    message = str(info.value)
    assert f"invalid extension pattern {pattern!r}" in message
    assert reason in message


def test_pattern_must_be_text() -> None:
    with pytest.raises(ConfigError, match="must be a string"):
        ExtensionPattern(600)  # type: ignore[arg-type]


def test_pattern_equality_repr_and_coerce() -> None:
    p = ExtensionPattern("_X.")
    assert p == ExtensionPattern("_X.")
    assert p != ExtensionPattern("_X!")
    assert hash(p) == hash(ExtensionPattern("_X."))
    assert repr(p) == "ExtensionPattern('_X.')"
    assert ExtensionPattern.coerce(p) is p
    assert ExtensionPattern.coerce("_X.") == p
    assert p.is_pattern and not ExtensionPattern("600").is_pattern


# ------------------------------------------------------------------------- CallInfo


def _info(**kwargs: Any) -> CallInfo:
    base: dict[str, Any] = {"channel_name": "PJSIP/caller-00000001"}
    base.update(kwargs)
    return CallInfo(**base)


STASIS_START: dict[str, Any] = {
    "type": "StasisStart",
    "application": "voxtra",
    "args": ["4321"],
    "channel": {
        "id": "1700000000.12",
        "name": "PJSIP/caller-0000000c",
        "state": "Ring",
        "caller": {"name": "Alice", "number": "+441234567890"},
        "connected": {"name": "", "number": ""},
        "dialplan": {"context": "from-sip", "exten": "4321", "priority": 1},
        "channelvars": {"VOXTRA_CALLED_NUMBER": "+442071234567", "LANG": "en"},
    },
}


def test_call_info_from_stasis_start() -> None:
    info = CallInfo.from_stasis_start(STASIS_START)
    assert info == CallInfo(
        channel_name="PJSIP/caller-0000000c",
        extension="4321",
        called_number="+442071234567",
        caller="+441234567890",
        caller_name="Alice",
        context="from-sip",
        args=("4321",),
        variables={"VOXTRA_CALLED_NUMBER": "+442071234567", "LANG": "en"},
    )


def test_call_info_extension_falls_back_to_dialplan_and_number_to_extension() -> None:
    channel = {
        "name": "Local/x@voxtra-test-00000001;2",
        "caller": {"name": "", "number": ""},
        "dialplan": {"context": "voxtra-test", "exten": "777"},
    }
    info = CallInfo.from_ari(channel, [])
    assert info.extension == "777"
    assert info.called_number == "777"
    assert info.caller is None and info.caller_name is None
    assert info.args == ()
    # An empty first argument is not an extension either.
    assert CallInfo.from_ari(channel, ["", "x"]).extension == "777"


def test_call_info_extra_variables_override_channelvars() -> None:
    info = CallInfo.from_ari(
        STASIS_START["channel"], ["4321"], variables={"VOXTRA_CALLED_NUMBER": "100"}
    )
    assert info.called_number == "100"
    assert info.variables["LANG"] == "en"


def test_call_info_is_immutable() -> None:
    info = CallInfo.from_stasis_start(STASIS_START)
    with pytest.raises(TypeError):
        info.variables["LANG"] = "fr"  # type: ignore[index]
    with pytest.raises(AttributeError):
        info.extension = "1"  # type: ignore[misc]


def test_call_info_rejects_malformed_events() -> None:
    from voxtra.errors import VoxtraError

    with pytest.raises(VoxtraError, match="'args' is not a list"):
        CallInfo.from_stasis_start({"args": "4321", "channel": {}})
    with pytest.raises(VoxtraError, match="expected an ARI channel object"):
        CallInfo.from_ari("PJSIP/1")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- routes


async def sales(call: Any) -> None:
    call.append("sales")


async def support(call: Any) -> None:
    call.append("support")


async def fallback(call: Any) -> None:
    call.append("fallback")


def test_route_without_criteria_matches_everything() -> None:
    route = Route(sales)
    assert route.is_catch_all
    assert route.matches(_info())
    assert route.matches(_info(extension="1", caller="2", context="x", args=("a",)))


def test_route_extension_number_caller_context() -> None:
    route = Route(sales, extension="_1XX", number="_+44.", caller="_07!", context="from-sip")
    good = _info(extension="123", called_number="+442071", caller="0790", context="from-sip")
    assert route.matches(good)
    for change in (
        {"extension": "223"},
        {"called_number": "+33123"},
        {"caller": "0890"},
        {"caller": None},
        {"context": "from-trunk"},
        {"context": None},
    ):
        fields = {
            "extension": good.extension,
            "called_number": good.called_number,
            "caller": good.caller,
            "context": good.context,
            **change,
        }
        assert not route.matches(_info(**fields)), change


def test_route_args_prefix_and_predicate() -> None:
    prefix = Route(sales, args=["queue-agent"])
    assert prefix.matches(_info(args=("queue-agent",)))
    assert prefix.matches(_info(args=("queue-agent", "extra")))
    assert not prefix.matches(_info(args=()))
    assert not prefix.matches(_info(args=("other", "queue-agent")))
    assert Route(sales, args="queue-agent").args == ("queue-agent",)
    assert Route(sales, args=()).matches(_info(args=()))  # empty prefix: any args

    def two_args(args: tuple[str, ...]) -> bool:
        return len(args) == 2

    predicate = Route(sales, args=two_args)
    assert predicate.matches(_info(args=("a", "b")))
    assert not predicate.matches(_info(args=("a",)))


def test_route_variables_exact_and_pattern() -> None:
    route = Route(sales, variables={"LANG": "en", "TENANT": "_X."})
    assert route.matches(_info(variables={"LANG": "en", "TENANT": "42"}))
    assert not route.matches(_info(variables={"LANG": "EN", "TENANT": "42"}))
    assert not route.matches(_info(variables={"LANG": "en", "TENANT": "4"}))
    assert not route.matches(_info(variables={"LANG": "en"}))  # missing variable
    # Exact values are exact: no dash folding, unlike patterns.
    exact = Route(sales, variables={"ID": "a-b"})
    assert exact.matches(_info(variables={"ID": "a-b"}))
    assert not exact.matches(_info(variables={"ID": "ab"}))


def test_route_rejects_bad_declarations() -> None:
    def not_async(call: Any) -> None:
        return None

    with pytest.raises(ConfigError, match="must be 'async def'"):
        Route(not_async)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="must be an async function"):
        Route("sales")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=re.escape("invalid extension pattern '_1[2'")):
        Route(sales, extension="_1[2")
    with pytest.raises(ConfigError, match="variable criterion must be a string"):
        Route(sales, variables={"X": 1})  # type: ignore[dict-item]


def test_route_repr_names_its_criteria() -> None:
    route = Route(
        sales,
        extension="_1XX",
        caller="_+44.",
        context="from-sip",
        args=["a"],
        variables={"LANG": "en"},
        metadata={"team": "sales"},
    )
    assert repr(route) == (
        "Route(name='sales', extension='_1XX', caller='_+44.', context='from-sip', "
        "args=('a',), variables={'LANG': 'en'}, metadata={'team': 'sales'})"
    )
    assert repr(Route(support, name="help")) == "Route(name='help')"


# --------------------------------------------------------------------------- router


async def test_routes_are_tried_in_declaration_order() -> None:
    router = Router()
    router.add(Route(sales, extension="_1XX", metadata={"team": "sales"}))
    router.add(Route(support, extension="_1X.", metadata={"team": "support"}))
    match = await router.resolve(_info(extension="123"))
    assert match == RouteMatch(sales, router.routes[0], {"team": "sales"})
    match = await router.resolve(_info(extension="1234"))
    assert match is not None and match.handler is support
    assert match.metadata == {"team": "support"}
    assert await router.resolve(_info(extension="999")) is None


async def test_default_handler_when_nothing_matches() -> None:
    router = Router([Route(sales, extension="100")], default=fallback)
    match = await router.resolve(_info(extension="200"))
    assert match == RouteMatch(fallback, None, {})
    match = await router.resolve(_info(extension="100"))
    assert match is not None and match.handler is sales


async def test_metadata_is_a_fresh_copy_per_call() -> None:
    router = Router([Route(sales, metadata={"team": "sales"})])
    first = await router.resolve(_info())
    assert first is not None
    first.metadata["mutated"] = True  # type: ignore[index]
    second = await router.resolve(_info())
    assert second is not None and second.metadata == {"team": "sales"}


async def test_decorator_registers_and_returns_handler() -> None:
    router = Router()

    @router.route("_2XX", caller="_+1!", metadata={"kind": "us"}, name="us-sales")
    async def us_sales(call: Any) -> None:
        call.append("us")

    @router.set_default
    async def other(call: Any) -> None:
        call.append("other")

    calls: list[str] = []
    await us_sales(calls)  # the decorator returned the function itself
    assert calls == ["us"]
    assert [r.name for r in router.routes] == ["us-sales"]
    match = await router.resolve(_info(extension="234", caller="+1555"))
    assert match is not None and match.handler is us_sales
    assert match.metadata == {"kind": "us"}
    match = await router.resolve(_info(extension="234", caller="+44"))
    assert match is not None and match.handler is other


async def test_decorator_accepts_args_from_an_iterator() -> None:
    router = Router()
    router.route(args=(a for a in ["ivr", "en"]))(sales)
    assert router.routes[0].args == ("ivr", "en")
    match = await router.resolve(_info(args=("ivr", "en", "x")))
    assert match is not None and match.handler is sales


def test_decorator_validates_pattern_when_declared() -> None:
    router = Router()
    with pytest.raises(ConfigError, match="unclosed"):
        router.route("_[12")
    assert len(router) == 0


async def test_dispatcher_first_then_routes_then_default() -> None:
    seen: list[CallInfo] = []

    async def dispatcher(info: CallInfo) -> Any:
        seen.append(info)
        if info.extension == "db-handler":
            return support
        if info.extension == "db-route":
            # the dispatcher's Route is used as is, even though its criteria differ
            return Route(support, extension="nope", metadata={"from": "db"})
        return None

    router = Router([Route(sales, extension="_db-!")], default=fallback, dispatcher=dispatcher)
    match = await router.resolve(_info(extension="db-handler"))
    assert match == RouteMatch(support, None, {})
    match = await router.resolve(_info(extension="db-route"))
    assert match is not None and match.handler is support and match.metadata == {"from": "db"}
    assert match.route is not None and match.route.extension == ExtensionPattern("nope")
    match = await router.resolve(_info(extension="db-other"))
    assert match is not None and match.handler is sales  # dispatcher said None
    match = await router.resolve(_info(extension="999"))
    assert match is not None and match.handler is fallback
    assert [i.extension for i in seen] == ["db-handler", "db-route", "db-other", "999"]


async def test_sync_dispatcher_is_accepted() -> None:
    router = Router()

    @router.set_dispatcher
    def by_caller(info: CallInfo) -> Any:
        return sales if info.caller == "1" else None

    match = await router.resolve(_info(caller="1"))
    assert match is not None and match.handler is sales
    assert await router.resolve(_info(caller="2")) is None


async def test_dispatcher_errors_are_routing_errors() -> None:
    async def broken(info: CallInfo) -> Any:
        raise KeyError("tenant")

    async def wrong(info: CallInfo) -> Any:
        return 42

    with pytest.raises(RoutingError, match=r"dispatcher .*broken failed: KeyError") as info:
        await Router(dispatcher=broken).resolve(_info())
    assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(RoutingError, match="returned 42; expected a handler, a Route or None"):
        await Router(dispatcher=wrong).resolve(_info())


def test_a_dispatcher_that_cannot_take_the_call_info_fails_when_set() -> None:
    """As a route handler: at the line that set it, not as a RoutingError on every
    call (each then went to the unrouted policy)."""

    async def no_info() -> Any: ...

    async def two(info: CallInfo, tenant: str) -> Any: ...

    router = Router()
    with pytest.raises(CallbackSignatureError, match=r"dispatcher: .*no_info\(\) takes \(\)"):
        router.set_dispatcher(no_info)  # type: ignore[arg-type]
    with pytest.raises(CallbackSignatureError, match=r"two\(\) takes"):
        Router(dispatcher=two)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="dispatcher: expected a callable"):
        router.set_dispatcher(42)  # type: ignore[arg-type]
    assert router.dispatcher is None


async def test_a_handler_a_dispatcher_returns_is_checked_before_it_runs() -> None:
    """A plain ``def`` (or one without the call parameter) that a dispatcher returns
    used to be run as the handler: a TypeError inside the call, logged as the
    handler's. It is a RoutingError naming the dispatcher and what is wrong."""

    def plain(call: Any) -> None: ...

    async def no_call() -> None: ...

    async def tenant_a(info: CallInfo) -> Any:
        return plain

    async def tenant_b(info: CallInfo) -> Any:
        return no_call

    with pytest.raises(RoutingError, match=r"dispatcher .*tenant_a returned .*plain\(\) must be"):
        await Router(dispatcher=tenant_a).resolve(_info())
    with pytest.raises(RoutingError, match=r"dispatcher .*tenant_b returned .*no_call\(\) takes"):
        await Router(dispatcher=tenant_b).resolve(_info())


def test_route_after_catch_all_warns(caplog: pytest.LogCaptureFixture) -> None:
    router = Router([Route(fallback)])
    with caplog.at_level(logging.WARNING, logger="voxtra.routing"):
        router.add(Route(sales, extension="100"))
    assert "will never be used" in caplog.text


def test_router_add_rejects_non_routes() -> None:
    with pytest.raises(ConfigError, match="expected a Route"):
        Router().add(sales)  # type: ignore[arg-type]


# ------------------------------------------- differential check against real Asterisk

DIFF_PATTERNS = [
    "_X.",
    "_NXX",
    "_nxx!",
    "_[1-5]XX",
    "_Z!",
    "_1NXXNXXXXXX",
    "_[135-7]X",
    "_[2-4-]X",
    "_555-XXXX",
    "_+X.",
    "_[a-zA-Z].",
    "_tra5sfer-[a-z0-9].",
    "_transfer-[a-z0-9].",
    "_.",
    "600",
    "6-01",
]
DIFF_VALUES = [
    "1",
    "12",
    "234",
    "134",
    "601",
    "600",
    "6-00",
    "5551234",
    "555-1234",
    "12125551234",
    "+4420",
    "ab",
    "transfer-abc",
    "tra5sfer-x1",
    "-5",
    "3-1",
    "00",
    "h",
]


def _asterisk_cli() -> Any:
    """The sandbox's CLI runner, or a skip when no sandbox Asterisk is running here."""
    try:
        from voxtra.testing.asterisk import AsteriskSandbox, SandboxUnavailable
    except ImportError as exc:  # pragma: no cover - the sandbox module ships with voxtra
        pytest.skip(f"sandbox module unavailable: {exc}")
    sandbox = AsteriskSandbox()
    try:
        if sandbox.pid() is None:
            pytest.skip("the Asterisk sandbox is not running")
        sandbox.cli("core show version", timeout=5)
    except (SandboxUnavailable, OSError) as exc:
        pytest.skip(f"the Asterisk sandbox CLI is unavailable: {exc}")
    return sandbox.cli


@pytest.mark.asterisk
def test_patterns_agree_with_real_asterisk() -> None:
    """Asterisk's own matcher (`dialplan show VALUE@CONTEXT`) decides the same as ours."""
    cli = _asterisk_cli()
    context = "voxtra-routing-check"
    try:
        for pattern in DIFF_PATTERNS:
            out = cli(f"dialplan add extension {pattern},1,NoOp() into {context} replace")
            assert "replace by" in out or "added" in out.lower(), out
        listed = re.findall(r"'([^']+)' =>", cli(f"dialplan show {context}"))
        assert sorted(listed) == sorted(DIFF_PATTERNS)
        compiled = {p: ExtensionPattern(p) for p in DIFF_PATTERNS}
        for value in DIFF_VALUES:
            out = cli(f"dialplan show {value}@{context}")
            theirs = set(re.findall(r"'([^']+)' =>", out))
            ours = {p for p, c in compiled.items() if c.matches(value)}
            assert ours == theirs, f"value {value!r}: Asterisk {theirs}, Voxtra {ours}"
    finally:
        cli(f"dialplan remove context {context}")
