"""The identity a call from a local user shows the carrier, and who may call out at all.

A phone writes what it likes in From (``"Bank" <sip:+4930999999@evil.example>``). Toward a
trunk only the identity it authenticated as counts: From and P-Asserted-Identity (RFC 3325)
are rebuilt from the user's configured caller number, whatever the phone claimed. The phone's
``Privacy: id`` (RFC 3323) is honoured by an anonymous From while PAI still tells the trusted
carrier who calls. Per trunk, the From user is the caller number or the trunk account (some
carriers accept only their account there) and the display name is the user's configured one
or none; the phone's display name never passes.

Hooked into a Call through ``on_branch`` (called for every B-leg INVITE before it leaves), so
the call code itself needs no change; limits are checked by the call table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from b2bua.sip.headers import NameAddr
from b2bua.sip.message import Request
from b2bua.sip.uri import parse_uri

FromUser = Literal["caller_id", "account"]
#: Identity headers a phone may have set that must never reach a carrier.
CLAIMED_IDENTITY = ("P-Asserted-Identity", "P-Preferred-Identity", "Remote-Party-ID")
ANONYMOUS_FROM = '"Anonymous" <sip:anonymous@anonymous.invalid>'


@dataclass(frozen=True, slots=True)
class TrunkIdentity:
    """One trunk's caller-ID policy ([[trunk]] ``from_user``, ``send_display_name``)."""

    from_user: FromUser = "caller_id"
    account: str = ""
    send_display_name: bool = True


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls, as the store knows them."""

    number: str
    display_name: str | None = None


def wants_privacy(request: Request) -> bool:
    """True when the phone asked to hide its identity (``Privacy: id`` or ``header``)."""
    values = ",".join(request.headers.get_all("Privacy")).replace(";", ",")
    return any(v.strip().lower() in ("id", "header", "user") for v in values.split(","))


def present_identity(invite: Request, caller: Caller, policy: TrunkIdentity, domain: str,
                     privacy: bool) -> None:
    """Rewrite our B-leg ``invite`` (in place) to show ``caller`` to the carrier.

    The From tag stays (it is our dialog's); the host is our domain.
    """
    tag = invite.from_.params.get("tag")
    host = f"[{domain}]" if ":" in domain and not domain.startswith("[") else domain
    display = caller.display_name if policy.send_display_name else None
    asserted = NameAddr(parse_uri(f"sip:{caller.number}@{host}"), display)
    if privacy:
        from_addr = NameAddr.parse(ANONYMOUS_FROM)
    else:
        user = policy.account if policy.from_user == "account" and policy.account \
            else caller.number
        from_addr = NameAddr(parse_uri(f"sip:{user}@{host}"), display)
    from_addr.params = {"tag": tag}
    headers = invite.headers
    headers.set("From", str(from_addr))
    for name in CLAIMED_IDENTITY:
        headers.remove(name)
    headers.add("P-Asserted-Identity", str(asserted))
    if privacy and not wants_privacy(invite):
        headers.add("Privacy", "id")


class CallerIdPolicy:
    """Applies the caller-ID rules to a Call's trunk branches; answers per-user limits.

    ``policies.get(name, realm)`` gives a `UserPolicy` (caller number, limits) and
    ``users.get(name, realm)`` a `User` (its configured display name); both are cached reads.
    """

    def __init__(self, domain: str, realm: str, trunks: Mapping[str, TrunkIdentity],
                 policies: Any, users: Any) -> None:
        self.domain = domain
        self.realm = realm
        self.trunks = dict(trunks)
        self._policies = policies
        self._users = users

    def caller(self, user: str) -> Caller:
        policy = self._policies.get(user, self.realm)
        stored = self._users.get(user, self.realm)
        return Caller(policy.number if policy is not None else user,
                      stored.display_name if stored is not None else None)

    def may_call_trunk(self, user: str) -> bool:
        policy = self._policies.get(user, self.realm)
        return policy is None or bool(policy.trunk_calls)

    def max_calls(self, user: str) -> int:
        """The user's concurrent call limit; 0 = none."""
        policy = self._policies.get(user, self.realm)
        return int(policy.max_calls) if policy is not None else 0

    def on_branch(self, call: Any, branch: Any) -> None:
        """For a Call's ``on_branch``: rewrite a branch toward a trunk of a user's call."""
        if branch.trunk is None or call.caller is None or branch.request is None:
            return
        policy = self.trunks.get(branch.trunk, TrunkIdentity())
        present_identity(branch.request, self.caller(call.caller), policy, self.domain,
                         wants_privacy(call.a_request))
