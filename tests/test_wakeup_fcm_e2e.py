"""Android phones woken through FCM, end to end with real peers on 127.0.0.1.

As tests/test_wakeup_e2e.py does for APNs (and with its helpers): the B2BUA runs as users
start it, SIPp plays the phone and the caller, and the fake FCM (token endpoint and
messages:send, real HTTPS in this test process) "wakes" the phone when the push arrives.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, threads

from tests.fake_apns import Reply, make_pki
from tests.fake_fcm import FakeFcm
from tests.support import free_port, http_get, metric_value, recent_cdrs, start_sipp
from tests.test_wakeup_e2e import _register, _run, _sipp, call_the_woken_phone

TOKEN = "fcm-c-10-ap_Kt0:APA91bG7SThkASJx2K4Rm1033iR0mIgzI1cLg5xxpST4cjrd"


def _config(fake: FakeFcm, wake_timeout: float = 10, metrics_port: int | None = None) -> str:
    metrics = f'[metrics]\nlisten = "tcp:{metrics_port}:interface=127.0.0.1"\n' if metrics_port else ""
    return metrics + f"""
[[users]]
name = "1111"
password = "secret"

[push]
wake_timeout = {wake_timeout}

[fcm]
enabled = true
service_account = "{fake.service_account_file}"
endpoint = "{fake.url}"
ca_file = "{fake.pki.ca_file}"

[[trunk]]
name = "carrier"
uri = "sip:127.0.0.1:5999"
accept_from = ["127.0.0.1/32"]
"""


@pytest.fixture
def fcm(tmp_path: Path) -> Any:
    fake = FakeFcm(reactor, make_pki(tmp_path / "pki")).start()
    yield fake
    pytest_twisted.blockon(fake.stop())


@pytest_twisted.inlineCallbacks
def test_sleeping_android_phone_is_woken_through_fcm_and_answers(start_service, fcm: FakeFcm) -> None:
    svc = yield threads.deferToThread(start_service, _config(fcm))
    reg = yield _register(svc, free_port(), provider="a", token=TOKEN)   # registers, then sleeps
    assert reg.returncode == 0, reg.stdout + reg.stderr

    new_port = free_port()
    woken: dict[str, Any] = {}

    def on_push(request: Any) -> Reply:
        if "phone" not in woken:
            woken["at"] = time.time()
            woken["phone"] = start_sipp(_sipp(svc, "phone_answer.xml", new_port)[1:])
            woken["register"] = _register(svc, new_port, provider="a", token=TOKEN)
        return Reply.ok()

    fcm.on_request = on_push
    yield call_the_woken_phone(svc, woken)

    [push] = fcm.requests
    assert push.invalid is None and push.token == TOKEN
    assert push.authorization and push.authorization.startswith("Bearer ya29.fake-")
    message = push.payload["message"]
    assert message["android"] == {"priority": "high", "ttl": "10s"}
    cdr = recent_cdrs(svc)[-1]
    assert message["data"]["ncallid"] == cdr["call_id"]
    assert message["data"]["ntousr"] == "1111" and message["data"]["nfrom"] == "1234"
    assert cdr["status"] == 200 and cdr["push_sent_at"] and cdr["invite_forked_at"]
    assert len(fcm.token_requests) == 1 and fcm.token_requests[0].refused is None


@pytest_twisted.inlineCallbacks
def test_unregistered_fcm_token_gives_480_at_once_and_is_removed(start_service, fcm: FakeFcm) -> None:
    metrics_port = free_port()
    svc = yield threads.deferToThread(start_service, _config(fcm, wake_timeout=20, metrics_port=metrics_port))
    reg = yield _register(svc, free_port(), provider="a", token=TOKEN)
    assert reg.returncode == 0, reg.stdout
    before = json.loads(svc.admin("bindings", "1111", "--json").stdout)
    assert [b["push_token"] for b in before] == [TOKEN]
    fcm.script(TOKEN, Reply.error(404, "UNREGISTERED"))
    started = time.monotonic()
    caller = yield _run(_sipp(svc, "caller.xml", free_port(), "-key", "callee", "1111",
                              "-key", "ring_file", "/dev/null"))
    assert caller.returncode != 0                 # the caller got an error, not an answer
    assert time.monotonic() - started < 10, "480 must come at once, not after the wake-up wait"
    cdr = recent_cdrs(svc)[-1]
    assert cdr["status"] == 480 and "token_dead" in cdr["push_outcome"]
    after = json.loads(svc.admin("bindings", "1111", "--json").stdout)
    assert after and all(not b.get("push_token") for b in after)
    metrics = yield threads.deferToThread(http_get, f"http://127.0.0.1:{metrics_port}/metrics")
    assert metric_value(metrics, "b2bua_push_tokens_dropped_total", provider="fcm") == 1
    assert metric_value(metrics, "b2bua_push_outcomes_total", provider="fcm", outcome="token_dead") == 1
    assert metric_value(metrics, "b2bua_push_requests_total", provider="fcm") == 1


@pytest_twisted.inlineCallbacks
def test_android_token_without_fcm_enabled_is_bound_without_push(start_service, fcm: FakeFcm) -> None:
    config = _config(fcm).replace("[fcm]\nenabled = true", "[fcm]\nenabled = false")
    svc = yield threads.deferToThread(start_service, config)
    reg = yield _register(svc, free_port(), provider="a", token=TOKEN)
    assert reg.returncode == 0, reg.stdout
    [binding] = json.loads(svc.admin("bindings", "1111", "--json").stdout)
    assert binding["push_token"] is None and "fcm is not enabled" in binding["push_unbound"]
    assert "fcm is not enabled" in svc.admin("bindings", "1111").stdout
