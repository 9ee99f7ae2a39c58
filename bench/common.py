"""Helpers shared by the call benchmarks (``cps.py``, ``wakeup.py``).

They start real processes on 127.0.0.1 only: our service as users start it
(``twistd -n b2bua --config FILE``), sippy's B2BUA from its own venv, and SIPp.
Every process is started through :class:`Child`, pinned with ``taskset`` when
asked, bounded in time, and stopped by the ``with`` block that started it.
CPU and memory figures come from ``/proc`` of the measured process, so they
count all its threads and nothing of the load generators.
"""

from __future__ import annotations

import csv
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import timeit
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support import free_port, options_ping, write_config  # noqa: E402

HOST = "127.0.0.1"
SIPPY_VENV = Path(os.environ.get("SIPPY_VENV", "/tmp/sippy-venv"))
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TRUNK = ('[[trunk]]\nname = "sipp"\nuri = "sip:127.0.0.1:5999"\n'
         'accept_from = ["127.0.0.1/32"]\n')
STATIC = '[[router]]\nplugin = "static"\ntarget = "sip:127.0.0.1:{port}"\n'

__all__ = ["Child", "HOST", "REPO", "SippResult", "cpu_seconds", "free_port", "machine",
           "current_calls", "finish_uac", "median", "reference_loop_us", "rss_kb", "run_uac",
           "sippy_available",
           "start_ours", "start_sippy", "start_uac", "start_uas", "table", "uas_scenario",
           "what_if_launcher"]


# -- /proc ---------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a whole process (all threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_kb(pid: int) -> int:
    """Resident set size in KiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def median(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.median(values) if values else float("nan")


def reference_loop_us() -> float:
    """Time of ``sum(range(1000))`` in this interpreter: a yardstick of how fast
    the machine is right now (shared hosts have slow spells), to read figures by."""
    return min(timeit.repeat("sum(range(1000))", number=2000, repeat=5)) / 2000 * 1e6


def machine() -> str:
    """One line naming the machine, for tables that will be compared later."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join("%.1f" % x for x in os.getloadavg())
    return (f"{time.strftime('%Y-%m-%d %H:%M')} {model}, {os.cpu_count()} cores, "
            f"Linux {platform.release()}, Python {platform.python_version()}, load {load}")


# -- processes -----------------------------------------------------------------------


def pinned(cpu: int | None, command: Sequence[str]) -> list[str]:
    """``command`` run on one core (taskset execs it, so the PID stays the command's)."""
    if cpu is None or shutil.which("taskset") is None:
        return list(command)
    return ["taskset", "-c", str(cpu), *command]


@dataclass
class Child:
    """A started process that ``stop()`` (or leaving ``with``) ends, by its own PID only."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int = 0
    workdir: Path = field(default_factory=Path)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _udp_bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((HOST, port))
        except OSError:
            return True
    return False


def _wait_ready(child: Child, timeout: float, log: Path | None) -> Child:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            text = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{child.name} exited with {child.proc.returncode}\n{text}")
        if options_ping(child.port, timeout=0.3) is not None:
            return child
        time.sleep(0.1)
    child.stop()
    raise RuntimeError(f"{child.name} did not answer OPTIONS on {child.port} in {timeout}s")


def what_if_launcher(rcvbuf: int | None = None, flush_delay: float | None = None
                     ) -> list[str] | None:
    """twistd with a default changed in the service process, for what-if runs (no change to
    b2bua/): ``rcvbuf`` sets SO_RCVBUF on every Twisted UDP port; ``flush_delay`` replaces
    the BindingWriter's default flush delay.  None when nothing is changed."""
    if rcvbuf is None and flush_delay is None:
        return None
    lines = ["import socket, sys"]
    if rcvbuf is not None:
        lines += ["from twisted.internet import udp",
                  "_create = udp.Port.createInternetSocket",
                  "def _big(self):",
                  "    s = _create(self)",
                  f"    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, {int(rcvbuf)})",
                  "    return s",
                  "udp.Port.createInternetSocket = _big"]
    if flush_delay is not None:
        lines += ["import b2bua.store.writer as w",
                  f"w.BindingWriter.__init__.__defaults__ = ({float(flush_delay)!r},)"]
    lines += ["sys.argv[0] = 'twistd'", "from twisted.scripts.twistd import run", "run()"]
    return [sys.executable, "-c", "\n".join(lines)]


def start_ours(workdir: Path, target_port: int, cpu: int | None = 0, extra: str = "",
               routers: str | None = None, log_level: str = "info",
               python: Sequence[str] | None = None, timeout: float = 60.0) -> Child:
    """Our B2BUA on a free port: a trunk that accepts 127.0.0.1 (no auth), by default
    a static route to ``target_port``, a file-backed SQLite database.

    ``python`` replaces ``twistd`` with another launcher (e.g. one that patches a default
    for a what-if run); it must accept twistd's arguments.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    routers = routers if routers is not None else STATIC.format(port=target_port)
    config = write_config(workdir, port, listen=[f"udp:{HOST}:{port}"],
                          extra=f'[log]\nlevel = "{log_level}"\n\n' + TRUNK + "\n" + extra,
                          routers=routers)
    log = workdir / "twistd.log"
    launcher = list(python) if python else [shutil.which("twistd") or "twistd"]
    command = pinned(cpu, [*launcher, "-n", "--pidfile=", "--logfile", str(log), "b2bua",
                           "--config", str(config)])
    proc = subprocess.Popen(command, cwd=str(REPO), stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    return _wait_ready(Child("b2bua", proc, port, workdir), timeout, log)


def sippy_available() -> str | None:
    """Path of sippy's ``b2bua`` script, or None (install: see bench/README.md)."""
    script = SIPPY_VENV / "bin" / "b2bua"
    return str(script) if script.exists() else None


def start_sippy(workdir: Path, target_port: int, cpu: int | None = 0,
                timeout: float = 30.0) -> Child:
    """sippy's B2BUA (PyPI ``sippy``): static route, no RADIUS, no accounting, no logs."""
    script = sippy_available()
    if script is None:
        raise RuntimeError(f"sippy is not installed in {SIPPY_VENV}")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = workdir / "sippy.log"
    command = pinned(cpu, [str(SIPPY_VENV / "bin" / "python"), script, "-f", "-l", HOST,
                           "-p", str(port), "-s", f"{HOST}:{target_port}", "-a", HOST,
                           "-A", "0", "-u", "-P", str(workdir / "sippy.pid"),
                           "-c", str(workdir / "sippy.sock"), "-L", str(log)])
    with open(log, "ab") as out:
        proc = subprocess.Popen(command, cwd=str(workdir), stdout=out, stderr=subprocess.STDOUT,
                                env=dict(os.environ, SIPLOG_BEND="none"))
    child = Child("sippy", proc, port, workdir)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not _udp_bound(port):
        if not child.alive():
            raise RuntimeError("sippy exited: " + log.read_text(errors="replace")[-3000:])
        time.sleep(0.1)
    return _wait_ready(child, max(1.0, deadline - time.monotonic()), log)


# -- SIPp ----------------------------------------------------------------------------


def sipp() -> str:
    path = shutil.which("sipp")
    if path is None:
        raise SystemExit("sipp is not installed (apt-get install -y sip-tester)")
    return path


SIPP_TUNING = ["-buff_size", "1048576", "-max_recv_loops", "10000", "-max_sched_loops",
               "10000", "-nostdin"]


def uas_scenario(workdir: Path, timewait_ms: int = 1000) -> Path:
    """SIPp's built-in UAS, with two changes that don't alter the message flow.

    Its Contact carries ``;transport=UDP`` (upper case), which sippy 2.5 does not route
    an in-dialog BYE to ("unsupported transport: UDP"), so it is dropped for both B2BUAs
    alike; and the 4 s wait after each BYE is shortened so a step ends sooner.
    """
    text = subprocess.run([sipp(), "-sd", "uas"], capture_output=True, text=True,
                          timeout=10).stdout       # exits 99 after printing it
    if "<scenario" not in text:
        raise RuntimeError("sipp -sd uas printed no scenario")
    text = text.replace(";transport=[transport]", "")
    text = re.sub(r'<timewait milliseconds="\d+"/>', f'<timewait milliseconds="{timewait_ms}"/>',
                  text)
    path = workdir / "uas.xml"
    path.write_text(text)
    return path


def start_uas(workdir: Path, port: int, calls: int | None, timeout_s: float,
              cpu: int | None = 1, name: str = "uas") -> Child:
    """A SIPp UAS on ``port``; ends by itself after ``calls`` calls or ``timeout_s``."""
    scenario = workdir / "uas.xml"
    if not scenario.exists():
        uas_scenario(workdir)
    args = [sipp(), "-sf", str(scenario), "-i", HOST, "-p", str(port), *SIPP_TUNING,
            "-timeout", "%ds" % int(timeout_s), "-trace_stat", "-stf",
            str(workdir / f"{name}_stat.csv"), "-fd", "1"]
    if calls:
        args += ["-m", str(calls)]
    proc = subprocess.Popen(pinned(cpu, args), cwd=str(workdir), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not _udp_bound(port) and time.monotonic() < deadline:
        time.sleep(0.02)
    return Child(name, proc, port, workdir)


@dataclass
class SippResult:
    """The figures of one SIPp UAC run, from its final screen and -trace_stat file."""

    calls: int
    ok: int
    failed: int
    retransmissions: int
    retrans_series: list[int]
    rt_ms_series: list[float]
    seconds: float
    returncode: int
    screen: str = ""
    late_1xx: int = 0

    @property
    def failed_ratio(self) -> float:
        """Failed calls less those SIPp aborted only for a 1xx that came after the 2xx.

        SIPp's built-in UAC aborts (and BYEs) a call when a 180 arrives after the 200: a
        B2BUA that sends from several threads (sippy) reorders them now and then.  The call
        itself worked, so it is counted in ``late_1xx`` and reported, not failed."""
        return (self.failed - self.late_1xx) / self.calls if self.calls else 1.0

    def retrans_growing(self) -> bool:
        """Retransmissions that rise through the run (the server falls behind), as opposed
        to one burst from a noisy neighbour that is over by the end: more than 0.5 % of the
        calls retransmitted, the second half of the run has more than twice the first
        half's, and the last two seconds still have some."""
        series = self.retrans_series
        if sum(series) <= max(3, 0.005 * self.calls) or len(series) < 3:
            return False
        half = len(series) // 2
        return sum(series[half:]) > 2 * sum(series[:half]) + 2 and sum(series[-2:]) > 0

    def latency_end_ms(self) -> float:
        """Mean INVITE->200 time over the last two periods (of placing calls) with answers."""
        values = [v for v in self.rt_ms_series if v > 0][-2:]
        return sum(values) / len(values) if values else 0.0


def _counter(screen: str, name: str) -> int:
    found = re.findall(r"%s\s*\|\s*\d+\s*\|\s*(\d+)" % re.escape(name), screen)
    return int(found[-1]) if found else 0


def _duration_ms(text: str) -> float:
    """SIPp's ``HH:MM:SS:uuuuuu`` to milliseconds."""
    parts = text.strip().split(":")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        return 0.0
    h, m, s, us = (int(p) for p in parts)
    return ((h * 60 + m) * 60 + s) * 1000 + us / 1000


def read_stat(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as handle:
            return list(csv.DictReader(handle, delimiter=";"))
    except OSError:
        return []


def start_uac(workdir: Path, target_port: int, calls: int, rate: float, hold_ms: int = 0,
              cpu: int | None = 1, timeout_s: float = 120.0, name: str = "uac",
              extra: Sequence[str] = ()) -> Child:
    """SIPp's built-in UAC, not waited for: ``calls`` calls at ``rate``/s, each held
    ``hold_ms``.  Its screen goes to ``NAME_screen.txt``, its 1 s stats to ``NAME_stat.csv``."""
    stat = workdir / f"{name}_stat.csv"
    stat.unlink(missing_ok=True)
    args = [sipp(), "-sn", "uac", f"{HOST}:{target_port}", "-i", HOST, "-p", str(free_port()),
            "-m", str(calls), "-r", str(rate), "-rp", "1000", "-d", str(hold_ms),
            *SIPP_TUNING, "-timeout", "%ds" % int(timeout_s), "-trace_stat", "-stf", str(stat),
            "-fd", "1", "-trace_err", "-error_file", str(workdir / f"{name}_errors.log"), *extra]
    with open(workdir / f"{name}_screen.txt", "w") as out:
        proc = subprocess.Popen(pinned(cpu, args), cwd=str(workdir), stdout=out,
                                stderr=subprocess.STDOUT)
    return Child(name, proc, target_port, workdir)


def current_calls(uac: Child) -> int:
    """Calls the UAC has open now, from the last line of its 1 s statistics."""
    rows = read_stat(uac.workdir / f"{uac.name}_stat.csv")
    return int(rows[-1].get("CurrentCall") or 0) if rows else 0


def finish_uac(uac: Child, calls: int, timeout_s: float) -> SippResult:
    """Wait for a UAC (at most ``timeout_s``; then SIGINT, as pressing 'q') and read it."""
    began = time.monotonic()
    try:
        uac.proc.wait(timeout_s)
    except subprocess.TimeoutExpired:       # SIPp's own -timeout does not always fire
        uac.proc.send_signal(signal.SIGINT)
        try:
            uac.proc.wait(5)
        except subprocess.TimeoutExpired:
            uac.stop()
    seconds = time.monotonic() - began
    rows = read_stat(uac.workdir / f"{uac.name}_stat.csv")
    # Only the periods while calls were being placed: the tail that drains retransmitted
    # calls after the last INVITE would make any overload look like a shrinking one.
    placing = next((i + 1 for i, r in enumerate(rows)
                    if int(r.get("TotalCallCreated") or 0) >= calls), len(rows))
    retrans = [int(r.get("Retransmissions(P)") or 0) for r in rows[:placing]]
    rts = [_duration_ms(r.get("ResponseTime1(P)", "")) for r in rows[:placing]]
    screen = (uac.workdir / f"{uac.name}_screen.txt").read_text(errors="replace")
    ok, failed = _counter(screen, "Successful call"), _counter(screen, "Failed call")
    total_retrans = int(rows[-1].get("Retransmissions(C)") or 0) if rows else sum(retrans)
    failed = max(failed, calls - ok)       # calls SIPp never finished count as failed
    try:
        errors = (uac.workdir / f"{uac.name}_errors.log").read_text(errors="replace")
    except OSError:
        errors = ""
    late = len(re.findall(r"Aborting call on unexpected message[^\n]*while pausing[^\n]*"
                          r"received 'SIP/2\.0 1\d\d ", errors))
    return SippResult(calls, ok, failed, total_retrans, retrans, rts, seconds,
                      uac.proc.returncode, screen[-4000:], min(late, failed))


def run_uac(workdir: Path, target_port: int, calls: int, rate: float, hold_ms: int = 0,
            cpu: int | None = 1, timeout_s: float = 120.0, name: str = "uac") -> SippResult:
    """``start_uac`` then ``finish_uac``: the run, bounded by ``timeout_s``."""
    uac = start_uac(workdir, target_port, calls, rate, hold_ms, cpu, timeout_s, name)
    return finish_uac(uac, calls, timeout_s)


# -- output --------------------------------------------------------------------------


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> str:
    """A plain-text table with right-aligned columns (markdown-compatible)."""
    cells = [[str(h) for h in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.rjust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    return "\n".join(lines)
