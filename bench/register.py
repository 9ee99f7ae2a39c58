"""Authenticated REGISTERs per second, with persistence, against the running service.

The service is started as users start it (``twistd -n b2bua --config FILE``,
through ``tests.support``) on a loopback port with a file-backed SQLite
database.  SIPp then plays ``--users`` phones from an injection file, each one
``REGISTER -> 401 -> REGISTER with digest -> 200`` carrying ``X-MPUSH``, so
every registration costs two transactions, one digest check and one durable
binding write (the 200 is only sent once the write has committed).

The load is closed-loop: ``--limit`` registrations in flight, a new one started
as soon as one ends (``--rate`` is only a ceiling), so an overloaded service is
not buried in SIPp retransmissions.  A run is bounded by ``--count``
registrations and ``--seconds`` of wall time.  The figure reported is the
median of ``--runs`` runs of successful registrations / elapsed seconds; the
exit status is 0 when it reaches the 2,000/s target under the interpreter
running this script.  Run it on an idle machine: SIPp takes about a third of
one core.

The interpreter matters: ``--python PATH`` (repeatable) also starts the
service under another Python (a venv's ``bin/python`` with this package
installed, e.g. ``/usr/bin/python3 -m venv V && V/bin/pip install -e .``), and
the runs alternate between the services, so each figure is measured under the
same machine load as the others.

    python bench/register.py                      # 3 runs of 6000
    python bench/register.py --limit 100 --count 9000 --json
    python bench/register.py --runs 5 --python /tmp/sysvenv/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from common import cpu_seconds, pinned, reference_loop_us  # noqa: E402
from tests.support import (  # noqa: E402
    RunningService,
    free_port,
    require_sipp,
    write_config,
)

TARGET = 2000.0
SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="bench: authenticated REGISTER">
  <send retrans="500">
    <![CDATA[

      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:[field0]@[remote_ip]>;tag=[pid]SIPpTag[call_number]
      To: <sip:[field0]@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:[field0]@[local_ip]:[local_port]>
      Max-Forwards: 70
      Expires: 3600
      X-MPUSH: i:com.example.softphone:bench-token-[field0]
      Content-Length: 0

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="401" auth="true"/>
  <send retrans="500">
    <![CDATA[

      REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      From: <sip:[field0]@[remote_ip]>;tag=[pid]SIPpTag[call_number]
      To: <sip:[field0]@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 2 REGISTER
      Contact: <sip:[field0]@[local_ip]:[local_port]>
      [field1]
      Max-Forwards: 70
      Expires: 3600
      X-MPUSH: i:com.example.softphone:bench-token-[field0]
      Content-Length: 0

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="200"/>
</scenario>
"""


def user_name(i: int) -> str:
    return "%d" % (100000 + i)


def prepare(workdir: Path, users: int) -> RunningService:
    """Config with ``users`` users (created at start), scenario and injection file."""
    extra = "".join('[[users]]\nname = "%s"\npassword = "pw%s"\n\n' % (user_name(i), user_name(i))
                    for i in range(users))
    port = free_port()
    config = write_config(workdir, port, extra=extra)
    (workdir / "register_bench.xml").write_text(SCENARIO)
    # SIPp 3.6 expands an [authentication ...] keyword held in an injection field,
    # not injection fields inside the keyword's own parameters.
    rows = ["SEQUENTIAL"] + ["%s;[authentication username=%s password=pw%s]"
                             % (user_name(i), user_name(i), user_name(i)) for i in range(users)]
    (workdir / "users.csv").write_text("\n".join(rows) + "\n")
    return RunningService(workdir=workdir, config_path=config, port=port)


def one_run(svc: RunningService, count: int, rate: int, limit: int, seconds: float,
            sipp_cpu: int | None) -> dict:
    sipp = require_sipp()
    local = free_port()
    args = [*pinned(sipp_cpu, [sipp]), "-sf", "register_bench.xml", "-inf", "users.csv", "-i", "127.0.0.1",
            "-p", str(local), "-m", str(count), "-r", str(rate), "-rp", "1000", "-l", str(limit),
            "-nostdin", "-timeout", "%ds" % int(seconds), "-recv_timeout", "5000",
            "-max_recv_loops", "10000", "-max_sched_loops", "10000",
            "127.0.0.1:%d" % svc.port]
    assert svc.process is not None
    cpu_before = cpu_seconds(svc.process.pid)
    began = time.monotonic()
    proc = subprocess.run(args, cwd=svc.workdir, capture_output=True, text=True,
                          timeout=seconds + 30)
    elapsed = time.monotonic() - began
    cpu = cpu_seconds(svc.process.pid) - cpu_before
    ok = _counter(proc.stdout, "Successful call")
    failed = _counter(proc.stdout, "Failed call")
    return {"registrations": ok, "failed": failed, "seconds": round(elapsed, 3),
            "per_second": round(ok / elapsed, 1) if elapsed else 0.0,
            "cpu_ms_per_registration": round(cpu * 1000 / ok, 3) if ok else None,
            "sipp_rc": proc.returncode}


def _counter(screen: str, name: str) -> int:
    found = re.findall(r"%s\s*\|\s*\d+\s*\|\s*(\d+)" % re.escape(name), screen)
    return int(found[-1]) if found else 0


def interpreter(python: str) -> dict:
    """Version and configure options of ``python``, and the twistd next to it."""
    probe = ("import json, platform, sys, sysconfig; print(json.dumps({'version': "
             "platform.python_version(), 'executable': sys.executable, 'config': "
             "sysconfig.get_config_var('CONFIG_ARGS') or ''}))")
    info = json.loads(subprocess.run([python, "-c", probe], capture_output=True, text=True,
                                     check=True, timeout=30).stdout)
    info["twistd"] = str(Path(python).parent / "twistd") if python != sys.executable else ""
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--count", type=int, default=6000, help="registrations per run")
    parser.add_argument("--users", type=int, default=1000, help="distinct phones")
    parser.add_argument("--rate", type=int, default=10000,
                        help="offered registrations/s (a ceiling: --limit paces the run)")
    parser.add_argument("--limit", type=int, default=50, help="registrations in flight")
    parser.add_argument("--seconds", type=float, default=60, help="time bound per run")
    parser.add_argument("--python", action="append", default=[],
                        help="also run the service under this interpreter (repeatable)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--cpu", type=int, default=0, help="core the service is pinned to")
    parser.add_argument("--sipp-cpu", type=int, default=1, help="core SIPp is pinned to")
    parser.add_argument("--no-pin", action="store_true", help="pin nothing")
    opts = parser.parse_args()
    pythons = [interpreter(sys.executable)] + [interpreter(p) for p in opts.python]
    for python in pythons:
        if python["twistd"] and not Path(python["twistd"]).exists():
            parser.error("no twistd next to %s: install this package there" % python["executable"])
    results: list[dict] = []
    reference = [reference_loop_us()]
    with tempfile.TemporaryDirectory(prefix="bench-register-") as tmp:
        services = []
        try:
            for i, python in enumerate(pythons):
                workdir = Path(tmp) / str(i)
                workdir.mkdir()
                svc = prepare(workdir, opts.users)
                svc.twistd = python["twistd"]
                services.append(svc)
                svc.start(timeout=60)
                assert svc.process is not None
                if not opts.no_pin:
                    os.sched_setaffinity(svc.process.pid, {opts.cpu})
            runs: list[list[dict]] = [[] for _ in pythons]
            for _ in range(opts.runs):   # alternate: each service sees the same load
                for i, svc in enumerate(services):
                    runs[i].append(one_run(svc, opts.count, opts.rate, opts.limit, opts.seconds,
                                           None if opts.no_pin else opts.sipp_cpu))
            for python, svc, its_runs in zip(pythons, services, runs):
                durable = svc.admin("bindings", "--json")
                results.append({
                    "python": python["version"], "executable": python["executable"],
                    "configure": python["config"], "runs": its_runs,
                    "median_per_second": statistics.median(r["per_second"] for r in its_runs),
                    "median_cpu_ms_per_registration": statistics.median(
                        r["cpu_ms_per_registration"] or 0.0 for r in its_runs),
                    "bindings_stored": (len(json.loads(durable.stdout))
                                        if durable.returncode == 0 else None)})
        finally:
            for svc in services:
                svc.stop()
    reference.append(reference_loop_us())
    report = {"benchmark": "authenticated REGISTER with persistence", "results": results,
              "target_per_second": TARGET, "users": opts.users,
              "reference_loop_us": [round(r, 1) for r in reference]}
    if opts.json:
        print(json.dumps(report, indent=2))
    else:
        for result in results:
            print("python %s (%s):" % (result["python"], result["executable"]))
            for i, run in enumerate(result["runs"], 1):
                print("  run %d: %d ok, %d failed in %ss -> %s/s, service CPU %s ms/registration"
                      % (i, run["registrations"], run["failed"], run["seconds"],
                         run["per_second"], run["cpu_ms_per_registration"]))
            print("  median: %.1f authenticated REGISTERs/s (target >= %.0f), service CPU %.3f ms"
                  " per registration; bindings stored: %s" % (
                      result["median_per_second"], TARGET,
                      result["median_cpu_ms_per_registration"], result["bindings_stored"]))
        print("sum(range(1000)) took %.1f us before the runs, %.1f us after (python %s)"
              % (reference[0], reference[1], pythons[0]["version"]))
    return 0 if results[0]["median_per_second"] >= TARGET else 1   # the default interpreter


if __name__ == "__main__":
    sys.exit(main())
