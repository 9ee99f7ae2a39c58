"""plugins.reject: regex rules on the number (or another field) -> Reject."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from b2bua.routing import Reject, RequestView, RouterConfigError, RouterContext
from plugins.reject import RejectRouter

CONTEXT = RouterContext("sip.example.com", lambda name: False, {}, Clock())

RULES = [
    {"pattern": "^900", "status": 403, "reason": "Premium numbers barred"},
    {"pattern": r"^\+?1900", "status": 403},
    {
        "pattern": "^anonymous$",
        "field": "from_user",
        "status": 433,
        "reason": "Anonymity Disallowed",
    },
    {"pattern": "9", "status": 404},
]


def view(user: str | None, from_user: str | None = "1111") -> RequestView:
    return RequestView(method="INVITE", request_uri="sip:x@y", ruri_user=user, from_user=from_user)


@pytest.mark.parametrize(
    ("user", "from_user", "decision"),
    [
        ("900123", "1111", Reject(403, "Premium numbers barred")),
        ("+1900555", "1111", Reject(403)),
        ("1111", "anonymous", Reject(433, "Anonymity Disallowed")),
        ("1900", "1111", Reject(403)),
        ("0900", "1111", Reject(404)),  # search, not match: the last rule is unanchored
        ("1111", "1111", None),
        (None, "1111", None),
        ("1111", None, None),
    ],
)
def test_first_matching_rule_rejects(
    user: str | None, from_user: str | None, decision: Reject | None
) -> None:
    assert RejectRouter({"rules": RULES}, CONTEXT).route(view(user, from_user)) == decision


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({}, "rules"),
        ({"rules": []}, "rules"),
        ({"rules": [{"status": 403}]}, "rules[0].pattern"),
        ({"rules": [{"pattern": "(", "status": 403}]}, "rules[0].pattern"),
        ({"rules": [{"pattern": "^9"}]}, "rules[0].status"),
        ({"rules": [{"pattern": "^9", "status": 302}]}, "rules[0].status"),
        ({"rules": [{"pattern": "^9", "status": 700}]}, "rules[0].status"),
        ({"rules": [{"pattern": "^9", "status": "403"}]}, "rules[0].status"),
        ({"rules": [{"pattern": "^9", "status": 403, "reason": 1}]}, "rules[0].reason"),
        ({"rules": [{"pattern": "^9", "status": 403, "field": "body"}]}, "rules[0].field"),
        (
            {"rules": [{"pattern": "^9", "status": 403}, {"pattern": "^8", "status": 403, "x": 1}]},
            "rules[1].x",
        ),
    ],
)
def test_config_errors_name_the_key(options: dict[str, Any], key: str) -> None:
    with pytest.raises(RouterConfigError) as caught:
        RejectRouter(options, CONTEXT)
    assert caught.value.key == key
