"""Read what a REGISTER asks for: its Contacts, their expiry and push data.

Pure functions over a parsed request (no store, no clock), so that the rules
of RFC 3261 §10.3 step 6, RFC 5626 (``+sip.instance``/``reg-id``) and the two
push-token forms (``X-MPUSH`` and RFC 8599 Contact URI parameters) can be read
and tested on their own.  A request we must refuse raises
:class:`RegisterRejected` carrying the status and the headers to answer with.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from twisted.logger import Logger

from b2bua.registrar.push_token import (
    APNS,
    DEFAULT_PROVIDERS,
    FCM,
    RFC8599_PROVIDERS,
    MalformedPushToken,
    PROVIDER_NAMES,
    SOURCE_DISABLED,
    NullToken,
    PushBinding,
    UnsupportedPushProvider,
    parse_rfc8599,
    parse_x_mpush,
)
from b2bua.sip.digest import MalformedCredentials, parse_credentials
from b2bua.sip.errors import SipError
from b2bua.sip.headers import NameAddr, unquote
from b2bua.sip.message import Request
from b2bua.sip.uri import SipUri, parse_uri
from b2bua.store.bindings import Binding

__all__ = [
    "PNSREG_INTERVAL",
    "ContactRequest",
    "RegisterRejected",
    "RegisterRequest",
    "contact_value",
    "digest_credentials",
    "other_instance",
    "read_register",
    "same_for_removal",
    "uri_equal",
]

PNSREG_INTERVAL = 130
"""``+sip.pnsreg`` value (RFC 8599 §5.3): how many seconds before expiry a phone
that can wake itself should refresh.  OpenSIPS uses the same default."""


class RegisterRejected(SipError):
    """A REGISTER refused with ``status``; ``extra`` headers go into the answer."""

    def __init__(self, status: int, reason: str,
                 extra: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(reason, status)
        self.extra = tuple(extra)


class ContactRequest(NamedTuple):
    """One Contact of a REGISTER, read and checked."""

    uri: str
    expires: int  # seconds, already capped; 0 removes
    q: float | None
    instance_id: str | None  # "+sip.instance" without its quotes
    reg_id: int | None
    push: PushBinding | None  # RFC 8599 parameters, else the request's X-MPUSH
    pns_provider: str | None  # RFC 8599 pn-provider to confirm in Feature-Caps
    pnsreg: bool  # the Contact carried the +sip.pnsreg feature tag


class RegisterRequest(NamedTuple):
    """The binding changes a REGISTER asks for."""

    contacts: tuple[ContactRequest, ...]
    star: bool  # "Contact: *" with "Expires: 0": remove every binding
    null_push: bool  # "X-MPUSH: p:pkg:null": drop the device's push binding
    feature_caps: str | None  # the 200's Feature-Caps (RFC 8599), if any


def read_register(request: Request, min_expires: int, max_expires: int,
                  default_expires: int, log: Logger,
                  enabled: frozenset[str] | None = None) -> RegisterRequest:
    """Read ``request``; raise :class:`RegisterRejected` (400/423) or
    ``UnsupportedPushProvider`` (555).  ``enabled`` names the providers we can push
    through ("apns", "fcm"; None: all we know): RFC 8599 asks for another get 555, an
    X-MPUSH token for another known one is not kept (``SOURCE_DISABLED``)."""
    header_expires = _header_expires(request)
    if request.contact_star:
        if request.contacts or header_expires != 0:
            raise RegisterRejected(400, "Contact * Needs Expires 0 And No Other Contact")
        return RegisterRequest((), True, False, None)
    x_mpush = _x_mpush(request, log, enabled)
    contacts = []
    for name_addr in request.contacts:
        contact = _read_contact(name_addr, header_expires, x_mpush, default_expires,
                                max_expires, log, enabled)
        if 0 < contact.expires < min_expires:
            raise RegisterRejected(423, "Interval Too Brief",
                                   [("Min-Expires", str(min_expires))])
        contacts.append(contact)
    return RegisterRequest(tuple(contacts), False, isinstance(x_mpush, NullToken),
                           _feature_caps(contacts))


def _header_expires(request: Request) -> int | None:
    try:
        return request.expires
    except SipError:
        return None  # RFC 3261 §20.19: treat a malformed value as absent


def _x_mpush(request: Request, log: Logger,
             enabled: frozenset[str] | None) -> PushBinding | NullToken | None:
    try:
        push = parse_x_mpush(request.headers.get("X-MPUSH"))
    except MalformedPushToken as error:
        log.info("ignoring the X-MPUSH of {call_id}: {why}",
                 call_id=request.headers.get("Call-ID"), why=str(error))
        return None
    if isinstance(push, PushBinding) and push.provider not in (APNS, FCM):
        log.info("X-MPUSH with unknown provider {provider!r} stored as sent",
                 provider=push.provider)
    elif isinstance(push, PushBinding) and enabled is not None and \
            PROVIDER_NAMES[push.provider] not in enabled:
        return PushBinding(push.provider, push.package, "", push.topic, SOURCE_DISABLED)
    return push


def _read_contact(name_addr: NameAddr, header_expires: int | None,
                  x_mpush: PushBinding | NullToken | None, default_expires: int,
                  max_expires: int, log: Logger,
                  enabled: frozenset[str] | None = None) -> ContactRequest:
    uri = name_addr.uri
    if not isinstance(uri, SipUri):
        raise RegisterRejected(400, "Contact Is Not A SIP URI")
    try:
        expires = name_addr.expires
    except SipError:
        expires = None  # as for the header: malformed counts as absent
    if expires is None:
        expires = header_expires if header_expires is not None else default_expires
    expires = min(expires, max_expires)
    params = name_addr.params
    instance = params.get("+sip.instance")
    reg_id = params.get("reg-id")
    push, provider = _rfc8599_push(uri, expires, log, enabled)
    if push is None and isinstance(x_mpush, PushBinding):
        push = x_mpush
    try:
        q = name_addr.q
    except SipError:
        q = None
    return ContactRequest(
        uri=str(uri), expires=expires, q=q,
        instance_id=unquote(instance) if instance else None,
        reg_id=int(reg_id) if reg_id and reg_id.isascii() and reg_id.isdigit() else None,
        push=push, pns_provider=provider, pnsreg="+sip.pnsreg" in params)


def _rfc8599_push(uri: SipUri, expires: int, log: Logger,
                  enabled: frozenset[str] | None = None) -> tuple[PushBinding | None, str | None]:
    """(push binding, pn-provider to confirm) from RFC 8599 URI parameters.

    ``pn-provider`` without ``pn-prid`` is a capability query (RFC 8599 §4.1):
    confirm the provider, bind nothing.  A removal binds nothing either.
    """
    if "pn-provider" not in uri.params or expires == 0:
        return None, None
    name = (uri.params["pn-provider"] or "").strip('"').lower()
    supported = DEFAULT_PROVIDERS if enabled is None else tuple(
        p for p in RFC8599_PROVIDERS if p in enabled)
    if not name and supported:
        return None, ",".join(supported)
    if name not in supported:
        raise UnsupportedPushProvider(name, supported)
    if not uri.params.get("pn-prid"):
        return None, name
    try:
        return parse_rfc8599(uri.params), name
    except MalformedPushToken as error:
        log.info("ignoring the RFC 8599 parameters of a contact at {host}: {why}",
                 host=uri.host, why=str(error))
        return None, None


def _feature_caps(contacts: Sequence[ContactRequest]) -> str | None:
    """``Feature-Caps`` for the 200 (RFC 8599 §5.3, RFC 6809 syntax)."""
    providers: list[str] = []
    for contact in contacts:
        if contact.pns_provider and contact.pns_provider not in providers:
            providers.append(contact.pns_provider)
    if not providers:
        return None
    value = '*;+sip.pns="%s"' % ",".join(providers)
    if any(c.pnsreg and c.pns_provider for c in contacts):
        value += ';+sip.pnsreg="%d"' % PNSREG_INTERVAL
    return value


def uri_equal(a: str, b: str) -> bool:
    """RFC 3261 §19.1.4 equality of two contact URIs.  Parameters present in one
    only are ignored, so an RFC 8599 removal without ``pn-prid`` still matches."""
    if a == b:
        return True
    if "%" not in a and "%" not in b and _base(a).lower() != _base(b).lower():
        return False  # user, host or port differ: no need to parse
    try:
        return bool(parse_uri(a) == parse_uri(b))
    except SipError:
        return False


def _base(uri: str) -> str:
    """``sip:user@host:port`` of a URI text, without parameters or headers."""
    return uri.split(";", 1)[0].split("?", 1)[0]


def other_instance(old: Binding, new: Binding) -> bool:
    """Both carry ``+sip.instance``/``reg-id`` and they differ: two devices or flows."""
    return bool(old.instance_id and new.instance_id) and (
        (old.instance_id, old.reg_id) != (new.instance_id, new.reg_id))


def same_for_removal(old: Binding, removal: Binding) -> bool:
    """Does an ``expires=0`` Contact name ``old``?  The device identity of
    upserts: by instance when both have one (RFC 5626 §6), else by push token
    (a phone logging out from another port than it registered from), else by
    contact URI."""
    if removal.instance_id and old.instance_id:
        return (old.instance_id, old.reg_id) == (removal.instance_id, removal.reg_id)
    if removal.push_token and old.push_token == removal.push_token:
        return True
    return uri_equal(old.contact, removal.contact)


_PARAM = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)\s*,?')


def digest_credentials(
        request: Request, realm: str) -> tuple[str | dict[str, str], str] | None:
    """The Digest ``Authorization`` credentials for ``realm`` (else the first
    Digest ones) and their username, for routing and throttling.  The
    credentials are the parsed parameters, handed to the authenticator so the
    value is parsed once; a value the strict parser refuses is returned as
    the raw text (read leniently here) for the authenticator to reject."""
    first: tuple[str | dict[str, str], str] | None = None
    for value in request.headers.get_all("Authorization"):
        if value[:6].lower() != "digest" or value[6:7] not in (" ", "\t"):
            continue
        credentials: str | dict[str, str]
        try:
            credentials = params = parse_credentials(value)
        except MalformedCredentials:
            credentials = value
            params = dict(_param(match) for match in _PARAM.finditer(value, 7))
        username = params.get("username")
        if username is None:
            continue
        if params.get("realm") == realm:
            return credentials, username
        first = first or (credentials, username)
    return first


def _param(match: re.Match[str]) -> tuple[str, str]:
    name, value = match.group(1).lower(), match.group(2)
    if value.startswith('"'):
        value = value[1:-1]
        if "\\" in value:
            value = re.sub(r"\\(.)", r"\1", value)
    return name, value


def contact_value(binding: Binding, now: float) -> str:
    """A Contact of the 200 (RFC 3261 §10.3 step 8): the binding with the
    seconds it has left, its q and its ``+sip.instance``/``reg-id``."""
    remaining = max(0, int(binding.expires_at - now + 0.5))
    text = "<%s>;expires=%d" % (binding.contact, remaining)
    if binding.q is not None:
        text += ";q=%s" % ("%.3f" % binding.q).rstrip("0").rstrip(".")
    if binding.instance_id:
        text += ';+sip.instance="%s"' % binding.instance_id
        if binding.reg_id is not None:
            text += ";reg-id=%d" % binding.reg_id
    return text
