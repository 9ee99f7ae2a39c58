"""SIGHUP: a changed config file applies to new calls whole, or is refused whole."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import free_port, require_sipp
from tests.test_calls_sipp import Calls, caller_leg, ok
from tests.test_trunk_resilience import INBOUND, invites, uas

ROUTES = '[[router]]\nplugin = "prefix"\nroutes = [{{ prefix = "00", trunk = "a" }}{more}]\n'


@pytest.fixture
def service(start_service: Any) -> Iterator[Any]:
    require_sipp()
    made: list[Calls] = []

    def make(port_a: int) -> Calls:
        trunk = f'[[trunk]]\nname = "a"\nuri = "sip:127.0.0.1:{port_a}"\n'
        made.append(Calls(start_service(INBOUND + trunk, routers=ROUTES.format(more=""))))
        return made[-1]

    yield make
    for c in made:
        c.stop()


def _sighup_and_wait(c: Calls, needle: str) -> None:
    already = c.svc.log().count(needle)
    assert c.svc.process is not None
    c.svc.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while c.svc.log().count(needle) <= already:
        assert time.monotonic() < deadline, c.svc.log()[-3000:]
        time.sleep(0.05)


def _add_trunk_b(c: Calls, port_b: int, extra: str = "") -> None:
    text = c.svc.config_path.read_text()
    text = text.replace('[[router]]', f'[[trunk]]\nname = "b"\nuri = "sip:127.0.0.1:{port_b}"\n'
                        f'{extra}\n[[router]]', 1)
    text = text.replace('trunk = "a" }]', 'trunk = "a" }, { prefix = "01", trunk = "b" }]')
    c.svc.config_path.write_text(text)


def test_sighup_with_a_new_trunk_then_a_call_to_it_works(service: Any) -> None:
    port_a, port_b = free_port(), free_port()
    c = service(port_a)
    _add_trunk_b(c, port_b)
    _sighup_and_wait(c, "reloaded ")
    b = uas(c, "calls_uas.xml", port_b)
    call = c.call("calls_uac.xml", callee="0149301234")
    ok(call, c)
    ok(b, c)
    assert caller_leg(call.messages()).finals == [200]
    assert str(invites(b)[0].start).startswith("INVITE sip:0149301234@127.0.0.1:")
    # and the old trunk still works
    a = uas(c, "calls_uas.xml", port_a)
    again = c.call("calls_uac.xml", callee="0049301234")
    ok(again, c)
    ok(a, c)


def test_a_bad_file_is_refused_whole_and_named(service: Any) -> None:
    port_a, port_b = free_port(), free_port()
    c = service(port_a)
    _add_trunk_b(c, port_b, extra='from_user = "nobody"\n')      # the new trunk is wrong
    _sighup_and_wait(c, "reload refused")
    assert "trunk[2].from_user: must be one of" in c.svc.log()
    # Nothing of the new file applies: its route to "b" is unknown, "a" still works.
    refused = c.call("calls_uac_fail.xml", callee="0149301234")
    ok(refused, c)
    assert caller_leg(refused.messages()).finals == [404]
    a = uas(c, "calls_uas.xml", port_a)
    call = c.call("calls_uac.xml", callee="0049301234")
    ok(call, c)
    ok(a, c)
    assert c.svc.process is not None and c.svc.process.poll() is None
