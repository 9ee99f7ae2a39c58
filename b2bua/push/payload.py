"""The VoIP push a softphone expects: HTTP/2 headers and JSON body (see push-facts.md).

This is the one place the payload is written; the call layer, the admin command and the tests
all use :func:`build_voip_push`, so the phone-side contract cannot drift between them.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

#: APNs refuses VoIP payloads above 5 KB (413 PayloadTooLarge); we refuse them before sending.
MAX_VOIP_PAYLOAD = 5120
#: APNs limit on apns-collapse-id, in bytes.
MAX_COLLAPSE_ID = 64
#: Caller-controlled text (From display name, user part) is clipped to this many characters,
#: so a hostile display name cannot push the payload over the limit and silence the phone.
MAX_CALLER_TEXT = 128

_UNSAFE_HEADER_CHARS = re.compile(r"[\x00-\x20\x7f]")
_TEAM_ID_PREFIX = re.compile(r"^[A-Z0-9]{10}\.(?=.+\..+)")


class PushKind(enum.IntEnum):
    """The `ntype` the app switches on."""

    INCOMING_CALL = 0
    CALL_ENDED = 1  # our extension: the caller gave up; the app shows a missed call
    MESSAGE = 2  # our extension: a text message (SIP MESSAGE) waits for the phone
    REFRESH = 3  # our extension: register again before the contact expires (RFC 8599 §5.4)


@dataclass(frozen=True)
class CallFacts:
    """What the phone needs to know about a call to show it and match the INVITE."""

    call_id: str
    caller_number: str
    caller_display: str | None
    callee: str


#: Characters of a message's text put into the push (`nmsg` and the alert body).
MAX_MESSAGE_PREVIEW = 160


@dataclass(frozen=True)
class MessageFacts:
    """What the phone needs to know about a waiting text message (RFC 3428 MESSAGE).

    ``message_id`` is the MESSAGE's Call-ID (``ncallid``), so the app can match the
    MESSAGE it receives once it registers; ``text`` is the start of the body (empty
    when the body is not text).
    """

    message_id: str
    sender_number: str
    sender_display: str | None
    recipient: str
    text: str


def apns_bundle_topic(topic: str) -> str:
    """The APNs topic of an alert or background push: the bare bundle id (no ``.voip``)."""
    return apns_voip_topic(topic).removesuffix(".voip")


def apns_voip_topic(topic: str) -> str:
    """The APNs topic for a VoIP push from what a phone announced.

    Accepts the bundle id of X-MPUSH (`com.example.app`), a topic that already ends in
    `.voip`, or RFC 8599's `pn-param` form `TEAMID.com.example.app.voip` (team id dropped).
    """
    topic = topic.strip()
    topic = _TEAM_ID_PREFIX.sub("", topic) if topic.endswith(".voip") else topic
    return topic if topic.endswith(".voip") else topic + ".voip"


def collapse_id(call_id: str) -> str:
    """The call id as an apns-collapse-id: header-safe and at most 64 bytes.

    A longer id keeps a readable prefix and ends in a hash of the whole id, so two long call
    ids that share a prefix never collapse into each other, and one call always maps to the
    same value (repeated pushes for one call collapse).
    """
    safe = _UNSAFE_HEADER_CHARS.sub("_", call_id) or "_"
    encoded = safe.encode("utf-8")
    if len(encoded) <= MAX_COLLAPSE_ID:
        return safe
    digest = hashlib.sha256(call_id.encode("utf-8")).hexdigest()[:16]
    prefix = encoded[: MAX_COLLAPSE_ID - len(digest) - 1].decode("utf-8", "ignore")
    return prefix + "~" + digest


def _clip(text: str) -> str:
    return text if len(text) <= MAX_CALLER_TEXT else text[: MAX_CALLER_TEXT - 1] + "…"


def call_data(facts: CallFacts, kind: PushKind = PushKind.INCOMING_CALL) -> dict[str, Any]:
    """The `data` keys the app reads (push-facts.md), the same for every provider.

    The caller is named by number in the text, by display name (else number) in
    `nfromusername`; `ntype` is an int here as APNs sends it (FCM wants strings).
    """
    number = _clip(facts.caller_number)
    display = _clip(facts.caller_display) if facts.caller_display else ""
    caller = number or display or "unknown"
    title = ("Incoming call from " if kind is PushKind.INCOMING_CALL else "Missed call from ") + caller
    return {
        "ntype": int(kind),
        "nfromusername": display or number,
        "nfrom": number,
        "nmsg": title,
        "ncallid": facts.call_id,
        "ntousr": facts.callee,
    }


def build_voip_push(
    facts: CallFacts, topic: str, kind: PushKind = PushKind.INCOMING_CALL
) -> tuple[dict[str, str], bytes]:
    """Headers (apns-*) and compact JSON body of a VoIP push for this call.

    The body may exceed :data:`MAX_VOIP_PAYLOAD` (a huge call id); the client refuses such
    a push locally.
    """
    data = call_data(facts, kind)
    title = data["nmsg"]
    body_text = title.replace(" call from ", " VoIP call from ", 1)
    payload = {
        "aps": {
            "alert": {"title": title, "body": body_text},
            "content-available": 1,
            "sound": "default",
            "badge": 1,
        },
        "data": data,
    }
    headers = {
        "apns-push-type": "voip",
        "apns-topic": apns_voip_topic(topic),
        "apns-priority": "10",
        "apns-expiration": "0",
        "apns-collapse-id": collapse_id(facts.call_id),
    }
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return headers, body


def message_data(facts: MessageFacts) -> dict[str, object]:
    """The `data` keys of a message push: those of a call push, `ntype` 2 (MESSAGE)."""
    number = _clip(facts.sender_number)
    display = _clip(facts.sender_display) if facts.sender_display else ""
    text = facts.text[:MAX_MESSAGE_PREVIEW]
    return {"ntype": int(PushKind.MESSAGE), "nfromusername": display or number,
            "nfrom": number, "nmsg": text, "ncallid": facts.message_id,
            "ntousr": facts.recipient}


def build_message_push(facts: MessageFacts, topic: str) -> tuple[dict[str, str], bytes]:
    """An APNs *alert* push announcing a message (never a VoIP push: iOS requires a
    VoIP push to report a call).  `topic` is turned into the bare bundle id."""
    data = message_data(facts)
    sender = str(data["nfromusername"]) or "unknown"
    payload = {
        "aps": {"alert": {"title": "Message from " + sender, "body": str(data["nmsg"])},
                "sound": "default", "badge": 1, "content-available": 1},
        "data": data,
    }
    headers = {
        "apns-push-type": "alert",
        "apns-topic": apns_bundle_topic(topic),
        "apns-priority": "10",
        "apns-expiration": "0",
        "apns-collapse-id": collapse_id(facts.message_id),
    }
    return headers, json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def build_refresh_push(topic: str, callee: str) -> tuple[dict[str, str], bytes]:
    """An APNs *background* push asking the app to register again (RFC 8599 §5.4):
    priority 5, `content-available` only, topic = the bundle id."""
    payload = {"aps": {"content-available": 1},
               "data": {"ntype": int(PushKind.REFRESH), "ntousr": callee}}
    headers = {
        "apns-push-type": "background",
        "apns-topic": apns_bundle_topic(topic),
        "apns-priority": "5",
        "apns-collapse-id": "refresh",
    }
    return headers, json.dumps(payload, separators=(",", ":")).encode("utf-8")
