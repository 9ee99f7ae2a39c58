"""plugins.local_users: R-URI user or number alias -> LocalUser when the user exists."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from b2bua.routing import LocalUser, RequestView, RouterConfigError, RouterContext, Targets
from plugins.local_users import LocalUsersRouter

USERS = {"1111", "2222"}
CONTEXT = RouterContext("sip.example.com", lambda name: name in USERS, {}, Clock())


def view(user: str | None, host: str = "sip.example.com") -> RequestView:
    uri = f"sip:{user}@{host}" if user else f"sip:{host}"
    return RequestView(method="INVITE", request_uri=uri, ruri_user=user, ruri_host=host)


def router(**options: Any) -> LocalUsersRouter:
    return LocalUsersRouter(options, CONTEXT)


def test_existing_user_by_name() -> None:
    assert router().route(view("1111")) == LocalUser("1111")


def test_unknown_or_disabled_user_and_no_user_decline() -> None:
    assert router().route(view("9999")) is None
    assert router().route(view(None)) is None


def test_lookup_is_asked_at_routing_time_so_new_users_are_found() -> None:
    asked: list[str] = []

    def lookup_user(name: str) -> bool:
        asked.append(name)
        return name == "3333"

    context = RouterContext("d", lookup_user, {}, Clock())
    local = LocalUsersRouter({}, context)
    assert local.route(view("3333")) == LocalUser("3333") and asked == ["3333"]


def test_number_alias_maps_to_a_user() -> None:
    local = router(numbers={"+4930123": "1111", "+4930999": "nobody"})
    assert local.route(view("+4930123")) == LocalUser("1111")
    assert local.route(view("+4930123;npdi")) == LocalUser("1111")
    assert local.route(view("+4930999")) is None  # alias to a user that does not exist
    assert local.route(view("2222")) == LocalUser("2222")  # names still work


def test_domains_restrict_the_host() -> None:
    local = router(domains=["sip.example.com", "192.0.2.1"])
    assert local.route(view("1111", "SIP.Example.com")) == LocalUser("1111")
    assert local.route(view("1111", "192.0.2.1")) == LocalUser("1111")
    assert local.route(view("1111", "elsewhere.org")) is None
    assert router().route(view("1111", "elsewhere.org")) == LocalUser("1111")


def test_fallback_rides_on_the_decision() -> None:
    local = router(fallback="sip:voicemail@127.0.0.1:5080")
    assert local.route(view("1111")) == LocalUser(
        "1111", fallback=Targets(("sip:voicemail@127.0.0.1:5080",))
    )


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"numbers": ["+49"]}, "numbers"),
        ({"numbers": {"+49": 1111}}, 'numbers."+49"'),
        ({"numbers": {"49": ""}}, "numbers.49"),
        ({"domains": "sip.example.com"}, "domains"),
        ({"domains": [1]}, "domains[0]"),
        ({"fallback": "voicemail"}, "fallback"),
        ({"number": {}}, "number"),
    ],
)
def test_config_errors_name_the_key(options: dict[str, Any], key: str) -> None:
    with pytest.raises(RouterConfigError) as caught:
        router(**options)
    assert caught.value.key == key
