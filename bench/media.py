"""Media benchmarks: ringback streams per core, relayed packets per second, and relayed
streams per core (built-in relay and rtpengine), on loopback.

    python bench/media.py [--seconds 5] [--runs 3] [--streams 250,500,1000,2000]
    python bench/media.py --sections relayed [--engines builtin,rtpengine]
        [--relayed-streams 250,500,1000,1500,2000,3000,4000] [--relayed-seconds 6]

Ringback: N senders, each on its own port like real calls, paced by the real reactor, sending
to a sink socket nobody reads.  Reported per N: CPU this process used (user + system) per
stream-second and per packet sent, the share of a core used, the packets actually sent
against the 50 per stream-second due (below 100% the host did not give us enough CPU), and
the streams one core would sustain at that cost per packet.  Relay: a
separate process floods the caller port of a bridged relay; reported: packets forwarded per
second, CPU microseconds per packet and the packets per second one core would sustain.
Relayed streams: see ``bench/media_streams.py`` (50 packets/s per stream, zero loss, the
relay pinned to ``--cpu``, the load generator to ``--load-cpu``).
Each figure is the median of ``--runs`` runs.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from typing import Any, Generator

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from twisted.internet import defer, task  # noqa: E402

from b2bua.media.g711 import PCMU  # noqa: E402
from b2bua.media.ports import PortAllocator  # noqa: E402
from b2bua.media.relay import RtpRelay, Side  # noqa: E402
from b2bua.media.ringback import RingbackSender  # noqa: E402
from b2bua.media.rtp import RtpPacket  # noqa: E402
from b2bua.media.tone import encoded_cadence  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import media_streams  # noqa: E402

HOST = "127.0.0.1"


def unread_socket() -> socket.socket:
    """A sink nobody reads: the kernel drops what overflows, this process pays nothing."""
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind((HOST, 0))
    return sink


def cpu() -> float:
    """User + system CPU of this process: sending UDP costs mostly system time."""
    times = os.times()
    return times.user + times.system


@defer.inlineCallbacks
def ringback_run(reactor: Any, streams: int, seconds: float
                 ) -> Generator[defer.Deferred[Any], Any, dict[str, float]]:
    sink = unread_socket()
    sink_address = sink.getsockname()
    ports = PortAllocator(40000, 40000 + 2 * streams + 100)
    senders = [RingbackSender.listen(reactor, ports, HOST, PCMU, "us", sink_address)
               for _ in range(streams)]
    for index, sender in enumerate(senders):  # spread over one frame, as calls arrive
        reactor.callLater(0.02 * index / streams, sender.start)
    yield task.deferLater(reactor, 0.5, lambda: None)  # settle
    sent0 = sum(s.packets_sent for s in senders)
    cpu0, wall0 = cpu(), time.perf_counter()
    yield task.deferLater(reactor, seconds, lambda: None)
    cpu1, wall1 = cpu(), time.perf_counter()
    sent = sum(s.packets_sent for s in senders) - sent0
    yield defer.gatherResults([sender.stop() for sender in senders])
    sink.close()
    elapsed = wall1 - wall0
    return {"cpu_per_stream_s": (cpu1 - cpu0) / (streams * elapsed),
            "cpu_per_packet": (cpu1 - cpu0) / max(sent, 1),
            "load": (cpu1 - cpu0) / elapsed,
            "delivered": sent / (streams * elapsed * 50)}


FLOOD = r"""
import socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("127.0.0.1", 0))
print(sock.getsockname()[1], flush=True)
sys.stdin.readline()
packet = bytes.fromhex(sys.argv[3])
sent, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    for _ in range(100):
        try:
            sock.sendto(packet, ("127.0.0.1", port))
            sent += 1
        except OSError:
            pass
print(sent, flush=True)
"""


@defer.inlineCallbacks
def relay_run(reactor: Any, seconds: float
              ) -> Generator[defer.Deferred[Any], Any, dict[str, float]]:
    sink = unread_socket()
    relay = RtpRelay(reactor, PortAllocator(41000, 41100), HOST)
    relay.start()
    packet = RtpPacket(payload_type=0, sequence=1, timestamp=0, ssrc=1,
                       payload=b"\xff" * 160).pack()
    # The flooder is another process, so its CPU is not counted as the relay's.
    child = subprocess.Popen(
        [sys.executable, "-c", FLOOD, str(relay.caller_port), str(seconds + 1.0), packet.hex()],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    flood_port = int(child.stdout.readline())
    relay.set_peer(Side.CALLER, (HOST, flood_port))
    relay.set_peer(Side.CALLEE, sink.getsockname())
    relay.bridge()
    child.stdin.write("go\n")
    child.stdin.flush()
    yield task.deferLater(reactor, 0.5, lambda: None)
    counters = relay.counters[Side.CALLER]
    forwarded0, received0 = counters.forwarded, counters.received
    cpu0, wall0 = cpu(), time.perf_counter()
    yield task.deferLater(reactor, seconds - 0.5, lambda: None)
    cpu1, wall1 = cpu(), time.perf_counter()
    forwarded = counters.forwarded - forwarded0
    received = counters.received - received0
    yield task.deferLater(reactor, 1.2, lambda: None)
    offered = int(child.stdout.readline()) / (seconds + 1.0)
    child.wait(5)
    yield relay.stop()
    sink.close()
    elapsed = wall1 - wall0
    return {"pps": forwarded / elapsed, "received_pps": received / elapsed,
            "offered_pps": offered,
            "cpu_us_per_packet": 1e6 * (cpu1 - cpu0) / max(forwarded, 1),
            "load": (cpu1 - cpu0) / elapsed}


def median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


@defer.inlineCallbacks
def main(reactor: Any, options: argparse.Namespace) -> Generator[defer.Deferred[Any], Any, None]:
    encoded_cadence("us", PCMU)  # built once per process at start-up in the service too
    print("host: %d CPUs, load average %.1f %.1f %.1f (other work on the host lowers the"
          " wall-clock figures;\nthe CPU-time ones hold better)"
          % ((os.cpu_count() or 0,) + os.getloadavg()))
    if "ringback" in options.sections or "flood" in options.sections:
        yield ringback_and_flood(reactor, options)
    if "relayed" in options.sections:
        relayed_streams(options)


def relayed_streams(options: argparse.Namespace) -> None:
    """Both engines in the same run, alternating which goes first."""
    # SIGTERM unwinds through the ramps' ``finally``: no relay or generator is left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print()
    print("relayed streams (50 pps each, one direction, zero loss; %d s steps x %d runs)"
          % (options.relayed_seconds, options.runs))
    best: dict[str, list[float]] = {engine: [] for engine in options.engines}
    highest: dict[str, list[int]] = {engine: [] for engine in options.engines}
    for run in range(options.runs):
        order = options.engines if run % 2 == 0 else list(reversed(options.engines))
        for engine in order:
            try:
                steps = media_streams.ramp(engine, options.relayed_streams,
                                           options.relayed_seconds, options.cpu,
                                           options.load_cpu)
            except RuntimeError as error:
                print("  %s: skipped (%s)" % (engine, error))
                continue
            clean = [s for s in steps if s["lost"] == 0 and s["kept_up"] >= 0.97]
            if clean:
                top = max(clean, key=lambda s: s["streams"])
                best[engine].append(top["per_core"])
                highest[engine].append(int(top["streams"]))
    for engine in options.engines:
        if best[engine]:
            print("%-9s highest zero-loss step %s streams (median %d); at it %.0f streams per"
                  " core (median of %s)" % (
                      engine, highest[engine], statistics.median(highest[engine]),
                      statistics.median(best[engine]),
                      ", ".join("%.0f" % b for b in best[engine])))


@defer.inlineCallbacks
def ringback_and_flood(reactor: Any, options: argparse.Namespace
                       ) -> Generator[defer.Deferred[Any], Any, None]:
    print("ringback (us tone, PCMU, %d s x %d runs, median)" % (options.seconds, options.runs))
    print("%8s %12s %14s %6s %10s %13s" % ("streams", "CPU us/s per", "CPU us per", "load",
                                           "delivered", "streams/core"))
    print("%8s %12s %14s %6s %10s %13s" % ("", "stream", "packet sent", "", "", ""))
    for streams in options.streams if "ringback" in options.sections else ():
        runs = []
        for _ in range(options.runs):
            runs.append((yield ringback_run(reactor, streams, options.seconds)))
        per_packet = median(runs, "cpu_per_packet")
        print("%8d %12.0f %14.1f %6.2f %9.1f%% %13.0f" % (
            streams, median(runs, "cpu_per_stream_s") * 1e6, per_packet * 1e6,
            median(runs, "load"), 100 * median(runs, "delivered"), 1 / (50 * per_packet)))
    if "flood" not in options.sections:
        return
    print()
    print("relay (one direction flood, 172-byte RTP, %d s x %d runs, median)"
          % (options.seconds, options.runs))
    runs = []
    for _ in range(options.runs):
        runs.append((yield relay_run(reactor, options.seconds)))
    per_packet = median(runs, "cpu_us_per_packet")
    print("forwarded %.0f pps (flooder offered %.0f, relay read %.0f), load %.2f"
          % (median(runs, "pps"), median(runs, "offered_pps"), median(runs, "received_pps"),
             median(runs, "load")))
    print("%.1f CPU us per forwarded packet -> %.0f pps per core"
          % (per_packet, 1e6 / per_packet))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--streams", type=lambda s: [int(x) for x in s.split(",")],
                        default=[250, 500, 1000, 2000])
    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    parser.add_argument("--sections", type=lambda s: s.split(","),
                        default=["ringback", "flood", "relayed"])
    parser.add_argument("--engines", type=lambda s: s.split(","),
                        default=["builtin", "rtpengine"])
    parser.add_argument("--relayed-streams", type=ints,
                        default=[250, 500, 1000, 1500, 2000, 3000, 4000])
    parser.add_argument("--relayed-seconds", type=float, default=6.0)
    parser.add_argument("--cpu", type=int, default=0, help="core of the relay under test")
    parser.add_argument("--load-cpu", type=int, default=1, help="core of the load generator")
    return parser.parse_args()


if __name__ == "__main__":
    task.react(main, [parse_args()])
