"""Interop with real softphones from Debian: two baresip and two linphonec register with digest
at the service started by twistd and call each other through the B2BUA; each phone sends its
own tone and the test checks, from what the other phone decoded, that it heard that tone.

Absent packages skip these tests, except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.softphones import Baresip, Linphonec, require_binary, wait_for
from tests.support import RunningService, free_port, write_config

TONES = {"1111": 440.0, "2222": 660.0, "3333": 880.0, "4444": 550.0}


class Phones:
    def __init__(self, svc: RunningService) -> None:
        self.svc = svc
        self.all: dict[str, Baresip | Linphonec] = {}

    def bindings(self, user: str) -> list[dict]:
        out = self.svc.admin("bindings", user, "--json")
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def describe(self) -> str:
        return "\n".join(f"=== {name}\n{phone.log()}" for name, phone in self.all.items()) + \
            "\n=== service\n" + self.svc.log()[-4000:]


@pytest.fixture(scope="module")
def phones(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Phones]:
    require_binary("baresip", "baresip")
    require_binary("linphonec", "linphone-cli")
    workdir = tmp_path_factory.mktemp("softphones")
    port = free_port()
    svc = RunningService(workdir=workdir, config_path=write_config(workdir, port), port=port)
    svc.start()
    group = Phones(svc)
    try:
        for user in TONES:
            added = svc.admin("user", "add", user, "--password-stdin", input=f"pw-{user}\n")
            assert added.returncode == 0, added.stderr
        for user in ("1111", "2222"):
            group.all[user] = Baresip(workdir, user, f"pw-{user}", port, TONES[user])
        for user in ("3333", "4444"):
            phone = Linphonec(workdir, user, f"pw-{user}", port, TONES[user])
            group.all[user] = phone
            phone.start()
        for phone in group.all.values():
            if isinstance(phone, Baresip):
                phone.connect()
        wait_for(lambda: all(group.bindings(user) for user in TONES), 30,
                 "all four phones to register", group.describe)
        yield group
    finally:
        for phone in group.all.values():
            phone.stop()
        svc.stop()


def _heard(phone: Baresip | Linphonec, frequency: float) -> bool:
    level, measured = phone.heard()
    return level > 300 and abs(measured - frequency) < frequency * 0.05


def test_four_phones_register_with_digest(phones: Phones) -> None:
    agents = {user: phones.bindings(user)[0]["user_agent"] for user in TONES}
    assert agents["1111"].startswith("baresip") and agents["2222"].startswith("baresip")
    assert agents["3333"].startswith("Linphonec") and agents["4444"].startswith("Linphonec")


def test_baresip_calls_baresip_and_both_hear_each_other(phones: Phones) -> None:
    caller, callee = phones.all["1111"], phones.all["2222"]
    assert isinstance(caller, Baresip) and isinstance(callee, Baresip)
    caller.command(f"dial sip:2222@127.0.0.1:{phones.svc.port}")
    try:
        wait_for(lambda: caller.saw("CALL_ESTABLISHED"), 15, "the call to be answered",
                 phones.describe)
        wait_for(lambda: _heard(callee, TONES["1111"]) and _heard(caller, TONES["2222"]), 15,
                 "each baresip to hear the other's tone",
                 lambda: f"1111 heard {caller.heard()}, 2222 heard {callee.heard()}\n"
                         + phones.describe())
    finally:
        caller.command("hangup")
    wait_for(lambda: callee.saw("CALL_CLOSED"), 10, "the callee to see the BYE", phones.describe)


def test_linphonec_calls_baresip_and_both_hear_each_other(phones: Phones) -> None:
    caller, callee = phones.all["3333"], phones.all["2222"]
    assert isinstance(caller, Linphonec) and isinstance(callee, Baresip)
    before = len(callee.poll_events())
    caller.command(f"call sip:2222@127.0.0.1:{phones.svc.port}")
    try:
        wait_for(lambda: any(e.get("type") == "CALL_ESTABLISHED"
                             for e in callee.poll_events()[before:]), 15,
                 "baresip to answer linphonec's call", phones.describe)
        wait_for(lambda: _heard(callee, TONES["3333"]), 15, "baresip to hear linphonec's tone",
                 lambda: f"2222 heard {callee.heard()}\n" + phones.describe())
    finally:
        caller.command("terminate")
    wait_for(lambda: any(e.get("type") == "CALL_CLOSED" for e in callee.poll_events()[before:]),
             10, "baresip to see the BYE", phones.describe)
    # linphonec writes its recording as the call ends.
    wait_for(lambda: _heard(caller, TONES["2222"]), 10, "linphonec to have heard baresip's tone",
             lambda: f"3333 heard {caller.heard()}\n" + phones.describe())


@pytest.mark.xfail(strict=True, reason="Debian's linphonec 5.1 never starts its core "
                   "(GlobalOn), so it declines every incoming call with 503; strict: passes "
                   "once a fixed linphonec is installed, then remove this mark")
def test_baresip_calls_linphonec(phones: Phones) -> None:
    caller, callee = phones.all["1111"], phones.all["4444"]
    assert isinstance(caller, Baresip) and isinstance(callee, Linphonec)
    before = len(caller.poll_events())
    caller.command(f"dial sip:4444@127.0.0.1:{phones.svc.port}")
    try:
        wait_for(lambda: any(e.get("type") in ("CALL_ESTABLISHED", "CALL_CLOSED")
                             for e in caller.poll_events()[before:]), 15,
                 "the call to be answered or refused", phones.describe)
        assert any(e.get("type") == "CALL_ESTABLISHED" for e in caller.events[before:])
        wait_for(lambda: _heard(caller, TONES["4444"]), 10, "baresip to hear linphonec",
                 phones.describe)
    finally:
        caller.command("hangup")
