"""The call core end to end: SIPp as caller and callee, the B2BUA started as users start it.

Every test reads both SIPp message logs (``-trace_msg``) and checks that the
two legs are two dialogs: the Call-ID, the tags, the Via branch and the
Contact of the caller's INVITE never reach the callee, and the B2BUA's own
tags differ per leg.  The CDR row of each call is checked too.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.support import (
    SCENARIOS, RunningService, free_port, require_sipp, start_sipp, stop_process,
)

Start = Callable[..., RunningService]

TRUNK = """
[[trunk]]
name = "carrier"
uri = "sip:127.0.0.1:5999"
accept_from = ["127.0.0.1/32"]
"""
USER = """
[[users]]
name = "1111"
password = "secret"
"""
SIPP_TIMEOUT = 20


@pytest.fixture(autouse=True)
def _sipp() -> None:
    require_sipp()


# -- SIPp message logs ----------------------------------------------------------------

_SEPARATOR = re.compile(r"^-{20,} .*$", re.M)
_TAG = re.compile(r";\s*tag=([^;,\s>]+)", re.I)


@dataclass
class Logged:
    """One SIP message from a SIPp message log."""

    sent: bool
    start: str
    headers: list[tuple[str, str]]
    body: str

    def header(self, name: str) -> str | None:
        return next((v for n, v in self.headers if n.lower() == name.lower()), None)

    @property
    def method(self) -> str | None:
        return None if self.start.startswith("SIP/2.0") else self.start.split()[0]

    @property
    def status(self) -> int | None:
        return int(self.start.split()[1]) if self.start.startswith("SIP/2.0") else None

    @property
    def call_id(self) -> str:
        return self.header("Call-ID") or ""

    @property
    def cseq_method(self) -> str:
        return (self.header("CSeq") or " ").split()[-1]

    @property
    def from_tag(self) -> str | None:
        return _tag(self.header("From"))

    @property
    def to_tag(self) -> str | None:
        return _tag(self.header("To"))


def _tag(value: str | None) -> str | None:
    if value is None:
        return None
    match = _TAG.search(value[value.rfind(">") + 1:] if ">" in value else value)
    return match.group(1) if match else None


def read_log(path: Path) -> list[Logged]:
    """Every message SIPp logged, in order."""
    if not path.exists():
        return []
    out = []
    for chunk in _SEPARATOR.split(path.read_text(errors="replace")):
        lines = chunk.strip("\n").split("\n")
        if not lines or "message" not in lines[0]:
            continue
        sent = "message sent" in lines[0]
        text = "\n".join(lines[1:]).strip("\n").replace("\r\n", "\n")
        head, _, body = text.partition("\n\n")
        head_lines = head.split("\n")
        headers = []
        for line in head_lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        out.append(Logged(sent, head_lines[0].strip(), headers, body.strip()))
    return out


@dataclass
class Leg:
    """What identifies one leg's dialog, from one end's log."""

    call_id: str
    from_tag: str | None
    to_tag: str | None
    invite: Logged
    finals: list[int] = field(default_factory=list)


def caller_leg(log: list[Logged]) -> Leg:
    """The A-leg as the caller saw it: its (last) INVITE and the B2BUA's answers."""
    invites = [m for m in log if m.sent and m.method == "INVITE" and m.to_tag is None]
    assert invites, "the caller sent no INVITE"
    invite = invites[-1]
    answers = [m for m in log if not m.sent and m.status and m.cseq_method == "INVITE"
               and m.call_id == invite.call_id and (m.header("CSeq") == invite.header("CSeq"))]
    to_tags = {m.to_tag for m in answers if m.to_tag}
    assert len(to_tags) <= 1, f"the B2BUA used several To tags on the A-leg: {to_tags}"
    return Leg(invite.call_id, invite.from_tag, next(iter(to_tags), None), invite,
               [m.status for m in answers if m.status and m.status >= 200])


def callee_leg(log: list[Logged]) -> Leg:
    """The B-leg as the callee saw it: the B2BUA's (last) INVITE and its own answers."""
    invites = [m for m in log if not m.sent and m.method == "INVITE" and m.to_tag is None]
    assert invites, "the callee got no INVITE"
    invite = invites[-1]
    answers = [m for m in log if m.sent and m.status and m.cseq_method == "INVITE"
               and m.header("CSeq") == invite.header("CSeq")]
    to_tags = [m.to_tag for m in answers if m.to_tag]
    return Leg(invite.call_id, invite.from_tag, to_tags[0] if to_tags else None, invite,
               [m.status for m in answers if m.status and m.status >= 200])


def assert_legs_differ(a: Leg, b: Leg) -> None:
    """Two dialogs: nothing of the A-leg's identity or routing on the B-leg."""
    assert a.call_id and b.call_id and a.call_id != b.call_id
    assert a.from_tag and b.from_tag and a.from_tag != b.from_tag
    if a.to_tag and b.to_tag:
        assert a.to_tag != b.to_tag
    if a.to_tag:                     # the B2BUA's tag towards the caller ...
        assert a.to_tag != b.from_tag  # ... is not its tag towards the callee
    a_branch = (a.invite.header("Via") or "").split("branch=")[-1].split(";")[0]
    b_vias = " ".join(v for n, v in b.invite.headers if n.lower() == "via")
    assert a_branch and a_branch not in b_vias
    assert a.invite.header("Contact") != b.invite.header("Contact")
    assert a.call_id not in str(b.invite.headers)


# -- running things ---------------------------------------------------------------------


def udp_bound(port: int, host: str = "127.0.0.1") -> bool:
    """True when something listens on UDP host:port (read from /proc, no probe packet)."""
    want = "%s:%04X" % ("".join("%02X" % int(p) for p in reversed(host.split("."))), port)
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return True
    return any(line.split()[1] == want for line in lines)


@dataclass
class Sipp:
    """One SIPp process with its message log."""

    process: subprocess.Popen
    log_path: Path
    port: int

    def wait(self, timeout: float = SIPP_TIMEOUT + 5) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            stop_process(self.process)
            raise

    def messages(self) -> list[Logged]:
        return read_log(self.log_path)

    def output(self) -> str:
        out = b""
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None and self.process.poll() is not None:
                out += stream.read()
        return out.decode(errors="replace")[-2500:]


class Calls:
    """Starts SIPp callers and callees against one running service."""

    def __init__(self, svc: RunningService, uas_port: int = 0) -> None:
        self.svc = svc
        self.uas_port = uas_port
        self.started: list[Sipp] = []

    def _start(self, scenario: str, port: int, ip: str, keys: dict[str, str],
               extra: tuple[str, ...], remote: bool) -> Sipp:
        log = self.svc.workdir / f"{len(self.started)}-{scenario}.log"
        args = ["-sf", str(SCENARIOS / scenario), "-i", ip, "-p", str(port), "-m", "1",
                "-nostdin", "-timeout", f"{SIPP_TIMEOUT}s", "-timeout_error",
                "-trace_msg", "-message_file", str(log)]
        for name, value in keys.items():
            args += ["-key", name, value]
        args += list(extra)
        if remote:
            args.append(f"127.0.0.1:{self.svc.port}")
        sipp = Sipp(start_sipp(args, cwd=self.svc.workdir), log, port)
        self.started.append(sipp)
        return sipp

    def callee(self, scenario: str, port: int | None = None) -> Sipp:
        """A SIPp UAS, returned once it listens (polled with a deadline)."""
        port = port or free_port()
        sipp = self._start(scenario, port, "127.0.0.1", {}, (), remote=False)
        deadline = time.monotonic() + 10
        while not udp_bound(port):
            assert sipp.process.poll() is None, sipp.output()
            assert time.monotonic() < deadline, "the SIPp callee did not start"
            time.sleep(0.02)
        return sipp

    def call(self, scenario: str, callee: str = "2000", *, ip: str = "127.0.0.1",
             max_forwards: int = 70, extra: tuple[str, ...] = (), **keys: str) -> Sipp:
        """Run a SIPp caller to the end (bounded); the caller's return code is not checked."""
        sipp = self._start(scenario, free_port(), ip,
                           {"callee": callee, "max_forwards": str(max_forwards), **keys},
                           extra, remote=True)
        sipp.wait()
        return sipp

    def register(self, contact_port: int, user: str = "1111", password: str = "secret") -> None:
        sipp = self._start("calls_register.xml", free_port(), "127.0.0.1",
                           {"aor_user": user, "contact_port": str(contact_port)},
                           ("-au", user, "-ap", password), remote=True)
        assert sipp.wait() == 0, sipp.output()

    def stop(self) -> None:
        for sipp in self.started:
            stop_process(sipp.process)

    def cdr(self, call_id: str, timeout: float = 10) -> dict[str, Any]:
        """The CDR row of ``call_id`` (written after the call ends; polled)."""
        deadline = time.monotonic() + timeout
        while True:
            out = self.svc.admin("cdr", "--tail", "20", "--json")
            assert out.returncode == 0, out.stderr
            rows = [r for r in json.loads(out.stdout) if r["call_id"] == call_id]
            if rows:
                assert len(rows) == 1, rows
                return rows[0]
            assert time.monotonic() < deadline, f"no CDR for {call_id}\n{self.svc.log()[-4000:]}"
            time.sleep(0.1)


@pytest.fixture
def calls(start_service: Start) -> Any:
    made: list[Calls] = []

    def make(extra: str = "", routers: str | None = None, uas_port: int | None = None) -> Calls:
        port = uas_port or free_port()
        if routers is None:
            routers = f'[[router]]\nplugin = "static"\ntarget = "sip:127.0.0.1:{port}"\n'
        svc = start_service(TRUNK + extra, routers=routers)
        made.append(Calls(svc, port))
        return made[-1]

    yield make
    for c in made:
        c.stop()


def ok(sipp: Sipp, c: Calls) -> None:
    code = sipp.wait()
    assert code == 0, (f"{sipp.log_path.name} exited {code}\n{sipp.output()}\n"
                       f"--- service log ---\n{c.svc.log()[-5000:]}")


def check_cdr(c: Calls, a: Leg, b: Leg | None, **expect: Any) -> dict[str, Any]:
    row = c.cdr(a.call_id)
    assert row["call_id"] == a.call_id
    assert a.call_id not in row["b_call_ids"]
    if b is not None:
        assert b.call_id in row["b_call_ids"]
    assert row["started_at"] and row["ended_at"] and row["ended_at"] >= row["started_at"]
    assert len(row["branches"]) == len(row["b_call_ids"])
    for name, value in expect.items():
        assert row[name] == value, (name, row)
    return row


# -- basic calls ------------------------------------------------------------------------


def test_caller_hangs_up(calls: Any) -> None:
    c = calls()
    uas = c.callee("calls_uas.xml", c.uas_port)
    uac = c.call("calls_uac.xml", max_forwards=20)
    ok(uac, c)
    ok(uas, c)
    a, b = caller_leg(uac.messages()), callee_leg(uas.messages())
    assert_legs_differ(a, b)
    assert b.invite.header("Max-Forwards") == "19"          # decremented, not reset to 70
    assert b.invite.header("Subject") == "calls test"        # end-to-end headers pass
    assert "m=audio" in b.invite.body                        # so does the offer
    # The ACK (on the INVITE's own branch) reached the dialog: the callee got its ACK.
    assert any(m.method == "ACK" and not m.sent for m in uas.messages())
    row = check_cdr(c, a, b, status=200, ended_by="caller")
    assert row["answered_at"] and row["route"].startswith("targets")
    assert row["branches"][0]["status"] == 200


def test_callee_hangs_up(calls: Any) -> None:
    c = calls()
    uas = c.callee("calls_uas_bye.xml", c.uas_port)
    uac = c.call("calls_uac_recv_bye.xml")
    ok(uac, c)
    ok(uas, c)
    a, b = caller_leg(uac.messages()), callee_leg(uas.messages())
    assert_legs_differ(a, b)
    bye = next(m for m in uac.messages() if m.method == "BYE" and not m.sent)
    assert bye.call_id == a.call_id and bye.from_tag == a.to_tag and bye.to_tag == a.from_tag
    check_cdr(c, a, b, status=200, ended_by="callee")


def test_busy_is_relayed(calls: Any) -> None:
    c = calls()
    uas = c.callee("calls_uas_busy.xml", c.uas_port)
    uac = c.call("calls_uac_fail.xml")
    ok(uac, c)
    ok(uas, c)
    a, b = caller_leg(uac.messages()), callee_leg(uas.messages())
    assert a.finals == [486] and b.finals == [486]
    assert_legs_differ(a, b)
    row = check_cdr(c, a, b, status=486, answered_at=None)
    assert row["branches"][0]["status"] == 486


def test_redirect_is_passed_back_with_its_contact(calls: Any) -> None:
    c = calls()
    uas = c.callee("calls_uas_redirect.xml", c.uas_port)
    uac = c.call("calls_uac_fail.xml")
    ok(uac, c)
    ok(uas, c)
    a, b = caller_leg(uac.messages()), callee_leg(uas.messages())
    assert a.finals == [302]
    final = next(m for m in uac.messages() if m.status == 302)
    assert "sip:2222@192.0.2.7:5062" in (final.header("Contact") or "")
    assert_legs_differ(a, b)
    check_cdr(c, a, b, status=302)


# -- timers -----------------------------------------------------------------------------


def test_no_answer_ends_with_ring_timeout(calls: Any) -> None:
    c = calls("[calls]\nring_timeout = 2\n")
    uas = c.callee("calls_uas_ring.xml", c.uas_port)
    started = time.monotonic()
    uac = c.call("calls_uac_fail.xml")
    elapsed = time.monotonic() - started
    ok(uac, c)
    ok(uas, c)                    # the callee got the CANCEL (its scenario waits for it)
    a, b = caller_leg(uac.messages()), callee_leg(uas.messages())
    assert a.finals == [480] and b.finals == [487]
    assert 1.5 < elapsed < 10
    assert_legs_differ(a, b)
    check_cdr(c, a, b, status=480, ended_by="timeout")


def test_timer_c_cancels_a_branch_that_only_rings(calls: Any) -> None:
    c = calls("[calls]\nring_timeout = 20\ntimer_c = 2\n")
    uas = c.callee("calls_uas_ring.xml", c.uas_port)
    started = time.monotonic()
    uac = c.call("calls_uac_fail.xml")
    elapsed = time.monotonic() - started
    ok(uac, c)
    ok(uas, c)
    a, b = caller_leg(uac.messages()), callee_leg(uas.messages())
    assert b.finals == [487]
    assert a.finals == [408]      # the branch counts as timed out, not as cancelled
    assert 1.5 < elapsed < 10
    assert_legs_differ(a, b)
    check_cdr(c, a, b, status=408)


def test_max_duration_hangs_up_both_legs(calls: Any) -> None:
    c = calls("[calls]\nmax_duration = 2\n")
    uas = c.callee("calls_uas.xml", c.uas_port)
    uac = c.call("calls_uac_recv_bye.xml")
    ok(uac, c)
    ok(uas, c)                    # both got a BYE from the B2BUA
    a, b = caller_leg(uac.messages()), callee_leg(uas.messages())
    assert_legs_differ(a, b)
    row = check_cdr(c, a, b, status=200, ended_by="max-duration")
    assert 1.5 < row["ended_at"] - row["answered_at"] < 10


# -- the caller's CANCEL, re-INVITE, late offer -------------------------------------------


def test_caller_cancel_gives_487_and_cancels_the_branch(calls: Any) -> None:
    c = calls()
    uas = c.callee("calls_uas_ring.xml", c.uas_port)
    uac = c.call("calls_uac_cancel.xml")
    ok(uac, c)
    ok(uas, c)
    a, b = caller_leg(uac.messages()), callee_leg(uas.messages())
    assert a.finals == [487] and b.finals == [487]
    cancel = next(m for m in uas.messages() if m.method == "CANCEL")
    assert cancel.call_id == b.call_id and cancel.call_id != a.call_id
    assert_legs_differ(a, b)
    check_cdr(c, a, b, status=487, ended_by="caller")


def test_reinvite_is_relayed(calls: Any) -> None:
    c = calls()
    uas = c.callee("calls_uas_reinvite.xml", c.uas_port)
    uac = c.call("calls_uac_reinvite.xml")
    ok(uac, c)
    ok(uas, c)
    a, b = caller_leg(uac.messages()), callee_leg(uas.messages())
    assert_legs_differ(a, b)
    reinvite = [m for m in uas.messages() if m.method == "INVITE" and not m.sent][-1]
    assert reinvite.to_tag == b.to_tag and reinvite.call_id == b.call_id
    assert "a=sendonly" in reinvite.body                     # the new offer went through
    answer = [m for m in uac.messages() if m.status == 200 and not m.sent
              and m.header("CSeq") == "2 INVITE"][-1]
    assert "a=recvonly" in answer.body                       # and the new answer came back
    assert answer.to_tag == a.to_tag
    acks = [m for m in uas.messages() if m.method == "ACK" and not m.sent]
    assert len(acks) == 2
    check_cdr(c, a, b, status=200, ended_by="caller")


def test_late_offer_sdp_in_200_and_ack(calls: Any) -> None:
    c = calls()
    uas = c.callee("calls_uas.xml", c.uas_port)
    uac = c.call("calls_uac_late.xml")
    ok(uac, c)
    ok(uas, c)
    a, b = caller_leg(uac.messages()), callee_leg(uas.messages())
    assert_legs_differ(a, b)
    assert b.invite.body == "" and b.invite.header("Content-Type") is None
    ok_200 = next(m for m in uac.messages() if m.status == 200 and m.cseq_method == "INVITE")
    assert "o=callee" in ok_200.body                          # the callee's offer
    ack = next(m for m in uas.messages() if m.method == "ACK" and not m.sent)
    assert "o=caller" in ack.body                             # the caller's answer
    assert ack.header("Content-Type") == "application/sdp"
    check_cdr(c, a, b, status=200)


# -- forking ----------------------------------------------------------------------------


def test_fork_to_two_contacts_second_answers_first_cancelled(calls: Any) -> None:
    c = calls(USER, routers='[[router]]\nplugin = "local_users"\n')
    ringing, answering = free_port(), free_port()
    first = c.callee("calls_uas_ring.xml", ringing)
    second = c.callee("calls_uas.xml", answering)
    c.register(ringing)
    c.register(answering)
    uac = c.call("calls_uac.xml", callee="1111")
    ok(uac, c)
    ok(second, c)
    ok(first, c)                  # it got the CANCEL and sent 487
    a = caller_leg(uac.messages())
    b1, b2 = callee_leg(first.messages()), callee_leg(second.messages())
    assert b1.finals == [487] and b2.finals == [200]
    assert_legs_differ(a, b1)
    assert_legs_differ(a, b2)
    assert b1.call_id != b2.call_id and b1.from_tag != b2.from_tag
    row = check_cdr(c, a, b2, status=200, ended_by="caller", callee="1111")
    assert set(row["b_call_ids"]) == {b1.call_id, b2.call_id}
    assert sorted(str(x["status"]) for x in row["branches"]) == ["200", "487"]


# -- who may call -----------------------------------------------------------------------


def test_non_trunk_caller_is_refused_before_any_route(calls: Any) -> None:
    c = calls(USER)
    uas = c.callee("calls_uas.xml", c.uas_port)
    refused = c.call("calls_uac_fail.xml", ip="127.0.0.2")
    ok(refused, c)
    r = caller_leg(refused.messages())
    assert r.finals == [407]
    challenge = next(m for m in refused.messages() if m.status == 407)
    assert "Digest" in (challenge.header("Proxy-Authenticate") or "")
    # The same phone with a local user's credentials gets through; the callee's only
    # INVITE is that call's, so the refused one never reached a route.
    uac = c.call("calls_uac_auth.xml", ip="127.0.0.2", extra=("-au", "1111", "-ap", "secret"))
    ok(uac, c)
    ok(uas, c)
    a, b = caller_leg(uac.messages()), callee_leg(uas.messages())
    assert [m.call_id for m in uas.messages() if m.method == "INVITE"] == [b.call_id]
    assert a.call_id != r.call_id
    assert_legs_differ(a, b)
    check_cdr(c, a, b, status=200, caller="1111")


def _digest_ok(authorization: str, password: str, method: str = "INVITE") -> bool:
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', authorization.partition(" ")[2]))

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5(f"{params['username']}:{params['realm']}:{password}")
    ha2 = md5(f"{method}:{params['uri']}")
    expected = md5(f"{ha1}:{params['nonce']}:{params['nc']}:{params['cnonce']}:auth:{ha2}")
    return expected == params["response"]


def test_outbound_trunk_challenge_is_answered_once(calls: Any) -> None:
    uas_port = free_port()
    trunk = (f'[[trunk]]\nname = "out"\nuri = "sip:127.0.0.1:{uas_port}"\n'
             f'username = "b2b"\npassword = "trunk-pw"\n')
    routers = '[[router]]\nplugin = "prefix"\nroutes = [{ prefix = "00", trunk = "out" }]\n'
    c = calls(USER + trunk, routers=routers, uas_port=uas_port)
    uas = c.callee("calls_uas_challenge.xml", uas_port)
    uac = c.call("calls_uac_auth.xml", callee="0049301234", ip="127.0.0.2",
                 extra=("-au", "1111", "-ap", "secret"))
    ok(uac, c)
    ok(uas, c)
    a, b = caller_leg(uac.messages()), callee_leg(uas.messages())
    invites = [m for m in uas.messages() if m.method == "INVITE" and not m.sent]
    assert len(invites) == 2
    assert invites[0].header("Proxy-Authorization") is None
    auth = invites[1].header("Proxy-Authorization") or ""
    assert 'username="b2b"' in auth and 'realm="carrier"' in auth
    assert _digest_ok(auth, "trunk-pw")
    assert invites[1].call_id == invites[0].call_id and invites[1].from_tag == invites[0].from_tag
    assert invites[1].header("CSeq") == "2 INVITE"
    assert "1111" not in str(invites[1].header("Proxy-Authorization"))  # not the user's
    assert_legs_differ(a, b)
    assert str(b.invite.start).startswith("INVITE sip:0049301234@127.0.0.1")
    check_cdr(c, a, b, status=200, caller="1111", route="trunk out 0049301234")


# -- Max-Forwards and loops ---------------------------------------------------------------


def test_max_forwards_zero_gets_483(calls: Any) -> None:
    c = calls()
    uac = c.call("calls_uac_fail.xml", max_forwards=0)
    ok(uac, c)
    assert caller_leg(uac.messages()).finals == [483]


def test_loop_back_to_ourselves_gets_482(calls: Any, start_service: Start) -> None:
    port = free_port()
    routers = f'[[router]]\nplugin = "static"\ntarget = "sip:loop@127.0.0.1:{port}"\n'
    svc = start_service(TRUNK, routers=routers, port=port)
    c = Calls(svc)
    try:
        uac = c.call("calls_uac_fail.xml")
        ok(uac, c)
        a = caller_leg(uac.messages())
        assert a.finals == [482]
        row = c.cdr(a.call_id)
        assert row["status"] == 482 and len(row["b_call_ids"]) == 1
        assert row["b_call_ids"][0] != a.call_id
        # Only one call was made: the looped INVITE never became a second call.
        out = json.loads(svc.admin("cdr", "--tail", "20", "--json").stdout)
        assert [r["call_id"] for r in out] == [a.call_id]
    finally:
        c.stop()
