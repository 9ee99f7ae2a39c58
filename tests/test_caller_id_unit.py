"""Caller ID rules (sans-IO) and the per-user policy columns of the store."""

from __future__ import annotations

from pathlib import Path

import pytest

from b2bua.calls.caller_id import Caller, TrunkIdentity, present_identity, wants_privacy
from b2bua.config import ConfigError, load_config
from b2bua.sip.message import Headers, Request
from b2bua.sip.uri import parse_uri
from b2bua.store import Store, UnknownUser
from b2bua.store.user_policy import UserPolicy, UserPolicyStore


def invite(*extra: tuple[str, str]) -> Request:
    return Request("INVITE", parse_uri("sip:0049301234@198.51.100.1"), Headers([
        ("From", '"Bank" <sip:+4930999999@evil.example>;tag=ours1'),
        ("To", "<sip:0049301234@198.51.100.1>"), ("Call-ID", "b-leg"), ("CSeq", "1 INVITE"),
        ("P-Asserted-Identity", "<sip:+4930999999@evil.example>"),
        ("P-Preferred-Identity", "<sip:+4930999999@evil.example>"),
        ("Remote-Party-ID", "<sip:+4930999999@evil.example>;party=calling"), *extra]), b"")


def test_identity_is_rebuilt_and_claims_removed() -> None:
    request = invite()
    present_identity(request, Caller("+4930123", "Desk"), TrunkIdentity(), "pbx.example", False)
    assert request.headers.get_all("From") == ['"Desk" <sip:+4930123@pbx.example>;tag=ours1']
    assert request.headers.get_all("P-Asserted-Identity") == ['"Desk" <sip:+4930123@pbx.example>']
    assert request.headers.get_all("Remote-Party-ID") == []
    assert request.headers.get_all("P-Preferred-Identity") == []


def test_account_policy_and_no_display_name() -> None:
    request = invite()
    policy = TrunkIdentity("account", "acct42", send_display_name=False)
    present_identity(request, Caller("+4930123", "Desk"), policy, "pbx.example", False)
    assert request.headers.get_all("From") == ["<sip:acct42@pbx.example>;tag=ours1"]
    assert request.headers.get_all("P-Asserted-Identity") == ["<sip:+4930123@pbx.example>"]


def test_privacy_gives_an_anonymous_from_and_keeps_the_assertion() -> None:
    request = invite(("Privacy", "id"))
    assert wants_privacy(request)
    present_identity(request, Caller("1111"), TrunkIdentity(), "pbx.example", True)
    assert request.from_.uri.host == "anonymous.invalid" and request.from_.params["tag"] == "ours1"
    assert request.headers.get_all("P-Asserted-Identity") == ["<sip:1111@pbx.example>"]
    assert request.headers.get_all("Privacy") == ["id"]


@pytest.mark.parametrize("value, wanted", [("none", False), ("id", True), ("header; id", True),
                                           ("critical", False)])
def test_privacy_values(value: str, wanted: bool) -> None:
    assert wants_privacy(invite(("Privacy", value))) is wanted


def test_policy_store_defaults_updates_and_checks() -> None:
    store = Store.open(":memory:")
    store.users.add("1111", "r", "pw")
    policies = UserPolicyStore(store.db)
    assert policies.get("1111", "r") == UserPolicy("1111")
    assert policies.get("1111", "r").number == "1111"
    policies.set_caller_id("1111", "r", "+4930123")
    policies.set_max_calls("1111", "r", 2)
    policies.set_trunk_calls("1111", "r", False)
    assert policies.get("1111", "r") == UserPolicy("1111", "+4930123", 2, False)
    with pytest.raises(ValueError):
        policies.set_caller_id("1111", "r", "evil.example")
    with pytest.raises(UnknownUser):
        policies.set_max_calls("nobody", "r", 1)
    assert policies.get("nobody", "r") is None


def test_trunk_caller_id_keys(tmp_path: Path) -> None:
    path = tmp_path / "b2bua.toml"
    path.write_text('[[trunk]]\nname = "c"\nuri = "sip:192.0.2.1"\nusername = "a"\n'
                    'from_user = "account"\nsend_display_name = false\n')
    trunk = load_config(path, environ={}).trunks[0]
    assert trunk.from_user == "account" and trunk.send_display_name is False
    path.write_text('[[trunk]]\nname = "c"\nuri = "sip:192.0.2.1"\nfrom_user = "account"\n')
    with pytest.raises(ConfigError, match=r"trunk\[0\]\.from_user: \"account\" needs username"):
        load_config(path, environ={})
