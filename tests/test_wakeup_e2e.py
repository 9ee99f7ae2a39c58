"""Push wake-up end to end, with real peers on 127.0.0.1.

The B2BUA runs as users start it (twistd + a config file).  SIPp plays the
phone and the caller; the fake APNs (a real HTTP/2 TLS server, in this test
process) receives the VoIP push and, as a real iPhone would, "wakes" the
phone: a SIPp UAS starts on a new port and the phone registers that contact.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, threads

from tests.fake_apns import FakeApns, Reply, make_pki
from tests.support import (apns_and_trunk_toml, free_port, recent_cdrs, sipp_args, start_sipp,
                           stop_process)

TOKEN = "c-10-ap_Kt0:G7SThkASJx2K4Rm1033iR0mIgzI1cLg5xxpST4cjrd"


def _config(pki: Any, fake: FakeApns, wake_timeout: float = 10) -> str:
    # debug: _invites_sent counts the per-branch "INVITE ... to sip:" lines (debug since #6)
    return f"""
[log]
level = "debug"

[[users]]
name = "1111"
password = "secret"

[push]
wake_timeout = {wake_timeout}

{apns_and_trunk_toml(pki, fake)}"""


def _sipp(svc: Any, scenario: str, port: int, *extra: str, timeout: float = 30) -> list[str]:
    return sipp_args(svc.port, scenario, port, *extra, timeout=timeout)


def _run(cmd: list[str], timeout: float = 40) -> defer.Deferred:
    """Run a blocking command off the reactor thread (the fake APNs lives on the reactor)."""
    return threads.deferToThread(subprocess.run, cmd, capture_output=True, text=True,
                                 timeout=timeout)


def _register(svc: Any, contact_port: int, expires: int = 3600,
              token: str = TOKEN, provider: str = "i") -> defer.Deferred:
    """The phone registers `contact_port` with `X-MPUSH: PROVIDER:com.example.softphone:TOKEN`."""
    return _run(_sipp(svc, "register_contact.xml", free_port(), "-key", "contact_port",
                      str(contact_port), "-key", "expires", str(expires), "-key", "provider", provider,
                      "-key", "token", token))


def _invites_sent(svc: Any, call_id: str) -> int:
    """How many B-leg INVITEs the service logged for the call ``call_id``."""
    return sum(1 for line in svc.log().splitlines()
               if f"call {call_id}: INVITE " in line and " to sip:" in line)


@pytest.fixture
def apns(tmp_path: Path):
    pki = make_pki(tmp_path / "pki")
    fake = FakeApns(reactor, pki).start()
    yield pki, fake
    pytest_twisted.blockon(fake.stop())


@defer.inlineCallbacks
def call_the_woken_phone(svc: Any, woken: dict[str, Any], ring_file: str = "/dev/null",
                         ) -> Any:
    """A trunk call to user 1111 through ``svc``; the push handler has put the woken phone's
    SIPp (``woken["phone"]``, answering) and its REGISTER (``woken["register"]``) in
    ``woken``. Both SIPps must succeed; the phone is stopped whatever happens."""
    caller = yield _run(_sipp(svc, "caller.xml", free_port(), "-key", "callee", "1111",
                              "-key", "ring_file", ring_file))
    try:
        assert caller.returncode == 0, caller.stdout[-3000:] + svc.log()[-5000:]
        reg2 = yield woken["register"]
        assert reg2.returncode == 0, reg2.stdout
        phone = woken["phone"]
        yield threads.deferToThread(phone.wait, 20)
        assert phone.returncode == 0, phone.stdout.read().decode()[-3000:]
    finally:
        if "phone" in woken:
            stop_process(woken["phone"])


@pytest_twisted.inlineCallbacks
def test_sleeping_phone_is_woken_and_answers(start_service, apns, tmp_path: Path) -> None:
    pki, fake = apns
    svc = yield threads.deferToThread(start_service, _config(pki, fake))
    old_port = free_port()
    reg = yield _register(svc, old_port)          # the phone registers, then sleeps
    assert reg.returncode == 0, reg.stdout + reg.stderr

    new_port = free_port()
    woken: dict[str, Any] = {}

    def on_push(request: Any) -> Reply:
        woken["at"] = time.time()
        woken["phone"] = start_sipp(_sipp(svc, "phone_answer.xml", new_port)[1:])
        woken["register"] = _register(svc, new_port)
        return Reply.delayed(1.0, Reply.ok())    # APNs answers late: ringback must not wait

    fake.on_request = on_push
    ring_file = tmp_path / "ring.txt"
    yield call_the_woken_phone(svc, woken, str(ring_file))

    assert len(fake.requests) == 1
    push = fake.requests[0]
    assert push.invalid is None
    assert push.token == TOKEN
    assert push.headers["apns-topic"] == "com.example.softphone.voip"
    assert push.headers["apns-push-type"] == "voip"
    data = push.payload["data"]
    cdr = recent_cdrs(svc)[-1]
    assert data["ncallid"] == cdr["call_id"]
    assert data["nfrom"] == "1234"
    assert data["nfromusername"] == "John Smith"
    assert data["ntousr"] == "1111"
    # The caller heard ringback before the push was even answered.
    assert float(ring_file.read_text()) < woken["at"] + 0.5
    assert cdr["status"] == 200 and cdr["push_sent_at"] and cdr["invite_forked_at"]
    assert cdr["call_id"] not in cdr["b_call_ids"]


@pytest_twisted.inlineCallbacks
def test_dead_token_gives_480_at_once_and_is_removed(start_service, apns) -> None:
    pki, fake = apns
    svc = yield threads.deferToThread(start_service, _config(pki, fake, wake_timeout=20))
    reg = yield _register(svc, free_port())
    assert reg.returncode == 0, reg.stdout
    fake.script(TOKEN, Reply.error(410, "Unregistered"))
    started = time.monotonic()
    caller = yield _run(_sipp(svc, "caller.xml", free_port(), "-key", "callee", "1111",
                              "-key", "ring_file", "/dev/null"))
    elapsed = time.monotonic() - started
    assert caller.returncode != 0                 # the caller got an error, not an answer
    assert elapsed < 10, "480 must come at once, not after the wake-up wait"
    cdr = recent_cdrs(svc)[-1]
    assert cdr["status"] == 480
    bindings = json.loads(svc.admin("bindings", "1111", "--json").stdout)
    assert all(not b.get("push_token") for b in bindings)


@pytest_twisted.inlineCallbacks
def test_caller_cancels_before_the_phone_wakes(start_service, apns) -> None:
    """487 to the caller; the phone that wakes later gets the INVITE and a CANCEL at once."""
    pki, fake = apns
    svc = yield threads.deferToThread(start_service, _config(pki, fake))
    reg = yield _register(svc, free_port())
    assert reg.returncode == 0, reg.stdout
    caller = yield _run(_sipp(svc, "caller_cancel.xml", free_port(), "-key", "callee", "1111"))
    assert caller.returncode == 0, caller.stdout[-3000:] + svc.log()[-3000:]
    assert len(fake.requests) == 1                      # the push went out before the CANCEL
    call_id = recent_cdrs(svc)[-1]["call_id"]
    assert recent_cdrs(svc)[-1]["status"] == 487

    new_port = free_port()                              # now the phone wakes up
    phone = start_sipp(_sipp(svc, "phone_missed.xml", new_port)[1:])
    try:
        reg2 = yield _register(svc, new_port)
        assert reg2.returncode == 0, reg2.stdout
        yield threads.deferToThread(phone.wait, 20)
        assert phone.returncode == 0, phone.stdout.read().decode()[-3000:] + svc.log()[-3000:]
    finally:
        stop_process(phone)
    assert _invites_sent(svc, call_id) == 2             # the sleeping contact, then the woken one
    # A later REGISTER of the same phone forks nothing more.
    reg3 = yield _register(svc, new_port)
    assert reg3.returncode == 0
    assert _invites_sent(svc, call_id) == 2


@pytest_twisted.inlineCallbacks
def test_two_devices_awake_one_rings_sleeping_one_answers(start_service, apns) -> None:
    pki, fake = apns
    svc = yield threads.deferToThread(start_service, _config(pki, fake))
    awake_port = free_port()
    awake = start_sipp(_sipp(svc, "phone_missed.xml", awake_port)[1:])   # rings, never answers
    woken: dict[str, Any] = {}
    try:
        reg = yield _register(svc, awake_port, token="awake0device0token")
        assert reg.returncode == 0, reg.stdout
        reg = yield _register(svc, free_port())                          # the sleeping one
        assert reg.returncode == 0, reg.stdout
        new_port = free_port()

        def on_push(request: Any) -> Reply:
            if request.token == TOKEN and "phone" not in woken:
                woken["phone"] = start_sipp(_sipp(svc, "phone_answer.xml", new_port)[1:])
                woken["register"] = _register(svc, new_port)
            return Reply.ok()

        fake.on_request = on_push
        caller = yield _run(_sipp(svc, "caller.xml", free_port(), "-key", "callee", "1111",
                                  "-key", "ring_file", "/dev/null"))
        assert caller.returncode == 0, caller.stdout[-3000:] + svc.log()[-4000:]
        yield threads.deferToThread(woken["phone"].wait, 20)
        assert woken["phone"].returncode == 0
        yield threads.deferToThread(awake.wait, 20)
        assert awake.returncode == 0, ("the ringing device must get CANCEL when the other "
                                       "answers\n" + awake.stdout.read().decode()[-2500:]
                                       + svc.log()[-4000:])
    finally:
        stop_process(awake)
        if "phone" in woken:
            stop_process(woken["phone"])
    assert sorted(r.token for r in fake.requests) == sorted([TOKEN, "awake0device0token"])
    assert recent_cdrs(svc)[-1]["status"] == 200


@pytest_twisted.inlineCallbacks
def test_nobody_registers_in_time_gives_480(start_service, apns) -> None:
    pki, fake = apns
    svc = yield threads.deferToThread(start_service, _config(pki, fake, wake_timeout=2))
    reg = yield _register(svc, free_port())
    assert reg.returncode == 0, reg.stdout
    started = time.monotonic()
    caller = yield _run(_sipp(svc, "caller_480.xml", free_port(), "-key", "callee", "1111"))
    assert caller.returncode == 0, caller.stdout[-3000:] + svc.log()[-3000:]
    assert 1.5 < time.monotonic() - started < 10
    assert len(fake.requests) == 1
    cdr = recent_cdrs(svc)[-1]
    assert cdr["status"] == 480 and cdr["push_outcome"].startswith("delivered")
