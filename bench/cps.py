"""Calls per second through the B2BUA on one core, against sippy's B2BUA in the same run.

    python bench/cps.py                  # 3 runs, both B2BUAs, memory test: < 10 minutes
    python bench/cps.py --quick          # one short run per rate, tiny memory test: a smoke check
    python bench/cps.py --runs 5 --rates 50,100,150,200,300 --no-sippy --json out.json

SIPp UAC -> B2BUA -> SIPp UAS on 127.0.0.1 (SIPp's built-in scenarios; the UAS Contact has
no ``;transport=UDP``, see ``common.uas_scenario``).  The B2BUA runs pinned to one core
(``--cpu``, taskset), both SIPps on another (``--sipp-cpu``).  Our service runs as users
start it (twistd, static route, a trunk that accepts 127.0.0.1 so no auth, SQLite on disk,
``--log-level`` info as shipped); sippy runs from its venv (``SIPPY_VENV``, default
/tmp/sippy-venv) as ``b2bua -f -s UAS -a 127.0.0.1 -A 0 -u`` with ``SIPLOG_BEND=none``.

A run ramps one fresh B2BUA through ``--rates``, ``--step-seconds`` of calls per step; a
step passes when < 0.1 % of its calls failed (calls SIPp aborted only because a 180 came
after the 200 are reported apart, see ``SippResult.failed_ratio``), retransmissions did not
grow through the step (``SippResult.retrans_growing``) and the INVITE->200 time at its end
stayed under ``--max-latency`` ms (a queue that grows without bound).  A failed step is
retried once (``--retries``) so one burst from a noisy neighbour does not end the ramp,
unless it failed both ways at once (growing retransmissions and a long INVITE->200: plain
overload).  The run's figure is its highest passing rate; runs after the first start two
rates below the best so far.  Runs alternate which B2BUA goes first, so the machine's noise
falls on both.  ``--variant`` adds what-if copies of ours to the same ramps.

CPU per call: utime+stime of the B2BUA (/proc/PID/stat, all threads) over a step / calls,
quoted at each run's highest passing step.  Memory per concurrent call: RSS with
``--mem-calls`` (1000, 3000) calls held ``--hold`` s each (the two B2BUAs in parallel, on
different cores), (RSS3000 - RSS1000) / (calls up at the second reading - at the first).
``--profile FILE`` profiles ours under load with py-spy instead (see ``profile``).

Prints the step table, the per-run and median figures, the memory table and a one-line
summary; exits 0 when all three targets are met, 1 when one is missed, 2 on error.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    Child, SippResult, cpu_seconds, current_calls, finish_uac, free_port, machine, median,
    rss_kb, run_uac, sippy_available, start_ours, start_sippy, start_uac, start_uas, table,
    uas_scenario, what_if_launcher,
)

TARGET_RATIO = 3.0
TARGET_CPU_MS = 1.5
TARGET_KB = 12.0
DEFAULT_RATES = "50,75,100,125,150,175,200,250,300,350,400,500,600,800,1000,1200,1500"


@dataclass
class Step:
    """One rate tried on one B2BUA."""

    run: int
    server: str
    rate: int
    calls: int
    ok: int
    failed: int
    late_1xx: int
    retrans: int
    growing: bool
    latency_end_ms: float
    cpu_ms_per_call: float
    cpu_load: float
    attempt: int
    passed: bool


Starter = Callable[[Path, int, int | None], Child]


def starters(opts: argparse.Namespace) -> dict[str, Starter]:
    """The B2BUAs to measure, by name: ``start(workdir, uas_port, cpu)``."""
    found: dict[str, Starter] = {
        "ours": lambda wd, port, cpu: start_ours(wd, port, cpu=cpu, log_level=opts.log_level)}
    if not opts.no_sippy and sippy_available():
        found["sippy"] = lambda wd, port, cpu: start_sippy(wd, port, cpu=cpu)
    # What-if variants of ours, ramped in the same run (nothing in b2bua/ is changed):
    for variant in opts.variant or ():
        if variant == "warn":           # the cost of our per-call log lines
            found["ours-warn"] = lambda wd, port, cpu: start_ours(wd, port, cpu=cpu,
                                                                  log_level="warn")
        elif variant == "rcvbuf":       # a 4 MiB receive buffer on the SIP UDP socket
            found["ours-rcvbuf"] = lambda wd, port, cpu: start_ours(
                wd, port, cpu=cpu, log_level=opts.log_level,
                python=what_if_launcher(rcvbuf=4 << 20))
    return found


def settle(pid: int, limit: float = 20.0) -> None:
    """Wait until the B2BUA is idle (< 5 % CPU over 0.5 s): the last step's backlog is gone."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        time.sleep(0.5)
        if cpu_seconds(pid) - before < 0.025:
            return


def one_step(server: Child, uas_port: int, workdir: Path, rate: int,
             opts: argparse.Namespace) -> tuple[SippResult, float, float]:
    """``rate`` calls/s for ``--step-seconds``; returns SIPp's figures, CPU s and wall s."""
    calls = max(1, int(rate * opts.step_seconds))
    bound = opts.step_seconds + opts.hold_ms / 1000 + 8     # a call retransmitted 3 times fits
    # No -m for the UAS: a late retransmission from the step before would count as one of
    # this step's calls and end it early.  It is stopped when the UAC is done.
    with start_uas(workdir, uas_port, None, bound + 30, cpu=opts.sipp_cpu):
        cpu0, wall0 = cpu_seconds(server.pid), time.monotonic()
        result = run_uac(workdir, server.port, calls, rate, opts.hold_ms, cpu=opts.sipp_cpu,
                         timeout_s=bound)
        cpu1, wall1 = cpu_seconds(server.pid), time.monotonic()
    return result, cpu1 - cpu0, wall1 - wall0


def ramp(name: str, start: Starter, run: int, rates: list[int], first: int, workdir: Path,
         opts: argparse.Namespace, steps: list[Step]) -> int:
    """Ramp one fresh B2BUA; return the highest passing rate (0 if none)."""
    workdir.mkdir(parents=True, exist_ok=True)
    uas_scenario(workdir)
    uas_port = free_port()
    best, index, going_down = 0, first, False
    with start(workdir / name, uas_port, opts.cpu) as server:
        while 0 <= index < len(rates):
            rate = rates[index]
            for attempt in range(1, opts.retries + 2):
                settle(server.pid)
                result, cpu, _ = one_step(server, uas_port, workdir, rate, opts)
                # load: the share of the core used while calls were being placed
                step = Step(run, name, rate, result.calls, result.ok, result.failed,
                            result.late_1xx, result.retransmissions, result.retrans_growing(),
                            round(result.latency_end_ms(), 1),
                            round(cpu / result.calls * 1000, 3),
                            round(cpu * rate / result.calls, 2), attempt, False)
                step.passed = (result.failed_ratio < 0.001 and not step.growing
                               and step.latency_end_ms <= opts.max_latency)
                steps.append(step)
                print(_step_line(step), flush=True)
                overloaded = step.growing and step.latency_end_ms > opts.max_latency
                if step.passed or overloaded or not server.alive():
                    break               # a clear overload is not retried: it would fail again
            if not server.alive():
                print(f"  {name} died", flush=True)
                break
            if step.passed:
                best = rate
                if going_down:
                    break
                index += 1
            elif best or index == 0:
                break
            else:
                going_down, index = True, index - 1
    return best


def _step_line(s: Step) -> str:
    late = f" ({s.late_1xx} only for a 180 after the 200)" if s.late_1xx else ""
    return (f"  run {s.run} {s.server:10} {s.rate:5d}/s: {s.ok}/{s.calls} ok, {s.failed} failed"
            f"{late}, {s.retrans} retrans{' (growing)' if s.growing else ''}, INVITE->200 at end "
            f"{s.latency_end_ms} ms, {s.cpu_ms_per_call} ms CPU/call, load {s.cpu_load}"
            f"{'' if s.passed else '  FAIL'}")


def memory(name: str, start: Starter, cpu: int | None, workdir: Path, opts: argparse.Namespace,
           out: dict[str, Any]) -> None:
    """RSS with ``--mem-calls`` calls held ``--hold`` s: first the small count, then more."""
    small, large = opts.mem_calls
    rate, hold = opts.mem_rate, opts.hold
    workdir.mkdir(parents=True, exist_ok=True)
    uas_scenario(workdir)
    uas_port = free_port()
    ramp1, ramp2 = small / rate, (large - small) / rate
    total = ramp1 + hold + ramp2 + hold
    try:
        with start(workdir / name, uas_port, cpu) as server, \
                start_uas(workdir, uas_port, None, total + 60, cpu=None):
            out["rss_idle_kb"] = rss_kb(server.pid)
            began = time.monotonic()
            first = start_uac(workdir, server.port, small, rate, int((total + 5) * 1000),
                              cpu=None, timeout_s=total + 60, name="hold1")
            time.sleep(max(0.0, began + ramp1 + hold - time.monotonic()))
            out["rss_small_kb"], out["calls_small"] = rss_kb(server.pid), current_calls(first)
            began2 = time.monotonic()
            second = start_uac(workdir, server.port, large - small, rate,
                               int((ramp2 + hold + 5) * 1000), cpu=None,
                               timeout_s=ramp2 + hold + 60, name="hold2")
            time.sleep(max(0.0, began2 + ramp2 + hold - time.monotonic()))
            out["rss_large_kb"] = rss_kb(server.pid)
            out["calls_large"] = current_calls(first) + current_calls(second)
            results = [finish_uac(second, large - small, ramp2 + hold + 60),
                       finish_uac(first, small, total + 60)]
            out["failed"] = sum(r.failed for r in results)
    except Exception as error:  # reported in the table, the other B2BUA's figures still count
        out["error"] = str(error)
        return
    # Per call actually up at the two samples (SIPp's CurrentCall), else the nominal counts.
    held = out["calls_large"] - out["calls_small"]
    held = held if held > 0.9 * (large - small) else large - small
    out["kb_per_call"] = round((out["rss_large_kb"] - out["rss_small_kb"]) / held, 2)


def profile(opts: argparse.Namespace) -> int:
    """Our B2BUA under ``--profile-rate`` calls/s, sampled by py-spy; print the top functions.

    py-spy (``pip install py-spy``) samples without pausing the process (--nonblocking) at
    1000 Hz; the raw (collapsed-stack) file is kept at ``--profile``.  Self time of a function
    is the share of samples in which it was the innermost frame (line numbers merged)."""
    import collections
    import re
    import shutil
    import subprocess

    spy = shutil.which("py-spy")
    if spy is None:
        print("py-spy is not installed (pip install py-spy)")
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="bench-cps-profile-"))
    uas_scenario(workdir)
    uas_port = free_port()
    seconds, rate = opts.profile_seconds, opts.profile_rate
    calls = int(rate * (seconds + 8))
    try:
        with start_ours(workdir / "ours", uas_port, cpu=opts.cpu, log_level=opts.log_level) \
                as server, start_uas(workdir, uas_port, None, seconds + 60, cpu=opts.sipp_cpu):
            uac = start_uac(workdir, server.port, calls, rate, cpu=opts.sipp_cpu,
                            timeout_s=seconds + 40)
            time.sleep(3)
            cpu0 = cpu_seconds(server.pid)
            command = [spy, "record", "--pid", str(server.pid), "-d", str(int(seconds)), "-r",
                       "1000", "--nonblocking", "-f", "raw", "-o", opts.profile]
            if opts.profile_idle:
                command.append("--idle")
            subprocess.run(command, capture_output=True, timeout=seconds + 30, check=True)
            cpu = cpu_seconds(server.pid) - cpu0
            result = finish_uac(uac, calls, seconds + 40)
    finally:
        if not opts.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in Path(opts.profile).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    print(f"profile: {rate} calls/s for {seconds:g} s, {result.ok}/{result.calls} calls ok, "
          f"{result.failed} failed; {cpu / (rate * seconds) * 1000:.2f} ms CPU/call "
          f"(with py-spy attached); {total} samples -> {opts.profile}")
    print(table([(i, "%.1f %%" % (100 * n / total), f)
                 for i, (f, n) in enumerate(own.most_common(opts.profile_top), 1)],
                ["#", "self", "function (file)"]))
    print()
    print(table([("%.1f %%" % (100 * n / total), f) for f, n in inclusive.most_common(200)
                 if "b2bua/" in f or "_logger.py" in f or "sqlite_utils" in f][:25],
                ["inclusive", "function (file)"]))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="1 run, 3 s steps, no retry, 100/300 calls held 5 s")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rates", default=DEFAULT_RATES, help="calls/s to ramp through")
    parser.add_argument("--step-seconds", type=float, default=8.0)
    parser.add_argument("--retries", type=int, default=1, help="retries of a failed step")
    parser.add_argument("--max-latency", type=float, default=200.0,
                        help="ms of INVITE->200 at a step's end above which it fails")
    parser.add_argument("--hold-ms", type=int, default=0, help="call length in the ramp")
    parser.add_argument("--cpu", type=int, default=0, help="core for the B2BUA")
    parser.add_argument("--sipp-cpu", type=int, default=1, help="core for SIPp")
    parser.add_argument("--log-level", default="info", help="our service's [log] level")
    parser.add_argument("--variant", action="append", choices=["warn", "rcvbuf"],
                        help="also ramp ours with [log] level warn, or with a 4 MiB SO_RCVBUF "
                             "(patched at start); repeatable")
    parser.add_argument("--no-sippy", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--mem-calls", default="1000,3000")
    parser.add_argument("--mem-rate", type=int, default=100, help="calls/s while filling")
    parser.add_argument("--hold", type=float, default=30.0, help="s the calls are held")
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    parser.add_argument("--profile", metavar="RAW_FILE",
                        help="instead: profile our B2BUA under load with py-spy")
    parser.add_argument("--profile-rate", type=int, default=100)
    parser.add_argument("--profile-seconds", type=float, default=20.0)
    parser.add_argument("--profile-top", type=int, default=15)
    parser.add_argument("--profile-idle", action="store_true",
                        help="count idle samples too (time blocked, e.g. in SQLite)")
    opts = parser.parse_args()
    if opts.profile:
        return profile(opts)
    if opts.quick:
        opts.runs, opts.step_seconds, opts.retries = 1, 3.0, 0
        if opts.mem_calls == "1000,3000":
            opts.mem_calls, opts.hold = "100,300", 5.0
    opts.mem_calls = tuple(int(x) for x in opts.mem_calls.split(","))
    rates = sorted(int(x) for x in opts.rates.split(","))
    servers = starters(opts)
    print("machine:", machine())
    if "sippy" not in servers and not opts.no_sippy:
        print("sippy not found in $SIPPY_VENV (python -m venv /tmp/sippy-venv && "
              "/tmp/sippy-venv/bin/pip install sippy): reporting ours alone")
    workroot = Path(tempfile.mkdtemp(prefix="bench-cps-"))
    steps: list[Step] = []
    best: dict[str, list[int]] = {name: [] for name in servers}
    began = time.monotonic()
    try:
        for run in range(1, opts.runs + 1):
            order = list(servers) if run % 2 else list(reversed(servers))
            for name in order:
                first = 0
                if best[name]:
                    top = max(best[name])
                    first = max(0, (rates.index(top) if top in rates else 0) - 2)
                print(f"run {run}: {name}", flush=True)
                best[name].append(ramp(name, servers[name], run, rates, first,
                                       workroot / f"run{run}-{name}", opts, steps))
        mem: dict[str, dict[str, Any]] = {name: {} for name in servers}
        if not opts.no_memory:
            print(f"memory: {opts.mem_calls[0]} then {opts.mem_calls[1]} calls held "
                  f"{opts.hold:g} s, in parallel", flush=True)
            names = [name for name in servers if name in ("ours", "sippy")]
            threads = [threading.Thread(target=memory, args=(
                name, servers[name], opts.cpu if i == 0 else opts.sipp_cpu,
                workroot / f"mem-{name}", opts, mem[name])) for i, name in enumerate(names)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    except KeyboardInterrupt:
        print("interrupted")
        return 2
    finally:
        if not opts.keep:
            import shutil
            shutil.rmtree(workroot, ignore_errors=True)
        else:
            print("work folder kept:", workroot)
    return report(opts, servers, steps, best, mem, time.monotonic() - began)


def report(opts: argparse.Namespace, servers: dict[str, Starter], steps: list[Step],
           best: dict[str, list[int]], mem: dict[str, dict[str, Any]], elapsed: float) -> int:
    print()
    print(table([(s.run, s.server, s.rate, s.calls, s.failed, s.late_1xx, s.retrans,
                  "yes" if s.growing else "no", s.latency_end_ms, s.cpu_ms_per_call,
                  s.cpu_load, "pass" if s.passed else "FAIL") for s in steps],
                ["run", "b2bua", "calls/s", "calls", "failed", "180 after 200", "retrans",
                 "growing",
                 "INVITE->200 end ms", "CPU ms/call", "load", "step"]))
    summary: dict[str, dict[str, Any]] = {}
    for name in servers:
        cpus = [next((s.cpu_ms_per_call for s in reversed(steps) if s.server == name
                      and s.run == run and s.rate == top and s.passed), float("nan"))
                for run, top in enumerate(best[name], 1)]
        summary[name] = {"runs": best[name], "median_cps": median(best[name]),
                         "cpu_ms_per_call": median(c for c in cpus if c == c)}
        summary[name].update(mem.get(name, {}))
    print()
    rows = []
    for name, s in summary.items():
        rows.append((name, ", ".join(map(str, s["runs"])), s["median_cps"],
                     s["cpu_ms_per_call"], s.get("rss_idle_kb", "-"),
                     f"{s.get('rss_small_kb', '-')} ({s.get('calls_small', '-')} calls)",
                     f"{s.get('rss_large_kb', '-')} ({s.get('calls_large', '-')} calls)",
                     s.get("kb_per_call", s.get("error", "-"))))
    print(table(rows, ["b2bua", "max calls/s per run", "median", "CPU ms/call",
                       "RSS idle KiB", f"RSS@{opts.mem_calls[0]} KiB",
                       f"RSS@{opts.mem_calls[1]} KiB", "KiB/call"]))
    ours = summary["ours"]
    sippy = summary.get("sippy")
    ratio = ours["median_cps"] / sippy["median_cps"] if sippy and sippy["median_cps"] else None
    kb = ours.get("kb_per_call")
    print()
    print("summary: ours %s calls/s, sippy %s calls/s, ratio %s (target >= %.0fx), "
          "CPU %.3f ms/call (target <= %.1f), %s KiB/concurrent call (target <= %.0f); "
          "%d runs, %.0f s"
          % (ours["median_cps"], sippy["median_cps"] if sippy else "n/a",
             "%.2fx" % ratio if ratio else "n/a", TARGET_RATIO, ours["cpu_ms_per_call"],
             TARGET_CPU_MS, kb if kb is not None else "n/a", TARGET_KB, opts.runs, elapsed))
    if opts.json:
        Path(opts.json).write_text(json.dumps({
            "machine": machine(), "options": {k: v for k, v in vars(opts).items()},
            "steps": [asdict(s) for s in steps], "summary": summary, "ratio": ratio}, indent=2))
    met = ((ratio is None or ratio >= TARGET_RATIO) and ours["cpu_ms_per_call"] <= TARGET_CPU_MS
           and (kb is None or kb <= TARGET_KB))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
