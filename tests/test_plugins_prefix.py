"""plugins.prefix: longest-prefix match of the number -> ToTrunk with strip/prepend."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from b2bua.routing import (
    RequestView,
    RouterConfigError,
    RouterContext,
    ToTrunk,
    TrunkInfo,
)
from plugins.prefix import PrefixRouter

TRUNKS = {
    name: TrunkInfo(name, f"sip:{name}.example.net") for name in ("carrier", "backup", "intl")
}
CONTEXT = RouterContext("sip.example.com", lambda name: False, TRUNKS, Clock())

ROUTES: list[dict[str, Any]] = [
    {"prefix": "00", "trunk": "intl", "strip": 2, "prepend": "+"},
    {"prefix": "0049", "trunk": "carrier", "strip": 4, "prepend": "+49"},
    {"prefix": "+", "trunk": "carrier"},
    {"prefix": "0", "trunk": "carrier", "strip": 1, "prepend": "+4930"},
]


def view(user: str | None, trunk: str | None = None) -> RequestView:
    return RequestView(
        method="INVITE", request_uri=f"sip:{user}@sip.example.com", ruri_user=user, trunk=trunk
    )


def router(routes: list[dict[str, Any]] = ROUTES, **options: Any) -> PrefixRouter:
    return PrefixRouter({"routes": routes, **options}, CONTEXT)


@pytest.mark.parametrize(
    ("number", "decision"),
    [
        ("00441234", ToTrunk("intl", "+441234")),
        ("0049301234", ToTrunk("carrier", "+49301234")),  # longer "0049" beats "00" and "0"
        ("+4930123", ToTrunk("carrier", "+4930123")),
        ("0301234", ToTrunk("carrier", "+4930301234")),
        ("0", ToTrunk("carrier", "+4930")),
        ("+4930123;npdi", ToTrunk("carrier", "+4930123")),
        ("1111", None),
        ("", None),
    ],
)
def test_longest_prefix_wins(number: str, decision: ToTrunk | None) -> None:
    assert router().route(view(number)) == decision


def test_no_user_declines() -> None:
    assert router().route(view(None)) is None


def test_empty_prefix_is_a_default_route_tried_last() -> None:
    prefix = router(ROUTES + [{"prefix": "", "trunk": "backup"}])
    assert prefix.route(view("1111")) == ToTrunk("backup", "1111")
    assert prefix.route(view("+1555")) == ToTrunk("carrier", "+1555")


def test_calls_from_trunks_are_routed_unless_disabled() -> None:
    assert router().route(view("+4930", trunk="carrier")) == ToTrunk("carrier", "+4930")
    assert router(from_trunk=False).route(view("+4930", trunk="carrier")) is None
    assert router(from_trunk=False).route(view("+4930")) == ToTrunk("carrier", "+4930")


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({}, "routes"),
        ({"routes": []}, "routes"),
        ({"routes": {"prefix": "0"}}, "routes"),
        ({"routes": ["0"]}, "routes[0]"),
        ({"routes": [{"trunk": "carrier"}]}, "routes[0].prefix"),
        ({"routes": [{"prefix": 0, "trunk": "carrier"}]}, "routes[0].prefix"),
        ({"routes": [{"prefix": "0"}]}, "routes[0].trunk"),
        ({"routes": [{"prefix": "0", "trunk": "nope"}]}, "routes[0].trunk"),
        ({"routes": [{"prefix": "0", "trunk": "carrier", "strip": 2}]}, "routes[0].strip"),
        ({"routes": [{"prefix": "0", "trunk": "carrier", "strip": -1}]}, "routes[0].strip"),
        ({"routes": [{"prefix": "0", "trunk": "carrier", "strip": True}]}, "routes[0].strip"),
        ({"routes": [{"prefix": "0", "trunk": "carrier", "prepend": 49}]}, "routes[0].prepend"),
        ({"routes": [{"prefix": "0", "trunk": "carrier", "strp": 1}]}, "routes[0].strp"),
        (
            {"routes": [{"prefix": "0", "trunk": "carrier"}, {"prefix": "0", "trunk": "backup"}]},
            "routes[1].prefix",
        ),
        ({"routes": [{"prefix": "0", "trunk": "carrier"}], "from_trunk": "no"}, "from_trunk"),
    ],
)
def test_config_errors_name_the_key(options: dict[str, Any], key: str) -> None:
    with pytest.raises(RouterConfigError) as caught:
        PrefixRouter(options, CONTEXT)
    assert caught.value.key == key


def test_unknown_trunk_message_lists_the_known_ones() -> None:
    with pytest.raises(
        RouterConfigError, match=r"no \[\[trunk\]\] named 'nope' \(known: backup, carrier, intl\)"
    ):
        router([{"prefix": "0", "trunk": "nope"}])


def test_a_list_of_trunks_becomes_alternatives() -> None:
    from twisted.internet.task import Clock

    from b2bua.routing import RequestView, RouterContext, ToTrunk, TrunkInfo
    from plugins.prefix import PrefixRouter
    trunks = {n: TrunkInfo(n, f"sip:{n}.example") for n in ("a", "b", "c")}
    context = RouterContext("example.com", lambda name: False, trunks, Clock())
    router = PrefixRouter({"routes": [{"prefix": "00", "trunk": ["a", "b", "c"]}]}, context)
    view = RequestView(method="INVITE", request_uri="sip:0049@x", ruri_user="0049")
    assert router.route(view) == ToTrunk("a", "0049", ("b", "c"))
