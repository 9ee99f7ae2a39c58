"""Pushes per second over one APNs connection and over one FCM connection, against the fakes.

The fake runs in its own process (so the client's CPU is measured alone); the client sends
`--count` pushes at once per run (each to its own device token, for its own call id, built
by the notifier as the call layer does), `--runs` times, and the median run is reported
with the client's CPU per push (payload building included). With h2load installed (`apt-get install nghttp2-client`) the fake's
own ceiling is measured too, with the same requests, so the two figures can be compared.

FCM is measured in the same run (`--fcm`, on by default): the FCM client over one HTTP/2
connection, and for the transport choice Twisted's HTTP/1.1 Agent with a persistent pool
(`--agent-connections`, 1 = one persistent connection, as the issue asks) against the same
fake's HTTP/1.1 port, with the same messages.

    python bench/push.py [--count 5000] [--runs 5] [--max-streams 1000] [--no-fcm] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Generator

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from twisted.internet import defer  # noqa: E402
from twisted.internet import reactor as _reactor  # noqa: E402

from b2bua.push import (  # noqa: E402
    ApnsNotifier,
    ApnsTimings,
    CallFacts,
    PushTarget,
    apns_client_from_settings,
    build_voip_push,
)
from b2bua.push.fcm_notifier import FcmNotifier, fcm_call_data, fcm_client_from_settings  # noqa: E402
from b2bua.push.jwt_token import ProviderToken  # noqa: E402
from tests.fake_apns import FakePki, make_pki  # noqa: E402

reactor: Any = _reactor
TOKEN = "a1" * 32
FACTS = CallFacts("bench-call-0001@10.0.0.1", "1234", "John Smith", "9876")


def cpu_seconds(pid: int) -> float:
    """User+system CPU of another process, from /proc."""
    fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_fake(pki: FakePki) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_apns", "--pki-dir", str(pki.directory), "--no-h2-validation"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    return proc, int(json.loads(line)["port"])


@defer.inlineCallbacks
def client_runs(pki: FakePki, port: int, fake_pid: int, count: int, runs: int,
                max_streams: int) -> Generator[Any, Any, list[dict[str, float]]]:
    client = apns_client_from_settings(
        enabled=True, auth="token", key_file=str(pki.key_file), key_id=pki.key_id,
        team_id=pki.team_id, certificate="", endpoint="https://127.0.0.1:%d" % port,
        ca_file=str(pki.ca_file), reactor=reactor, clock=reactor,
        timings=ApnsTimings(push_timeout=60.0, max_streams=max_streams),
    )
    assert client is not None
    notifier = ApnsNotifier(client)

    def one(n: int) -> Any:  # a distinct device and call each time, as in real traffic
        facts = CallFacts("%08x-bench@10.0.0.1" % n, "1234", "John Smith", "9876")
        return notifier.notify_incoming_call(PushTarget("i", "com.mycompany.myapp", "%064x" % n), facts)

    results = yield from _timed_runs(one, count, runs, fake_pid)
    yield client.stopService()
    return results


def start_fake_fcm(pki: FakePki) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fake_fcm", "--pki-dir", str(pki.directory), "--no-h2-validation"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())


def _timed_runs(one: Any, count: int, runs: int, fake_pid: int) -> Generator[Any, Any, list[dict[str, float]]]:
    """`runs` bursts of `count` pushes (`one(n)` sends push n); a figure per burst."""
    yield defer.gatherResults([one(n) for n in range(200)])  # warm up
    results = []
    for run in range(runs):
        base = (run + 1) * 1_000_000
        cpu0, fake0, wall0 = time.process_time(), cpu_seconds(fake_pid), time.perf_counter()
        outcomes = yield defer.gatherResults([one(base + n) for n in range(count)])
        wall = time.perf_counter() - wall0
        cpu, fake_cpu = time.process_time() - cpu0, cpu_seconds(fake_pid) - fake0
        delivered = sum(1 for o in outcomes if o is True or getattr(o, "delivered", False))
        results.append({"pushes": count, "delivered": delivered, "seconds": wall,
                        "pushes_per_s": count / wall, "client_cpu_us_per_push": cpu / count * 1e6,
                        "fake_cpu_us_per_push": fake_cpu / count * 1e6})
    return results


@defer.inlineCallbacks
def fcm_runs(pki: FakePki, fake: dict[str, Any], fake_pid: int, count: int, runs: int,
             max_streams: int) -> Generator[Any, Any, list[dict[str, float]]]:
    """The FCM client (h2, one connection), as the call layer pushes."""
    client = fcm_client_from_settings(
        enabled=True, service_account=fake["service_account"], endpoint="https://127.0.0.1:%d" % fake["port"],
        ca_file=str(pki.ca_file), reactor=reactor, clock=reactor,
        timings=ApnsTimings(push_timeout=60.0, max_streams=max_streams))
    assert client is not None
    notifier = FcmNotifier(client, 30)

    def one(n: int) -> Any:
        facts = CallFacts("%08x-bench@10.0.0.1" % n, "1234", "John Smith", "9876")
        return notifier.notify_incoming_call(PushTarget("a", "com.mycompany.myapp", "fcm-%064x" % n), facts)

    results = yield from _timed_runs(one, count, runs, fake_pid)
    yield client.stopService()
    return results


@defer.inlineCallbacks
def agent_runs(pki: FakePki, fake: dict[str, Any], fake_pid: int, count: int, runs: int,
               connections: int) -> Generator[Any, Any, list[dict[str, float]]]:
    """The alternative transport: Twisted's HTTP/1.1 Agent, persistent pool of `connections`."""
    from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, HTTPConnectionPool, readBody
    from twisted.web.http_headers import Headers
    from twisted.web.client import FileBodyProducer
    from io import BytesIO
    from b2bua.push.notifier import trust_root

    tokens = yield fcm_client_from_settings(
        enabled=True, service_account=fake["service_account"], endpoint="https://127.0.0.1:1",
        ca_file=str(pki.ca_file), reactor=reactor, clock=reactor).tokens.refresh()
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = connections
    agent = Agent(reactor, BrowserLikePolicyForHTTPS(trust_root(Path("."), str(pki.ca_file))), pool=pool)
    url = ("https://127.0.0.1:%d/v1/projects/demo-project/messages:send" % fake["http1_port"]).encode()
    headers = Headers({b"authorization": [tokens.encode()], b"content-type": [b"application/json"]})
    semaphore = defer.DeferredSemaphore(connections)  # more at once would open more connections

    @defer.inlineCallbacks
    def post(n: int) -> Generator[Any, Any, bool]:
        facts = CallFacts("%08x-bench@10.0.0.1" % n, "1234", "John Smith", "9876")
        body = json.dumps({"message": {"token": "fcm-%064x" % n, "data": fcm_call_data(facts),
                                       "android": {"priority": "high", "ttl": "30s"}}}).encode()
        response = yield agent.request(b"POST", url, headers, FileBodyProducer(BytesIO(body)))
        yield readBody(response)
        return bool(response.code == 200)

    results = yield from _timed_runs(lambda n: semaphore.run(post, n), count, runs, fake_pid)
    yield pool.closeCachedConnections()
    return results


def h2load(pki: FakePki, port: int, count: int, streams: int) -> dict[str, float] | None:
    """The fake's ceiling: nghttp2's load generator, same request, one connection."""
    exe = shutil.which("h2load")
    if exe is None:
        return None
    authorization = ProviderToken(pki.key_file.read_bytes(), pki.key_id, pki.team_id, reactor).authorization()
    headers, body = build_voip_push(FACTS, "com.mycompany.myapp")
    with tempfile.NamedTemporaryFile(suffix=".json") as data:
        data.write(body)
        data.flush()
        command = [exe, "-n", str(count), "-c", "1", "-m", str(streams), "-d", data.name,
                   "-H", "authorization: " + authorization]
        for name, value in headers.items():
            command += ["-H", "%s: %s" % (name, value)]
        command.append("https://127.0.0.1:%d/3/device/%s" % (port, TOKEN))
        output = subprocess.run(command, capture_output=True, text=True, timeout=300).stdout
    rate = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", output)
    ok = re.search(r"status codes: (\d+) 2xx", output)
    if not rate:
        return {"error": output[-500:]}  # type: ignore[dict-item]
    return {"requests_per_s": float(rate.group(1)), "ok": float(ok.group(1)) if ok else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000, help="pushes per run")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-streams", type=int, default=1000, help="client stream cap")
    parser.add_argument("--h2load-streams", type=int, default=100, help="h2load -m")
    parser.add_argument("--no-fcm", dest="fcm", action="store_false", help="APNs only")
    parser.add_argument("--agent-connections", type=int, default=1,
                        help="HTTP/1.1 Agent pool size for the FCM transport comparison")
    parser.add_argument("--agent-count", type=int, default=1000, help="pushes per Agent run")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        pki = make_pki(directory)
        fake, port = start_fake(pki)
        fcm_fake, fcm_info = start_fake_fcm(pki) if args.fcm else (None, {})
        report: dict[str, Any] = {}
        try:
            @defer.inlineCallbacks
            def everything() -> Generator[Any, Any, None]:
                report["runs"] = yield client_runs(pki, port, fake.pid, args.count, args.runs, args.max_streams)
                if fcm_fake is not None:
                    report["fcm_runs"] = yield fcm_runs(pki, fcm_info, fcm_fake.pid, args.count, args.runs,
                                                        args.max_streams)
                    report["agent_runs"] = yield agent_runs(pki, fcm_info, fcm_fake.pid, args.agent_count,
                                                            args.runs, args.agent_connections)

            def failed(failure: Any) -> None:
                report["error"] = str(failure)

            reactor.callWhenRunning(lambda: everything().addErrback(failed).addBoth(lambda _: reactor.stop()))
            reactor.run()
            report["h2load"] = h2load(pki, port, args.count * 4, args.h2load_streams)
        finally:
            for proc in (fake, fcm_fake):
                if proc is not None:
                    proc.terminate()
                    proc.wait(10)
    for key in ("runs", "fcm_runs", "agent_runs"):
        if report.get(key):
            ordered = sorted(report[key], key=lambda r: r["pushes_per_s"])
            report[key.replace("runs", "median")] = ordered[len(ordered) // 2]
    runs = report.get("runs") or []
    if args.json:
        print(json.dumps(report, indent=2))
        return
    if "error" in report:
        print("error:", report["error"])
        return
    for run in runs:
        print("run: %(pushes)d pushes, %(delivered)d delivered, %(seconds).2f s, %(pushes_per_s).0f pushes/s, "
              "client CPU %(client_cpu_us_per_push).0f us/push, fake CPU %(fake_cpu_us_per_push).0f us/push" % run)
    median = report["median"]
    print("median: %.0f pushes/s over one connection; client CPU %.0f us per push "
          "(a client-only ceiling of ~%.0f pushes/s per core; target >= 2500 pushes/s)"
          % (median["pushes_per_s"], median["client_cpu_us_per_push"],
             1e6 / median["client_cpu_us_per_push"]))
    for key, what in (("fcm_median", "FCM client, h2, one connection"),
                      ("agent_median", "FCM over Twisted's HTTP/1.1 Agent, persistent pool of %d"
                       % args.agent_connections)):
        if key in report:
            m = report[key]
            print("%s: median %.0f pushes/s, %d/%d delivered, client CPU %.0f us/push"
                  % (what, m["pushes_per_s"], m["delivered"], m["pushes"], m["client_cpu_us_per_push"]))
    ceiling = report.get("h2load")
    if ceiling is None:
        print("h2load not installed: fake ceiling not measured (apt-get install nghttp2-client)")
    elif "requests_per_s" in ceiling:
        print("fake APNs ceiling (h2load, 1 connection, -m %d): %.0f requests/s, %d answered 200"
              % (args.h2load_streams, ceiling["requests_per_s"], ceiling["ok"]))
    else:
        print("h2load failed:", ceiling)


if __name__ == "__main__":
    main()
