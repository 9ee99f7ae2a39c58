"""Read the push token a phone announces in its REGISTER.

Two forms exist in the field (see ``push-facts.md``):

* ``X-MPUSH: PROVIDER:PACKAGE:TOKEN`` on every REGISTER.  The token itself may
  contain ``:``, so only the first two colons split.  ``i`` is APNs (VoIP topic
  = package + ".voip"), ``a`` is FCM; any other letter is kept as sent (never a
  reason to refuse a REGISTER).  A token of ``null`` means "drop my push
  binding" (apps that log out send it).
* RFC 8599 Contact parameters ``pn-provider``/``pn-param``/``pn-prid``, mapped
  onto the same letters so the rest of the product knows one vocabulary.

Full tokens are secrets of a sort: repr() hides them; log ``short_token()``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote

from b2bua.sip.errors import SipError

__all__ = [
    "APNS",
    "APNS_DEV",
    "DEFAULT_PROVIDERS",
    "FCM",
    "MalformedPushToken",
    "NullToken",
    "PushBinding",
    "PROVIDER_NAMES",
    "RFC8599_PROVIDERS",
    "SOURCE_DISABLED",
    "UnsupportedPushProvider",
    "parse_rfc8599",
    "parse_x_mpush",
    "short_token",
]

APNS = "i"
FCM = "a"
APNS_DEV = "apns.dev"
"""RFC 8599 ``pn-provider=apns.dev`` (Flexisip's name): an app built for APNs' sandbox
(development builds), pushed through ``[apns] sandbox_endpoint``; stored under this name."""
SOURCE_X_MPUSH = "x-mpush"
SOURCE_RFC8599 = "rfc8599"
SOURCE_DISABLED = "disabled"
"""``push_source`` of a device whose token names a provider this server has not enabled:
the contact is bound, the token is not kept (``b2bua-admin bindings`` says why)."""
PROVIDER_NAMES: Mapping[str, str] = {APNS: "apns", FCM: "fcm", APNS_DEV: "apns.dev"}
RFC8599_PROVIDERS: Mapping[str, str] = {"apns": APNS, "fcm": FCM, "apns.dev": APNS_DEV}
"""RFC 8599 pn-provider values we accept, and the X-MPUSH letter each maps to."""
DEFAULT_PROVIDERS = ("apns", "fcm")
"""Those a registrar told nothing about the config supports (apns.dev needs
``[apns] sandbox_endpoint``)."""


class MalformedPushToken(ValueError):
    """An X-MPUSH value or pn-* parameter set we cannot read."""


class UnsupportedPushProvider(SipError):
    """A ``pn-provider`` we cannot push through: RFC 8599 4.1.2 says answer 555
    with ``Feature-Caps`` listing what we do support (see ``feature_caps``)."""

    status = 555
    reason = "Push Notification Service Not Supported"

    def __init__(self, provider: str, supported: tuple[str, ...] = DEFAULT_PROVIDERS) -> None:
        super().__init__()
        self.provider = provider
        self.supported = supported

    def feature_caps(self) -> str | None:
        """``Feature-Caps`` value for the 555 (RFC 8599 12.2 ``sip.pns``): the providers we
        can push through; None when there is none."""
        if not self.supported:
            return None
        return "*;+sip.pns=" + '"' + ",".join(self.supported) + '"'

    def __str__(self) -> str:
        return f"unsupported push provider {self.provider!r}"


@dataclass(frozen=True)
class PushBinding:
    """How to push one device.

    ``provider`` is a letter ("i" APNs, "a" FCM, or an unknown one as sent);
    ``topic`` is the APNs topic (package + ".voip"), None for other providers.
    """

    provider: str
    package: str | None
    token: str = field(repr=False)
    topic: str | None
    source: str  # "x-mpush" | "rfc8599"
    remote_token: str | None = field(default=None, repr=False)
    """APNs only: the token for alert/background pushes (RFC 8599 ``pn-prid`` part
    ``TOKEN:remote``, Flexisip's convention); ``token`` is then the VoIP one."""

    @property
    def is_apns(self) -> bool:
        return self.provider.lower() in (APNS, APNS_DEV)

    @property
    def token_hint(self) -> str:
        return short_token(self.token)


@dataclass(frozen=True)
class NullToken:
    """``X-MPUSH: i:pkg:null``: the device asks to drop its push binding."""

    provider: str
    package: str
    source: str = SOURCE_X_MPUSH


def short_token(token: str) -> str:
    """A loggable hint of a token: its first 6 and last 4 characters."""
    if len(token) <= 12:
        return "***"
    return f"{token[:6]}...{token[-4:]}"


def _voip_topic(provider: str, package: str | None) -> str | None:
    if provider.lower() != APNS or not package:
        return None
    return package + ".voip"


def parse_x_mpush(value: str | None) -> PushBinding | NullToken | None:
    """Parse an ``X-MPUSH`` header value; None when the header is absent.

    Raises ``MalformedPushToken`` when it is present but has fewer than three
    parts or an empty one.
    """
    if value is None:
        return None
    text = value.strip()
    parts = text.split(":", 2)
    if len(parts) != 3:
        raise MalformedPushToken(
            f"X-MPUSH needs PROVIDER:PACKAGE:TOKEN, got {len(parts)} part(s)"
        )
    provider, package, token = parts[0].strip(), parts[1].strip(), parts[2].strip()
    if not (provider and package and token):
        named = zip(("provider", "package", "token"), (provider, package, token))
        empty = [name for name, part in named if not part]
        raise MalformedPushToken(f"X-MPUSH has an empty {' and '.join(empty)}")
    _check_utf8("X-MPUSH", text)
    if token.lower() == "null":
        return NullToken(provider, package)
    return PushBinding(provider, package, token, _voip_topic(provider, package), SOURCE_X_MPUSH)


def parse_rfc8599(contact_params: Mapping[str, str | None]) -> PushBinding | None:
    """Read ``pn-provider``/``pn-param``/``pn-prid`` from Contact parameters.

    None when there is no ``pn-provider``.  APNs' ``pn-param`` is
    "TEAMID.topic"; we only send VoIP pushes, so the topic is always the
    bundle id + ".voip" whether or not the phone wrote the suffix.  FCM's
    ``pn-param`` (the project id) is kept as the package.  Raises
    ``UnsupportedPushProvider`` (answer 555) or ``MalformedPushToken``.
    """
    params = {key.lower(): _unquote(item) for key, item in contact_params.items()}
    provider_name = params.get("pn-provider")
    if provider_name is None:
        return None
    provider = RFC8599_PROVIDERS.get(provider_name.lower())
    if provider is None:
        raise UnsupportedPushProvider(provider_name)
    token = params.get("pn-prid")
    if not token:
        raise MalformedPushToken("pn-provider without pn-prid")
    param = params.get("pn-param")
    _check_utf8("pn-prid", token)
    _check_utf8("pn-param", param)
    if provider == FCM:
        return PushBinding(provider, param or None, token, None, SOURCE_RFC8599)
    team, dot, topic = (param or "").partition(".")
    if not team or not dot or not topic:
        raise MalformedPushToken("APNs pn-param must be TEAMID.bundle.id[.voip]")
    package = _APNS_TYPES_SUFFIX.sub("", topic)
    if not package:
        raise MalformedPushToken("APNs pn-param has no bundle id")
    voip, remote = _apns_tokens(token)
    return PushBinding(provider, package, voip, package + ".voip", SOURCE_RFC8599, remote)


_APNS_TYPES_SUFFIX = re.compile(r"\.(?:voip|remote)(?:&(?:voip|remote))*$")


def _apns_tokens(prid: str) -> tuple[str, str | None]:
    """(VoIP token, remote token) of an APNs ``pn-prid``.

    Flexisip's form is ``TOKEN:voip&TOKEN:remote`` (either order); a plain token is
    the VoIP one.  A ``pn-prid`` with only a remote token cannot wake the phone for a
    call (iOS rings calls through VoIP pushes), so it is refused.
    """
    kinds: dict[str, str] = {}
    for part in prid.split("&"):
        token, colon, kind = part.rpartition(":")
        if colon and kind.lower() in ("voip", "remote") and token:
            kinds.setdefault(kind.lower(), token)
        elif "&" not in prid:
            return prid, None
        else:
            raise MalformedPushToken("APNs pn-prid parts must be TOKEN:voip or TOKEN:remote")
    if "voip" not in kinds:
        raise MalformedPushToken("APNs pn-prid has no VoIP token (only :remote)")
    return kinds["voip"], kinds.get("remote")


def _check_utf8(name: str, value: str | None) -> None:
    """Bytes that were not UTF-8 reach us as lone surrogates: such a token
    could be neither stored nor sent to a push service."""
    if value is None or value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedPushToken(f"{name} holds bytes that are not UTF-8") from None


def _unquote(value: str | None) -> str | None:
    if value is None:
        return None
    text = value.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    return unquote(text)
