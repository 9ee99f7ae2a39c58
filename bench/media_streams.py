"""Relayed RTP streams per core at 50 packets/s each with zero loss: the built-in relay and
rtpengine, in the same run, on loopback.  Used by ``bench/media.py``.

Three processes per step, so that each one's CPU is its own: the relay (our ``RtpRelay``s
on the Twisted reactor in a child process, or an rtpengine daemon in user space), and a
generator that sends one 172-byte RTP packet (PCMU, 20 ms) per stream every 20 ms (spread
over the 20 ms), receives what the relay forwards on 16 sockets and counts it per SSRC.
A step passes when every packet sent arrived.  The relay's CPU (user + system, from /proc)
over the steady part of the step gives CPU per stream, hence streams per core; the figure
quoted is at the highest step without loss.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
HOST = "127.0.0.1"
SINKS = 16

GENERATOR = r"""
import select, socket, struct, sys, threading, time
streams, seconds = int(sys.argv[1]), float(sys.argv[2])
send = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
send.bind(("127.0.0.1", 0))
sinks = []
for _ in range(min(streams, %(sinks)d)):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    sinks.append(s)
print(send.getsockname()[1], ",".join(str(s.getsockname()[1]) for s in sinks), flush=True)
ports = [int(p) for p in sys.stdin.readline().split(",")]
received = [0] * streams
stop = threading.Event()
def receive():
    while not stop.is_set() or select.select(sinks, [], [], 0.3)[0]:
        for s in select.select(sinks, [], [], 0.1)[0]:
            try:
                while True:
                    data = s.recv(2048)
                    received[struct.unpack_from("!I", data, 8)[0] %% streams] += 1
            except BlockingIOError:
                pass
reader = threading.Thread(target=receive)
reader.start()
payload = b"\xff" * 160
sent, seq = 0, 0
start = time.monotonic()
tick, quarter = 0, max(1, (streams + 3) // 4)
while time.monotonic() - start < seconds:
    first = (tick %% 4) * quarter
    if first == 0:
        seq += 1
    for i in range(first, min(first + quarter, streams)):
        send.sendto(struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, seq * 160, i) + payload,
                    ("127.0.0.1", ports[i]))
        sent += 1
    tick += 1
    delay = start + tick * 0.005 - time.monotonic()
    if delay > 0:
        time.sleep(delay)
time.sleep(0.5)
stop.set()
reader.join()
print(sent, sum(received), sum(1 for r in received if r == 0), flush=True)
""" % {"sinks": SINKS}

BUILTIN = r"""
import sys
sys.path.insert(0, sys.argv[1])
from twisted.internet import reactor
from b2bua.media.ports import PortAllocator
from b2bua.media.relay import RtpRelay, Side
streams, low, source = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
sinks = [int(p) for p in sys.argv[5].split(",")]
ports = PortAllocator(low, low + 4 * streams + 3)
relays = []
for i in range(streams):
    relay = RtpRelay(reactor, ports, "127.0.0.1")
    relay.start()
    relay.set_peer(Side.CALLER, ("127.0.0.1", source))
    relay.set_peer(Side.CALLEE, ("127.0.0.1", sinks[i % len(sinks)]))
    relay.bridge()
    relays.append(relay)
print(",".join(str(r.caller_port) for r in relays), flush=True)
reactor.run()
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_range(size: int) -> int:
    """An even first port of ``size`` free UDP ports below the ephemeral range."""
    low_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for base in range(20000, low_ephemeral - size, 2 * size):
        try:
            socks = []
            for port in range(base, base + size, 97):   # a sample: the range is ours after
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind((HOST, port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free port range")


def pinned(cpu: int | None, command: list[str]) -> list[str]:
    if cpu is None or shutil.which("taskset") is None:
        return command
    return ["taskset", "-c", str(cpu), *command]


class Rtpengine:
    """An rtpengine daemon in user space and a blocking ng client for the bench."""

    def __init__(self, cpu: int | None) -> None:
        binary = shutil.which("rtpengine")
        if binary is None:
            raise RuntimeError("rtpengine is not installed (apt-get install -y rtpengine-daemon)")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((HOST, 0))
            self.ng_port = probe.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((HOST, 0))
            cli = probe.getsockname()[1]
        self.low = free_range(12000)
        self.log = tempfile.NamedTemporaryFile(prefix="rtpengine-", suffix=".log", delete=False)
        self.process = subprocess.Popen(pinned(cpu, [
            binary, "--config-file=none", "--interface=127.0.0.1",
            f"--listen-ng=127.0.0.1:{self.ng_port}", f"--listen-cli=127.0.0.1:{cli}",
            "--foreground", "--log-stderr", "--log-level=4", "--table=-1",
            f"--port-min={self.low}", f"--port-max={self.low + 11999}", "--num-threads=1"]),
            stdout=self.log, stderr=subprocess.STDOUT)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(2)
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.command({"command": "ping"}).get("result") == b"pong":
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("rtpengine did not start; see " + self.log.name)

    def command(self, message: dict[str, Any]) -> dict[str, Any]:
        from b2bua.media.bencode import decode, encode
        cookie = os.urandom(8).hex().encode()
        self.sock.sendto(cookie + b" " + encode(message), (HOST, self.ng_port))
        while True:
            data = self.sock.recv(65535)
            if data.startswith(cookie + b" "):
                reply = decode(data.split(b" ", 1)[1])
                assert isinstance(reply, dict)
                if reply.get("result") == b"error":
                    raise RuntimeError("rtpengine: %s" % reply.get("error-reason", b"?")
                                       .decode(errors="replace"))
                return reply

    def calls(self, streams: int, source: int, sinks: list[int]) -> list[int]:
        """One call per stream, caller at ``source``, callee at a sink: the caller ports."""
        ports = []
        for i in range(streams):
            call = f"bench-{i}"
            offer = (f"v=0\r\no=- 1 1 IN IP4 {HOST}\r\ns=-\r\nc=IN IP4 {HOST}\r\nt=0 0\r\n"
                     f"m=audio {source} RTP/AVP 0\r\n")
            answer = offer.replace(f"m=audio {source}", f"m=audio {sinks[i % len(sinks)]}")
            self.command({"command": "offer", "call-id": call, "from-tag": "a", "sdp": offer})
            reply = self.command({"command": "answer", "call-id": call, "from-tag": "a",
                                  "to-tag": "b", "sdp": answer})
            sdp = reply["sdp"].decode()
            ports.append(int(sdp.split("m=audio ", 1)[1].split()[0]))
        return ports

    def delete(self, streams: int) -> None:
        for i in range(streams):
            self.command({"command": "delete", "call-id": f"bench-{i}", "from-tag": "a",
                          "delete-delay": 0})   # free its ports now, not in 30 s

    def stop(self) -> None:
        self.sock.close()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def step(engine: str, streams: int, seconds: float, relay_cpu: int | None,
         load_cpu: int | None, rtpengine: Rtpengine | None) -> dict[str, float]:
    """One step: ``streams`` streams through ``engine`` for ``seconds``."""
    generator = subprocess.Popen(
        pinned(load_cpu, [sys.executable, "-c", GENERATOR, str(streams), str(seconds)]),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert generator.stdin is not None and generator.stdout is not None
    source_text, sinks_text = generator.stdout.readline().split()
    source, sinks = int(source_text), [int(p) for p in sinks_text.split(",")]
    relay: subprocess.Popen[str] | None = None
    try:
        if engine == "builtin":
            relay = subprocess.Popen(
                pinned(relay_cpu, [sys.executable, "-c", BUILTIN, str(REPO), str(streams),
                                   str(free_range(4 * streams + 8)), str(source), sinks_text]),
                stdout=subprocess.PIPE, text=True)
            assert relay.stdout is not None
            ports = [int(p) for p in relay.stdout.readline().split(",")]
            pid = relay.pid
        else:
            assert rtpengine is not None
            ports = rtpengine.calls(streams, source, sinks)
            pid = rtpengine.process.pid
        generator.stdin.write(",".join(map(str, ports)) + "\n")
        generator.stdin.flush()
        time.sleep(1.0)   # warm up: latching, socket buffers
        cpu0, wall0 = cpu_seconds(pid), time.monotonic()
        time.sleep(max(seconds - 2.0, 1.0))
        cpu1, wall1 = cpu_seconds(pid), time.monotonic()
        sent, received, silent = (int(x) for x in generator.stdout.readline().split())
        generator.wait(10)
    finally:
        if relay is not None:
            relay.terminate()
            relay.wait(10)
        if generator.poll() is None:
            generator.kill()
            generator.wait(5)
        if rtpengine is not None and engine == "rtpengine":
            rtpengine.delete(streams)
    load = (cpu1 - cpu0) / (wall1 - wall0)
    pps = sent / seconds
    carried = pps / 50   # streams the generator really kept at 50 packets/s
    return {"streams": streams, "sent": sent, "lost": sent - received, "silent": silent,
            "load": load, "pps": pps, "kept_up": pps / (streams * 50.0),
            "per_core": carried / load if load > 0 else float("inf")}


def ramp(engine: str, counts: list[int], seconds: float, relay_cpu: int | None,
         load_cpu: int | None) -> list[dict[str, float]]:
    """Steps of growing stream counts until one loses packets (or the relay needs a core)."""
    rtpengine = Rtpengine(relay_cpu) if engine == "rtpengine" else None
    results = []
    try:
        for streams in counts:
            try:
                result = step(engine, streams, seconds, relay_cpu, load_cpu, rtpengine)
            except (RuntimeError, OSError, ValueError) as error:
                print("  %-9s %5d streams: step failed (%s)" % (engine, streams, error),
                      flush=True)
                break
            results.append(result)
            print("  %-9s %5d streams %6.0f pps sent (%3.0f%%) lost %6d (%d silent streams)"
                  "  relay load %.2f -> %5.0f streams/core" % (
                      engine, streams, result["pps"], 100 * result["kept_up"], result["lost"],
                      result["silent"], result["load"], result["per_core"]), flush=True)
            if result["kept_up"] < 0.97:
                print("  the generator fell behind: the step does not count", flush=True)
                break
            if result["lost"] > 0 or result["load"] > 0.95:
                break
    finally:
        if rtpengine is not None:
            rtpengine.stop()
    return results
