"""Sleeping phones stay reachable (issue 16), end to end with SIPp and the fake APNs.

A phone registers for one second and goes to sleep; its contact expires but its
push token is kept ([push] token_lifetime).  A call to it still pushes it and
rings it once it registers; a MESSAGE to it is stored (202), pushed once as an
alert to its APNs remote token, and delivered once it registers, also across a
restart of the service.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor, threads

from tests.fake_apns import FakeApns, Reply, make_pki
from tests.support import (
    apns_and_trunk_toml,
    free_port,
    recent_cdrs,
    start_sipp,
    stop_process,
)
from tests.test_wakeup_e2e import TOKEN, _register, _run, _sipp

VOIP = "c-10-ap_Kt0:G7SThkASJx2K4Rm1033iR0mIgzI1cLg5xxpST4cjrd"
REMOTE = "remote0token0of0the0phone0abcdef"
PRID = f"{REMOTE}:remote&{VOIP}:voip"


@pytest.fixture
def apns(tmp_path: Any) -> Any:
    pki = make_pki(tmp_path / "pki")
    fake = FakeApns(reactor, pki).start()
    yield pki, fake
    pytest_twisted.blockon(fake.stop())


def _config(pki: Any, fake: Any) -> str:
    return f"""
[log]
level = "debug"

[registrar]
min_expires = 1

[[users]]
name = "1111"
password = "secret"

[push]
wake_timeout = 15
token_lifetime = 3600

{apns_and_trunk_toml(pki, fake)}"""


def _wait_until_kept(svc: Any, timeout: float = 15) -> list[dict]:
    """Poll `b2bua-admin bindings` until the phone's contact expired and only its token is kept."""
    deadline = time.monotonic() + timeout
    while True:
        rows = json.loads(svc.admin("bindings", "1111", "--json").stdout or "[]")
        if rows and all(r["kept"] for r in rows):
            return rows
        assert time.monotonic() < deadline, f"contact never expired: {rows}"
        time.sleep(0.2)


def _register_rfc8599(svc: Any, contact_port: int, expires: int) -> Any:
    return _run(_sipp(svc, "register_rfc8599.xml", free_port(), "-key", "contact_port",
                      str(contact_port), "-key", "expires", str(expires), "-key", "token", PRID))


@pytest_twisted.inlineCallbacks
def test_phone_whose_contact_expired_is_woken_by_a_call(start_service, apns) -> None:
    pki, fake = apns
    svc = yield threads.deferToThread(start_service, _config(pki, fake))
    reg = yield _register(svc, free_port(), expires=1)
    assert reg.returncode == 0, reg.stdout + reg.stderr
    rows = yield threads.deferToThread(_wait_until_kept, svc)
    assert rows[0]["push_token"] == TOKEN
    listing = svc.admin("bindings", "1111").stdout
    assert "token kept" in listing

    new_port = free_port()
    woken: dict[str, Any] = {}

    def on_push(request: Any) -> Reply:
        woken["phone"] = start_sipp(_sipp(svc, "phone_answer.xml", new_port)[1:])
        woken["register"] = _register(svc, new_port)
        return Reply.ok()

    fake.on_request = on_push
    caller = yield _run(_sipp(svc, "caller.xml", free_port(), "-key", "callee", "1111",
                              "-key", "ring_file", "/dev/null"))
    try:
        assert caller.returncode == 0, caller.stdout[-3000:] + svc.log()[-5000:]
        reg2 = yield woken["register"]
        assert reg2.returncode == 0, reg2.stdout
        yield threads.deferToThread(woken["phone"].wait, 20)
        assert woken["phone"].returncode == 0
    finally:
        if "phone" in woken:
            stop_process(woken["phone"])
    assert len(fake.requests) == 1
    assert fake.requests[0].headers["apns-push-type"] == "voip"
    assert recent_cdrs(svc)[-1]["status"] == 200
    # The phone came back as the same device: one binding, live again.
    rows = json.loads(svc.admin("bindings", "1111", "--json").stdout)
    assert len(rows) == 1 and not rows[0]["kept"]


@pytest_twisted.inlineCallbacks
def test_message_to_a_sleeping_phone_is_pushed_once_and_delivered_after_a_restart(
        start_service, apns) -> None:
    pki, fake = apns
    svc = yield threads.deferToThread(start_service, _config(pki, fake))
    reg = yield _register_rfc8599(svc, free_port(), expires=1)
    assert reg.returncode == 0, reg.stdout + reg.stderr
    rows = yield threads.deferToThread(_wait_until_kept, svc)
    assert (rows[0]["push_token"], rows[0]["push_remote_token"]) == (VOIP, REMOTE)
    assert rows[0]["push_refresh"] is True

    sent = yield _run(_sipp(svc, "message_send.xml", free_port(), "-key", "callee", "1111",
                            "-key", "text", "(1)"))
    assert sent.returncode == 0, sent.stdout[-3000:] + svc.log()[-4000:]
    seen = 0
    while True:    # a refresh push (background) may come first: wait for the alert
        pushes = yield fake.wait_for_requests(seen + 1).addTimeout(15, reactor)
        alerts = [p for p in pushes if p.headers["apns-push-type"] == "alert"]
        if alerts:
            break
        seen = len(pushes)
    push = alerts[0]
    assert push.invalid is None
    assert push.token == REMOTE                          # never the VoIP token for a message
    assert push.headers["apns-push-type"] == "alert"
    assert push.headers["apns-topic"] == "com.example.softphone"
    data = push.payload["data"]
    assert data["ntype"] == 2 and data["ntousr"] == "1111" and data["nfrom"] == "1234"
    assert data["nmsg"].startswith("Hello sleeping phone")
    stored = json.loads(svc.admin("messages", "1111", "--json").stdout)
    assert [m["text"].strip() for m in stored] == ["Hello sleeping phone (1)"]

    yield threads.deferToThread(svc.stop)                # a restart in between
    yield threads.deferToThread(svc.start)
    assert len(json.loads(svc.admin("messages", "--json").stdout)) == 1

    new_port = free_port()
    phone = start_sipp(_sipp(svc, "phone_message.xml", new_port)[1:])
    try:
        reg2 = yield _register_rfc8599(svc, new_port, expires=3600)
        assert reg2.returncode == 0, reg2.stdout
        yield threads.deferToThread(phone.wait, 20)
        assert phone.returncode == 0, phone.stdout.read().decode()[-3000:] + svc.log()[-3000:]
    finally:
        stop_process(phone)
    deadline = time.monotonic() + 10
    while json.loads(svc.admin("messages", "--json").stdout):
        assert time.monotonic() < deadline, "the delivered message was not removed"
        yield threads.deferToThread(time.sleep, 0.2)
    # Exactly once: a second registration of the phone delivers nothing more.
    reg3 = yield _register_rfc8599(svc, free_port(), expires=3600)
    assert reg3.returncode == 0
    assert svc.log().count("delivering stored message") == 1
    # One message push in all, and never a VoIP push without a call (a refresh push, if
    # one fell due for the one-second registration, is a background push).
    kinds = [r.headers["apns-push-type"] for r in fake.requests]
    assert kinds.count("alert") == 1
    assert set(kinds) <= {"alert", "background"}


@pytest_twisted.inlineCallbacks
def test_message_to_a_sleeping_android_phone_without_fcm_is_stored(start_service, apns) -> None:
    """No FCM configured: the Android phone registers without a push binding (its provider is
    not enabled), so once its contact expires nothing of it is kept; a MESSAGE is still
    stored (202), nothing is pushed, and the phone gets it when it registers again."""
    pki, fake = apns
    svc = yield threads.deferToThread(start_service, _config(pki, fake))
    fcm_token = "fcm0token:APA91b-abcdefghijklmnop"
    reg = yield _run(_sipp(svc, "register_android.xml", free_port(), "-key", "contact_port",
                           str(free_port()), "-key", "expires", "1", "-key", "token", fcm_token))
    assert reg.returncode == 0, reg.stdout + reg.stderr
    deadline = time.monotonic() + 15
    while rows := json.loads(svc.admin("bindings", "1111", "--json").stdout or "[]"):
        assert all(r["push_token"] is None and r["push_unbound"] for r in rows), rows
        assert time.monotonic() < deadline, f"contact never expired: {rows}"
        yield threads.deferToThread(time.sleep, 0.2)
    sent = yield _run(_sipp(svc, "message_send.xml", free_port(), "-key", "callee", "1111",
                            "-key", "text", "(android)"))
    assert sent.returncode == 0, sent.stdout[-3000:] + svc.log()[-4000:]
    assert len(json.loads(svc.admin("messages", "1111", "--json").stdout)) == 1
    assert fake.requests == []

    port = free_port()
    phone = start_sipp(_sipp(svc, "phone_message.xml", port)[1:])
    try:
        reg2 = yield _run(_sipp(svc, "register_android.xml", free_port(), "-key", "contact_port",
                                str(port), "-key", "expires", "3600", "-key", "token", fcm_token))
        assert reg2.returncode == 0, reg2.stdout
        yield threads.deferToThread(phone.wait, 20)
        assert phone.returncode == 0, phone.stdout.read().decode()[-3000:] + svc.log()[-3000:]
    finally:
        stop_process(phone)


@pytest_twisted.inlineCallbacks
def test_refresh_push_before_the_contact_expires(start_service, apns) -> None:
    """+sip.pnsreg asked for refresh pushes: one background push to the remote token comes
    before the 24-second registration runs out (at half of it, the scan runs every 10 s)."""
    pki, fake = apns
    svc = yield threads.deferToThread(start_service, _config(pki, fake))
    registered = time.time()
    reg = yield _register_rfc8599(svc, free_port(), expires=24)
    assert reg.returncode == 0, reg.stdout + reg.stderr
    pushes = yield fake.wait_for_requests(1).addTimeout(30, reactor)
    arrived = time.time()
    push = pushes[0]
    assert push.invalid is None
    assert arrived < registered + 24 + 1                 # before the contact expired
    assert push.token == REMOTE
    assert push.headers["apns-push-type"] == "background"
    assert push.headers["apns-priority"] == "5"
    assert push.headers["apns-topic"] == "com.example.softphone"
    assert push.payload["aps"] == {"content-available": 1}
    assert push.payload["data"]["ntype"] == 3
