"""The VoIP push payload and headers, exactly as push-facts.md shows them."""

from __future__ import annotations

import json

import pytest

from b2bua.push.payload import (
    MAX_CALLER_TEXT,
    MAX_COLLAPSE_ID,
    CallFacts,
    PushKind,
    apns_voip_topic,
    build_voip_push,
    collapse_id,
)

FACTS = CallFacts(call_id="abcdef", caller_number="1234", caller_display="John Smith", callee="9876")

# push-facts.md, "The push request to APNs", verbatim.
EXPECTED_BODY = {
    "aps": {"alert": {"title": "Incoming call from 1234", "body": "Incoming VoIP call from 1234"},
            "content-available": 1, "sound": "default", "badge": 1},
    "data": {"ntype": 0, "nfromusername": "John Smith", "nfrom": "1234",
             "nmsg": "Incoming call from 1234", "ncallid": "abcdef", "ntousr": "9876"},
}


def test_body_matches_push_facts_exactly() -> None:
    headers, body = build_voip_push(FACTS, "com.mycompany.myapp")
    assert json.loads(body) == EXPECTED_BODY
    assert list(json.loads(body)) == ["aps", "data"]
    assert list(json.loads(body)["data"]) == ["ntype", "nfromusername", "nfrom", "nmsg", "ncallid", "ntousr"]


def test_headers_match_push_facts() -> None:
    headers, _ = build_voip_push(FACTS, "com.mycompany.myapp")
    assert headers == {
        "apns-push-type": "voip",
        "apns-topic": "com.mycompany.myapp.voip",
        "apns-priority": "10",
        "apns-expiration": "0",
        "apns-collapse-id": "abcdef",
    }


def test_body_is_compact_utf8_json() -> None:
    facts = CallFacts("c1", "1234", "Jürgen Çelik", "9876")
    _, body = build_voip_push(facts, "com.x.app")
    assert b'": ' not in body and b", " not in body
    assert "Jürgen Çelik".encode() in body
    assert json.loads(body.decode("utf-8"))["data"]["nfromusername"] == "Jürgen Çelik"


@pytest.mark.parametrize("display", [None, ""])
def test_without_display_name_the_number_names_the_caller(display: str | None) -> None:
    _, body = build_voip_push(CallFacts("c1", "1234", display, "9876"), "com.x.app")
    assert json.loads(body)["data"]["nfromusername"] == "1234"


def test_anonymous_caller_still_gets_a_text() -> None:
    _, body = build_voip_push(CallFacts("c1", "", None, "9876"), "com.x.app")
    assert json.loads(body)["aps"]["alert"]["title"] == "Incoming call from unknown"


def test_call_ended_push_is_ntype_1_with_same_collapse_id() -> None:
    incoming, _ = build_voip_push(FACTS, "com.x.app")
    headers, body = build_voip_push(FACTS, "com.x.app", PushKind.CALL_ENDED)
    payload = json.loads(body)
    assert payload["data"]["ntype"] == 1
    assert payload["aps"]["alert"]["title"] == "Missed call from 1234"
    assert headers["apns-collapse-id"] == incoming["apns-collapse-id"]
    assert headers["apns-push-type"] == "voip"


@pytest.mark.parametrize("announced, topic", [
    ("com.mycompany.myapp", "com.mycompany.myapp.voip"),
    ("com.mycompany.myapp.voip", "com.mycompany.myapp.voip"),
    ("DEF123GHIJ.com.mycompany.myapp.voip", "com.mycompany.myapp.voip"),  # RFC 8599 pn-param
    (" com.mycompany.myapp ", "com.mycompany.myapp.voip"),
])
def test_topic(announced: str, topic: str) -> None:
    assert apns_voip_topic(announced) == topic
    assert build_voip_push(FACTS, announced)[0]["apns-topic"] == topic


def test_short_collapse_id_is_the_call_id() -> None:
    assert collapse_id("a84b4c76e66710@pc33.atlanta.com") == "a84b4c76e66710@pc33.atlanta.com"


@pytest.mark.parametrize("call_id", ["x" * 65, "é" * 40, "ab" * 200, "é" * 33])
def test_long_collapse_id_fits_64_bytes_and_is_stable(call_id: str) -> None:
    value = collapse_id(call_id)
    assert len(value.encode("utf-8")) <= MAX_COLLAPSE_ID
    assert value == collapse_id(call_id)
    value.encode("utf-8").decode("utf-8")  # never cut inside a character


def test_long_call_ids_with_a_common_prefix_do_not_collide() -> None:
    prefix = "p" * 80
    assert collapse_id(prefix + "1") != collapse_id(prefix + "2")


def test_collapse_id_has_no_header_breaking_characters() -> None:
    assert collapse_id("a b\r\nc\x00") == "a_b__c_"


def test_hostile_display_name_is_clipped_so_the_push_still_fits() -> None:
    facts = CallFacts("c1", "1" * 3000, "x" * 6000, "9876")
    _, body = build_voip_push(facts, "com.x.app")
    payload = json.loads(body)
    assert len(payload["data"]["nfromusername"]) == MAX_CALLER_TEXT
    assert len(body) < 5120


def test_huge_call_id_gives_a_body_over_the_limit() -> None:
    """The builder does not hide it: the client refuses it (see test_push_apns)."""
    _, body = build_voip_push(CallFacts("c" * 6000, "1234", None, "9876"), "com.x.app")
    assert len(body) > 5120
