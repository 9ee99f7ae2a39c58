"""Wake-up latency: from the woken phone's REGISTER to the INVITE it gets, under load.

    python bench/wakeup.py                        # 3 runs of 40 wake-ups: about 1 minute
    python bench/wakeup.py --runs 1 --count 20 --background 0
    python bench/wakeup.py --flush-delay 0        # what-if: the binding writer's batching off

Our service runs as users start it (twistd, pinned to ``--cpu``), with users, a trunk that
accepts 127.0.0.1, the router chain ``local_users`` then ``static`` to a SIPp UAS, and
[apns] pointed at the fake APNs (``tests/fake_apns.py``, a real HTTP/2 TLS server, in its
own process).  SIPp places ``--background`` calls/s of ordinary traffic through the static
route for the whole run.

Every wake-up uses its own user, registered beforehand with a push token (X-MPUSH) on a
contact nobody reads (the phone "asleep").  This process plays both ends, with plain UDP
sockets: the caller INVITEs the user and waits for the 180 (the B2BUA is now waiting for the
phone and has sent the push); then the phone, from a NEW port, sends REGISTER, gets the 401,
and sends the REGISTER with digest credentials.  The figure is the time from sending that
REGISTER to the INVITE arriving on the new port (kernel receive timestamp, SO_TIMESTAMPNS, so
this process's scheduling is not in it).  The phone answers, the caller ACKs and hangs up.
The baseline is the same step with no call waiting: another user's phone moves to a new port
with the same authenticated REGISTER, timed to its 200.  Each run reports p50/p99; the
summary quotes the median of the runs.  Exit status 0 when p50 <= 2 ms and p99 <= 10 ms.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    HOST, REPO, Child, finish_uac, free_port, machine, median, read_stat, start_ours, start_uac,
    start_uas, table, uas_scenario, what_if_launcher,
)

from b2bua.sip.digest_client import build_authorization, choose_challenge  # noqa: E402
from b2bua.sip.message import Request, Response, make_response, parse_message  # noqa: E402
from tests.fake_apns import KEY_ID, TEAM_ID  # noqa: E402

TARGET_P50_MS, TARGET_P99_MS = 2.0, 10.0
PASSWORD = "bench-pw"
SDP = (b"v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
Timed = tuple[int, Any]     # (kernel receive time in ns, parsed message)
# Linux: SO_TIMESTAMPNS (= SCM_TIMESTAMPNS) gives a struct timespec per datagram; Python 3.11
# does not name it.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


class Endpoint:
    """A UDP socket that stamps what it receives and keeps what it was not asked for yet."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.bind((HOST, 0))
        self.port: int = self.sock.getsockname()[1]
        self.server = server
        self.pending: list[Timed] = []

    def send(self, data: bytes) -> int:
        """Send to the B2BUA; return the wall-clock ns just before the send."""
        now = time.time_ns()
        self.sock.sendto(data, self.server)
        return now

    def expect(self, match: Callable[[Any], bool], timeout: float = 5.0) -> Timed:
        for i, (_stamp, message) in enumerate(self.pending):
            if match(message):
                return self.pending.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("nothing matching arrived on port %d" % self.port)
            self.sock.settimeout(left)
            data, ancillary, _, _ = self.sock.recvmsg(65535, socket.CMSG_SPACE(16))
            stamp = time.time_ns()
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    seconds, nanos = struct.unpack("qq", value[:16])
                    stamp = seconds * 1_000_000_000 + nanos
            try:
                message = parse_message(data)
            except Exception:
                continue
            if match(message):
                return stamp, message
            self.pending.append((stamp, message))

    def close(self) -> None:
        self.sock.close()


def is_response(method: str, status: int | None = None,
                final: bool = False) -> Callable[[Any], bool]:
    return lambda m: (isinstance(m, Response) and m.cseq.method == method
                      and (status is None or m.status == status)
                      and (not final or m.status >= 200))


def is_request(method: str) -> Callable[[Any], bool]:
    return lambda m: isinstance(m, Request) and m.method == method


def _id() -> str:
    return secrets.token_hex(8)


@dataclass
class Phone:
    """One user's device: registers contacts with a push token, answers the call."""

    user: str
    token: str
    server: tuple[str, int]

    def register(self, endpoint: Endpoint) -> tuple[int, int, Response]:
        """REGISTER -> 401 -> REGISTER with credentials from ``endpoint`` (its port is the
        contact).  Returns (ns sent, ns the 200 arrived, the 200)."""
        call_id, tag = _id() + "@bench", _id()
        uri = "sip:%s:%d" % self.server

        def request(cseq: int, authorization: str | None) -> bytes:
            lines = [f"REGISTER {uri} SIP/2.0",
                     f"Via: SIP/2.0/UDP {HOST}:{endpoint.port};branch=z9hG4bK{_id()};rport",
                     f"From: <sip:{self.user}@{HOST}>;tag={tag}", f"To: <sip:{self.user}@{HOST}>",
                     f"Call-ID: {call_id}", f"CSeq: {cseq} REGISTER",
                     f"Contact: <sip:{self.user}@{HOST}:{endpoint.port}>", "Expires: 3600",
                     f"X-MPUSH: i:com.example.softphone:{self.token}", "Max-Forwards: 70"]
            if authorization:
                lines.append("Authorization: " + authorization)
            return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()

        endpoint.send(request(1, None))
        _, challenge = endpoint.expect(is_response("REGISTER", 401))
        offer = choose_challenge(challenge.headers.lines("WWW-Authenticate"))
        if offer is None:
            raise RuntimeError("no usable digest challenge")
        credentials = build_authorization(offer, "REGISTER", uri, self.user, PASSWORD, _id())
        sent = endpoint.send(request(2, credentials))
        got, ok = endpoint.expect(is_response("REGISTER", final=True))
        if ok.status != 200:
            raise RuntimeError("REGISTER of %s got %d" % (self.user, ok.status))
        return sent, got, ok


def call_and_wake(phone: Phone, server: tuple[str, int]) -> dict[str, float]:
    """One wake-up: the call waits for the sleeping user, the phone registers from a new
    port; returns the delays in ms."""
    caller, woken = Endpoint(server), Endpoint(server)
    try:
        call_id, tag = _id() + "@caller", _id()
        ruri = f"sip:{phone.user}@{HOST}:{server[1]}"
        head = [f"From: \"Bench\" <sip:1234@{HOST}:{caller.port}>;tag={tag}",
                f"Call-ID: {call_id}", "Max-Forwards: 70"]

        def via() -> str:
            return f"Via: SIP/2.0/UDP {HOST}:{caller.port};branch=z9hG4bK{_id()};rport"

        invite = "\r\n".join([f"INVITE {ruri} SIP/2.0", via(), *head, f"To: <{ruri}>",
                              "CSeq: 1 INVITE", f"Contact: <sip:1234@{HOST}:{caller.port}>",
                              "Content-Type: application/sdp",
                              f"Content-Length: {len(SDP)}", "", ""]).encode() + SDP
        caller.send(invite)
        caller.expect(is_response("INVITE", 180))           # waiting for the phone now
        sent, got_200, _ = phone.register(woken)
        got_invite, b_invite = woken.expect(is_request("INVITE"))
        answer = make_response(b_invite, 200, to_tag=_id(), extra=[
            ("Contact", f"<sip:{phone.user}@{HOST}:{woken.port}>"),
            ("Content-Type", "application/sdp")])
        answer.body = SDP
        woken.sock.sendto(answer.to_bytes(), server)
        _, ok = caller.expect(is_response("INVITE", final=True))
        if ok.status != 200:
            raise RuntimeError("call to %s ended %d" % (phone.user, ok.status))
        target = str(ok.contacts[0].uri) if ok.contacts else ruri
        to = ok.headers.get("To")
        routes = list(reversed(ok.headers.get_all("Record-Route")))
        route = ["Route: " + ", ".join(routes)] if routes else []
        for cseq, method in ((1, "ACK"), (2, "BYE")):
            caller.send("\r\n".join([f"{method} {target} SIP/2.0", via(), *head, f"To: {to}",
                                     *route, f"CSeq: {cseq} {method}", "Content-Length: 0",
                                     "", ""]).encode())
        _, bye = woken.expect(is_request("BYE"))
        woken.sock.sendto(make_response(bye, 200).to_bytes(), server)
        caller.expect(is_response("BYE", final=True))
        return {"invite_ms": (got_invite - sent) / 1e6, "register_200_ms": (got_200 - sent) / 1e6}
    finally:
        caller.close()
        woken.close()


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (with 40 samples, p99 is the largest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] if ordered else float("nan")


def start_fake_apns(directory: Path) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.fake_apns", "--pki-dir", str(directory),
                             "--no-h2-validation"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(5)
        raise RuntimeError("the fake APNs did not start")
    return proc, int(json.loads(line)["port"])


def config(users: list[str], pki: Path, apns_port: int) -> str:
    entries = "".join(f'[[users]]\nname = "{u}"\npassword = "{PASSWORD}"\n\n' for u in users)
    return entries + f"""[push]
wake_timeout = 10

[apns]
enabled = true
auth = "token"
key_file = "{pki / 'AuthKey.p8'}"
key_id = "{KEY_ID}"
team_id = "{TEAM_ID}"
endpoint = "https://127.0.0.1:{apns_port}"
ca_file = "{pki / 'ca.pem'}"
timeout = 5
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--count", type=int, default=40, help="wake-ups per run")
    parser.add_argument("--background", type=int, default=100, help="calls/s of other traffic")
    parser.add_argument("--gap", type=float, default=0.05, help="s between wake-ups")
    parser.add_argument("--cpu", type=int, default=0, help="core for the B2BUA")
    parser.add_argument("--sipp-cpu", type=int, default=1, help="core for SIPp and this process")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--flush-delay", type=float, default=None,
                        help="what-if: the BindingWriter flush delay in s (patched at start)")
    parser.add_argument("--json", help="also write every figure to this file")
    opts = parser.parse_args()
    if opts.sipp_cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {opts.sipp_cpu})
    print("machine:", machine())
    n = opts.runs * opts.count
    wake_users = [str(30000 + i) for i in range(n)]
    base_users = [str(40000 + i) for i in range(n)]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-wakeup-") as tmp:
        work = Path(tmp)
        uas_scenario(work)
        fake, apns_port = start_fake_apns(work / "pki")
        uas_port = free_port()
        try:
            extra = config(wake_users + base_users, work / "pki", apns_port)
            routers = ('[[router]]\nplugin = "local_users"\n\n[[router]]\nplugin = "static"\n'
                       f'target = "sip:127.0.0.1:{uas_port}"\n')
            with start_ours(work / "b2bua", uas_port, cpu=opts.cpu, extra=extra,
                            routers=routers, log_level=opts.log_level,
                            python=what_if_launcher(flush_delay=opts.flush_delay)) as server:
                address = (HOST, server.port)
                phones = {u: Phone(u, "tok" + secrets.token_hex(16), address)
                          for u in wake_users + base_users}
                asleep = []
                for phone in phones.values():       # every phone registers, then sleeps
                    endpoint = Endpoint(address)
                    phone.register(endpoint)
                    asleep.append(endpoint)         # never read again: INVITEs get lost
                runs = measure(opts, server, uas_port, work, phones, wake_users, base_users)
                for endpoint in asleep:
                    endpoint.close()
        finally:
            fake.send_signal(signal.SIGTERM)
            fake.wait(10)
    return report(opts, runs)


def measure(opts: argparse.Namespace, server: Child, uas_port: int, work: Path,
            phones: dict[str, Phone], wake_users: list[str],
            base_users: list[str]) -> list[dict[str, Any]]:
    address = (HOST, server.port)
    background = None
    uas = None
    if opts.background:
        bound = 30 + opts.runs * opts.count * (opts.gap + 0.3)
        uas = start_uas(work, uas_port, None, bound + 60, cpu=opts.sipp_cpu)
        background = start_uac(work, server.port, int(opts.background * bound),
                               opts.background, cpu=opts.sipp_cpu, timeout_s=bound + 30,
                               name="background")
        time.sleep(3)                               # background traffic in steady state
    runs: list[dict[str, Any]] = []
    try:
        for run in range(opts.runs):
            wake: list[dict[str, float]] = []
            base: list[float] = []
            errors: list[str] = []
            users = range(run * opts.count, (run + 1) * opts.count)
            for i in users:
                moved = Endpoint(address)
                try:                                # baseline: a REGISTER and nothing else
                    sent, got, _ = phones[base_users[i]].register(moved)
                    base.append((got - sent) / 1e6)
                    wake.append(call_and_wake(phones[wake_users[i]], address))
                except (TimeoutError, RuntimeError) as error:
                    errors.append(str(error))
                finally:
                    moved.close()
                time.sleep(opts.gap)
            invite = [w["invite_ms"] for w in wake]
            reg200 = [w["register_200_ms"] for w in wake]
            runs.append({"run": run + 1, "wakeups": len(wake), "errors": errors,
                         "invite_p50": percentile(invite, 50), "invite_p99": percentile(invite, 99),
                         "invite_max": max(invite, default=float("nan")),
                         "wake_200_p50": percentile(reg200, 50),
                         "base_p50": percentile(base, 50), "base_p99": percentile(base, 99),
                         "invite_ms": invite, "wake_200_ms": reg200, "baseline_ms": base})
            print("run %d: %d wake-ups, REGISTER->INVITE p50 %.2f ms p99 %.2f ms; REGISTER->200 "
                  "alone p50 %.2f ms p99 %.2f ms%s" % (
                      run + 1, len(wake), runs[-1]["invite_p50"], runs[-1]["invite_p99"],
                      runs[-1]["base_p50"], runs[-1]["base_p99"],
                      "; %d errors: %s" % (len(errors), errors[:2]) if errors else ""), flush=True)
    finally:
        if background is not None:
            background.proc.send_signal(signal.SIGUSR1)   # SIPp: stop placing calls, end
            result = finish_uac(background, 0, 40)
            rows = read_stat(work / "background_stat.csv")
            placed = int(rows[-1].get("TotalCallCreated") or 0) if rows else 0
            failed = int(rows[-1].get("FailedCall(C)") or 0) if rows else result.failed
            for entry in runs:
                entry["background"] = {"rate": opts.background, "placed": placed,
                                       "ok": result.ok, "failed": failed}
        if uas is not None:
            uas.stop()
    return runs


def report(opts: argparse.Namespace, runs: list[dict[str, Any]]) -> int:
    if not runs:
        print("no run completed")
        return 2
    bg = runs[0].get("background")
    print()
    print(table([(r["run"], r["wakeups"], "%.2f" % r["invite_p50"], "%.2f" % r["invite_p99"],
                  "%.2f" % r["invite_max"], "%.2f" % r["wake_200_p50"], "%.2f" % r["base_p50"],
                  "%.2f" % r["base_p99"], len(r["errors"])) for r in runs],
                ["run", "wake-ups", "REGISTER->INVITE p50 ms", "p99 ms", "max ms",
                 "same REGISTER->200 p50 ms", "REGISTER alone->200 p50 ms", "p99 ms", "errors"]))
    p50 = median(r["invite_p50"] for r in runs)
    p99 = median(r["invite_p99"] for r in runs)
    b50 = median(r["base_p50"] for r in runs)
    b99 = median(r["base_p99"] for r in runs)
    print()
    print("background: %s" % ("%(rate)d calls/s, %(placed)d placed, %(ok)d ok, %(failed)d failed"
                              % bg if bg else "none"))
    what_if = "" if opts.flush_delay is None else " [what-if: flush delay %g s]" % opts.flush_delay
    print("summary: wake REGISTER -> INVITE p50 %.2f ms, p99 %.2f ms (targets <= %.0f / <= %.0f); "
          "REGISTER alone -> 200 p50 %.2f ms, p99 %.2f ms; median of %d runs of %d%s"
          % (p50, p99, TARGET_P50_MS, TARGET_P99_MS, b50, b99, len(runs), opts.count, what_if))
    if opts.json:
        Path(opts.json).write_text(json.dumps({"machine": machine(), "options": vars(opts),
                                               "runs": runs}, indent=2))
    return 0 if p50 <= TARGET_P50_MS and p99 <= TARGET_P99_MS else 1


if __name__ == "__main__":
    sys.exit(main())
