"""Parse (and parse + serialise) throughput of the SIP message layer.

Run: python bench/parse.py [--seconds 0.5] [--runs 7] [--sippy PYTHON]
Prints messages per second (median and best of the runs) for a typical
INVITE, a 200 OK and a REGISTER, parsed alone and parsed then serialised;
the target is >= 50,000 INVITE parses/s on one core. When sippy is
installed (default: /tmp/sippy-venv, or $SIPPY_VENV) its parser is timed on
the same messages in the same run, in its own interpreter. The last line
times a plain Python loop, to compare machines. Exit 0 when the target is
met, 1 when not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from b2bua.sip.message import parse_message  # noqa: E402
from common import reference_loop_us  # noqa: E402

SDP = (b"v=0\r\no=alice 2890844526 2890844526 IN IP4 192.0.2.101\r\ns=-\r\n"
       b"c=IN IP4 192.0.2.101\r\nt=0 0\r\nm=audio 49172 RTP/AVP 0 8 101\r\n"
       b"a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n")

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Via: SIP/2.0/TCP 198.51.100.7:5060;branch=z9hG4bKnashds8;received=198.51.100.7\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b"From: \"Alice\" <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@192.0.2.10:5060;transport=udp>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, NOTIFY\r\n"
    b"Supported: replaces, timer\r\n"
    b"User-Agent: ExamplePhone/1.0\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP)

OK200 = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;received=192.0.2.10;rport=5060\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n"
    b"From: \"Alice\" <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:bob@192.0.2.4>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP)

REGISTER = (
    b"REGISTER sip:registrar.biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/TLS 192.0.2.201:51234;branch=z9hG4bKnashds7;rport;alias\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: Bob <sip:bob@biloxi.example.com>\r\n"
    b"From: Bob <sip:bob@biloxi.example.com>;tag=456248\r\n"
    b"Call-ID: 843817637684230@998sdasdh09\r\n"
    b"CSeq: 1826 REGISTER\r\n"
    b"Contact: <sip:bob@192.0.2.201:51234;transport=tls;pn-provider=apns;"
    b"pn-prid=00fc13adff78512;pn-param=ABCD1234.com.example.voip>;expires=600;"
    b"+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\"\r\n"
    b"Expires: 600\r\n"
    b"Content-Length: 0\r\n\r\n")


def rate(data: bytes, seconds: float, serialise: bool) -> float:
    """Parse (+ serialise) ``data`` in a loop for about ``seconds``; ops/s."""
    n = 0
    batch = 500
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        if serialise:
            for _ in range(batch):
                parse_message(data).to_bytes()
        else:
            for _ in range(batch):
                parse_message(data)
        n += batch
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


#: run in sippy's interpreter: messages on stdin, "name parse/s both/s" lines out
SIPPY_SCRIPT = """
import json, statistics, sys, time
from sippy.SipRequest import SipRequest
from sippy.SipResponse import SipResponse
seconds, runs, msgs = json.load(sys.stdin)
def rate(cls, text, serialise):
    n, start = 0, time.perf_counter()
    while True:
        for _ in range(200):
            m = cls(buf=text)
            if serialise:
                str(m)
        n += 200
        now = time.perf_counter()
        if now >= start + seconds:
            return n / (now - start)
for name, text in msgs:
    cls = SipResponse if text.startswith("SIP/") else SipRequest
    rate(cls, text, True)
    print(name, *(statistics.median(rate(cls, text, s) for _ in range(runs))
                  for s in (False, True)))
"""


def sippy_rates(python: str, messages: list[tuple[str, bytes]], seconds: float,
                runs: int) -> dict[str, tuple[float, float]]:
    """sippy's (parse/s, parse+serialise/s) per message, or {} without sippy."""
    if not os.path.exists(python):
        return {}
    payload = json.dumps([seconds, runs, [(n, d.decode("latin-1")) for n, d in messages]])
    done = subprocess.run([python, "-c", SIPPY_SCRIPT], input=payload, capture_output=True,
                          text=True, timeout=600)
    if done.returncode != 0:
        print("sippy: " + (done.stderr.strip().splitlines() or ["failed"])[-1])
        return {}
    out = {}
    for line in done.stdout.splitlines():
        name, parse, both = line.rsplit(" ", 2)
        out[name] = (float(parse), float(both))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.5, help="length of one run")
    parser.add_argument("--runs", type=int, default=7, help="runs per message (median)")
    parser.add_argument("--sippy", default=os.path.join(
        os.environ.get("SIPPY_VENV", "/tmp/sippy-venv"), "bin", "python"),
        help="python of a venv with sippy installed (skipped when missing)")
    args = parser.parse_args()
    messages = [("INVITE", INVITE), ("200 OK", OK200), ("REGISTER", REGISTER)]
    for _, data in messages:
        rate(data, 0.1, True)  # warm-up
    # Rounds alternate ours and sippy's, so a slow spell of the host hits both alike.
    our_runs: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n, _ in messages}
    their_runs: dict[str, tuple[list[float], list[float]]] = {n: ([], []) for n, _ in messages}
    for _ in range(args.runs):
        for name, data in messages:
            for column, serialise in ((0, False), (1, True)):
                our_runs[name][column].append(rate(data, args.seconds, serialise))
        for name, (parse, both) in sippy_rates(args.sippy, messages, args.seconds, 1).items():
            their_runs[name][0].append(parse)
            their_runs[name][1].append(both)
    ours = {name: (statistics.median(p), statistics.median(b)) for name, (p, b) in our_runs.items()}
    sippy = {name: (statistics.median(p), statistics.median(b))
             for name, (p, b) in their_runs.items() if p}
    print("%-10s %6s %12s %12s %12s %12s" % (
        "message", "bytes", "parse/s", "sippy", "+serialise/s", "sippy"))
    for name, data in messages:
        theirs = sippy.get(name)
        print("%-10s %6d %12s %12s %12s %12s" % (
            name, len(data), format(int(ours[name][0]), ","),
            format(int(theirs[0]), ",") if theirs else "-",
            format(int(ours[name][1]), ","), format(int(theirs[1]), ",") if theirs else "-"))
    print("python %s; sum(range(1000)) takes %.1f us here" % (
        platform.python_version(), reference_loop_us()))
    invite = ours["INVITE"][0]
    versus = ""
    if "INVITE" in sippy:   # the ratio: median over rounds of ours / sippy's in that round
        ratios = [a / b for a, b in zip(our_runs["INVITE"][0], their_runs["INVITE"][0])]
        versus = ", sippy %s/s (%.2fx, median of per-round ratios)" % (
            format(int(sippy["INVITE"][0]), ","), statistics.median(ratios))
    print("summary: INVITE parses %s/s (target >= 50,000)%s; median of %d runs" % (
        format(int(invite), ","), versus, args.runs))
    sys.exit(0 if invite >= 50_000 else 1)


if __name__ == "__main__":
    main()
