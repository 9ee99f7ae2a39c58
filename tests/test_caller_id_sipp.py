"""Caller ID toward the carrier, end to end: a phone that forges its From (and PAI, RPID)
reaches the trunk (a SIPp UAS) only as the user it authenticated as; ``Privacy: id`` and the
per-trunk From policy; users barred from the trunk get 403 and the trunk sees nothing."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import free_port, require_sipp
from tests.test_calls_sipp import TRUNK, USER, Calls, callee_leg, caller_leg, ok

ROUTERS = '[[router]]\nplugin = "prefix"\nroutes = [{ prefix = "00", trunk = "out" }]\n'


@pytest.fixture
def calls(start_service: Any) -> Iterator[Any]:
    """Factory: a service with user 1111 and a trunk "out" (a SIPp UAS) -> (Calls, UAS port)."""
    require_sipp()
    made: list[Calls] = []

    def make(trunk_extra: str = "") -> tuple[Calls, int]:
        uas_port = free_port()
        trunk = (f'[[trunk]]\nname = "out"\nuri = "sip:127.0.0.1:{uas_port}"\n'
                 f'accept_from = ["192.0.2.1/32"]\n{trunk_extra}')
        made.append(Calls(start_service(TRUNK + USER + trunk, routers=ROUTERS), uas_port))
        return made[-1], uas_port

    yield make
    for c in made:
        c.stop()


def _service(calls: Any, trunk_extra: str = "") -> tuple[Calls, int]:
    made: tuple[Calls, int] = calls(trunk_extra)
    return made


def _admin(c: Calls, *args: str) -> None:
    done = c.svc.admin("user", *args)
    assert done.returncode == 0, done.stderr


def _forged_call(c: Calls, uas_port: int, privacy: str = "none") -> Any:
    uas = c.callee("calls_uas.xml", uas_port)
    uac = c.call("calls_uac_forged.xml", callee="0049301234", ip="127.0.0.2",
                 extra=("-au", "1111", "-ap", "secret"), privacy=privacy)
    ok(uac, c)
    ok(uas, c)
    assert caller_leg(uac.messages()).finals == [200]
    return callee_leg(uas.messages()).invite


def _no_forgery(invite: Any) -> None:
    text = "\n".join(f"{n}: {v}" for n, v in invite.headers)
    assert "evil.example" not in text and "Bank" not in text and "4930999999" not in text
    assert invite.header("Remote-Party-ID") is None
    assert invite.header("P-Preferred-Identity") is None
    assert len([n for n, _ in invite.headers if n.lower() == "p-asserted-identity"]) == 1


def test_forged_from_never_reaches_the_trunk(calls: Any) -> None:
    c, uas_port = _service(calls)
    _admin(c, "set", "1111", "caller_id", "+4930123456")
    invite = _forged_call(c, uas_port)
    _no_forgery(invite)
    assert invite.header("From").startswith("<sip:+4930123456@127.0.0.1>;tag=")
    assert invite.header("P-Asserted-Identity") == "<sip:+4930123456@127.0.0.1>"
    assert invite.header("Privacy") == "none"


def test_caller_number_defaults_to_the_user_name_with_its_display_name(calls: Any) -> None:
    c, uas_port = _service(calls)
    # The configured display name (not the phone's "Bank") goes with the identity.
    done = c.svc.admin("user", "add", "2222", "--display-name", "Front desk",
                       "--password-stdin", input="pw2\n")
    assert done.returncode == 0, done.stderr
    uas = c.callee("calls_uas.xml", uas_port)
    uac = c.call("calls_uac_forged.xml", callee="0049301234", ip="127.0.0.2",
                 extra=("-au", "2222", "-ap", "pw2"), privacy="none")
    ok(uac, c)
    ok(uas, c)
    invite = callee_leg(uas.messages()).invite
    _no_forgery(invite)
    assert invite.header("From").startswith('"Front desk" <sip:2222@127.0.0.1>;tag=')
    assert invite.header("P-Asserted-Identity") == '"Front desk" <sip:2222@127.0.0.1>'


def test_privacy_id_hides_from_but_asserts_the_user(calls: Any) -> None:
    c, uas_port = _service(calls)
    invite = _forged_call(c, uas_port, privacy="id")
    _no_forgery(invite)
    assert invite.header("From").startswith('"Anonymous" <sip:anonymous@anonymous.invalid>;tag=')
    assert invite.header("P-Asserted-Identity") == "<sip:1111@127.0.0.1>"
    assert invite.header("Privacy") == "id"


def test_trunk_account_as_from_user_and_no_display_name(calls: Any) -> None:
    c, uas_port = _service(calls, 'username = "acct42"\npassword = "x"\n'
                                  'from_user = "account"\nsend_display_name = false\n')
    _admin(c, "set", "1111", "caller_id", "+4930123456")
    invite = _forged_call(c, uas_port)
    _no_forgery(invite)
    assert invite.header("From").startswith("<sip:acct42@127.0.0.1>;tag=")
    assert invite.header("P-Asserted-Identity") == "<sip:+4930123456@127.0.0.1>"


def test_a_user_barred_from_the_trunk_gets_403_and_the_trunk_sees_nothing(calls: Any) -> None:
    c, uas_port = _service(calls)
    _admin(c, "set", "1111", "trunk", "no")
    uas = c.callee("calls_uas.xml", uas_port)
    uac = c.call("calls_uac_forged.xml", callee="0049301234", ip="127.0.0.2",
                 extra=("-au", "1111", "-ap", "secret"), privacy="none")
    ok(uac, c)
    assert caller_leg(uac.messages()).finals == [403]
    assert not [m for m in uas.messages() if m.method == "INVITE"]


def test_max_calls_refuses_the_call_over_the_limit(calls: Any) -> None:
    c, uas_port = _service(calls)
    _admin(c, "set", "1111", "max_calls", "1")
    uas = c.callee("calls_uas_ring.xml", uas_port)     # the first call rings on
    first = c._start("calls_uac_forged.xml", free_port(), "127.0.0.2",
                     {"callee": "0049301234", "max_forwards": "70", "privacy": "none"},
                     ("-au", "1111", "-ap", "secret"), remote=True)
    deadline = time.monotonic() + 10
    while not [m for m in uas.messages() if m.method == "INVITE"]:
        assert time.monotonic() < deadline, "the first call never reached the trunk"
        time.sleep(0.05)
    second = c.call("calls_uac_forged.xml", callee="0049301234", ip="127.0.0.2",
                    extra=("-au", "1111", "-ap", "secret"), privacy="none")
    assert caller_leg(second.messages()).finals == [403]
    first.process.terminate()
