"""Registrations/s and calls/s: one node on SQLite, one node on Redis, two nodes behind
Kamailio's dispatcher (sharing Redis), in the same run.

All services are started as users start them and stay up for the whole run; the runs
alternate between the three setups (sqlite, redis, kamailio+2), so each figure is taken
under the same machine load as the others.  Registrations: ``bench/register.py``'s
closed-loop authenticated REGISTER load (``--limit`` in flight).  Calls: SIPp's built-in
UAC at ``--call-rate`` for ``--calls`` calls to a SIPp UAS behind a static route; the
figure is completed calls / elapsed seconds and the failed count.

On a 2-core machine two nodes cannot show scale-out (the nodes, Kamailio, Redis and SIPp
share the cores); what this shows is the cost of the shared store and of the hop.

    python bench/cluster.py                 # 3 runs
    python bench/cluster.py --runs 1 --count 3000 --calls 1500 --json
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from common import TRUNK, run_uac, start_uas  # noqa: E402  (the path is set just above)
from register import one_run, prepare  # noqa: E402

from tests.redis_server import RedisServer  # noqa: E402
from tests.support import RunningService, free_port, options_ping  # noqa: E402

SETUPS = ("sqlite", "redis", "kamailio+2")


def node(workdir: Path, users: int, uas_port: int, url: str = "", name: str = "",
         cpu: int | None = None) -> RunningService:
    workdir.mkdir(parents=True, exist_ok=True)
    svc = prepare(workdir, users)
    text = svc.config_path.read_text()
    if url:
        text = text.replace('path = "b2bua.sqlite3"', f'path = "b2bua.sqlite3"\nurl = "{url}"', 1)
        text += f'\n[cluster]\nnode = "{name}"\n'
    text = text.replace('[[router]]\nplugin = "local_users"\n',
                        f'[[router]]\nplugin = "static"\ntarget = "sip:127.0.0.1:{uas_port}"\n')
    svc.config_path.write_text(text + "\n" + TRUNK)
    svc.start(timeout=120)
    if cpu is not None:
        import os
        assert svc.process is not None
        os.sched_setaffinity(svc.process.pid, {cpu})
    return svc


def kamailio(workdir: Path, nodes: list[RunningService]) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("kamailio") or "/usr/sbin/kamailio"
    port = free_port()
    listing = workdir / "dispatcher.list"
    listing.write_text("".join(f"1 sip:127.0.0.1:{n.port} 0 0 duid=n{i};maxload=0\n"
                               for i, n in enumerate(nodes)))
    proc = subprocess.Popen(
        [binary, "-DD", "-E", "-m", "256", "-M", "16",
         "-f", str(REPO / "etc" / "kamailio" / "dispatcher.cfg"),
         "-A", f"LISTEN=udp:127.0.0.1:{port}", "-A", f'DS_LIST="{listing}"',
         "-A", "PING_INTERVAL=5", "-Y", str(workdir), "-w", str(workdir),
         "-P", str(workdir / "kamailio.pid")],
        stdout=(workdir / "kamailio.log").open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while not options_ping(port, timeout=0.5):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("kamailio did not start: " +
                               (workdir / "kamailio.log").read_text(errors="replace")[-2000:])
    return proc, port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--count", type=int, default=6000, help="registrations per run")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=50, help="registrations in flight")
    parser.add_argument("--calls", type=int, default=3000, help="calls per run")
    parser.add_argument("--call-rate", type=float, default=400, help="offered calls/s")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()
    results: dict[str, list[dict[str, Any]]] = {s: [] for s in SETUPS}
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        root = Path(tmp)
        redis = RedisServer().start()
        started: list[Any] = []
        try:
            targets: dict[str, Any] = {}
            uas_ports = {s: free_port() for s in SETUPS}
            for setup in SETUPS:
                (root / setup).mkdir()
            a = node(root / "sqlite" / "n", opts.users, uas_ports["sqlite"])
            started.append(a)
            targets["sqlite"] = (a, a.port)
            r = node(root / "redis" / "n", opts.users, uas_ports["redis"],
                     redis.url.replace("/0", "/1"), "r")
            started.append(r)
            targets["redis"] = (r, r.port)
            k1 = node(root / "kamailio+2" / "a", opts.users, uas_ports["kamailio+2"],
                      redis.url.replace("/0", "/2"), "a")
            k2 = node(root / "kamailio+2" / "b", opts.users, uas_ports["kamailio+2"],
                      redis.url.replace("/0", "/2"), "b")
            started += [k1, k2]
            kam, kport = kamailio(root / "kamailio+2", [k1, k2])
            started.append(SimpleNamespace(stop=lambda: (kam.terminate(), kam.wait(10))))
            targets["kamailio+2"] = (k1, kport)
            for _ in range(opts.runs):
                for setup in SETUPS:
                    svc, port = targets[setup]
                    shim = SimpleNamespace(port=port, workdir=svc.workdir, process=svc.process)
                    reg = one_run(shim, opts.count, 10000, opts.limit, opts.seconds,  # type: ignore[arg-type]
                                  None)
                    workdir = root / setup
                    uas = start_uas(workdir, uas_ports[setup], None, opts.seconds + 60, cpu=None)
                    try:
                        calls = run_uac(workdir, port, opts.calls, opts.call_rate, cpu=None,
                                        timeout_s=opts.seconds + 30)
                    finally:
                        uas.stop()
                    results[setup].append({
                        "registrations_per_second": reg["per_second"],
                        "registrations_failed": reg["failed"],
                        "calls_ok": calls.ok, "calls_failed": calls.failed,
                        "calls_per_second": round(calls.ok / calls.seconds, 1)
                        if calls.seconds else 0.0})
        finally:
            for child in reversed(started):
                child.stop()
            redis.close()
    summary = {setup: {
        "median_registrations_per_second": statistics.median(
            r["registrations_per_second"] for r in runs),
        "median_calls_per_second": statistics.median(r["calls_per_second"] for r in runs),
        "runs": runs} for setup, runs in results.items()}
    if opts.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{'setup':12s} {'REGISTER/s':>11s} {'calls/s':>9s}   runs (reg/s, calls ok/failed)")
        for setup, s in summary.items():
            runs = ", ".join(f"{r['registrations_per_second']}/{r['calls_ok']}/{r['calls_failed']}"
                             for r in s["runs"])
            print(f"{setup:12s} {s['median_registrations_per_second']:11.1f} "
                  f"{s['median_calls_per_second']:9.1f}   {runs}")
        print(f"offered: {opts.count} registrations ({opts.limit} in flight), "
              f"{opts.calls} calls at {opts.call_rate}/s per run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
