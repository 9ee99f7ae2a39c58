"""Transaction layer throughput and memory, in process (no sockets).

    python bench/transactions.py [--count 20000] [--runs 5] [--memory-count 100000]

Throughput, median of ``--runs`` runs, each ``--count`` units on a fresh layer,
in CPU time of this process (the figure does not move with the machine's
load), from the first send until every transaction has ended (the clock is
stepped past the last RFC timer, so the timer work is in the figure):

* ``server-layer``: pre-parsed OPTIONS fed to one layer, the TU answers 200
  (the transaction machinery alone, no parsing in the timing);
* ``options-pair``: two layers back to back over bytes (serialise + parse),
  one OPTIONS round trip = 2 transactions;
* ``invite-pair``: INVITE / 180 / 200 / ACK with UAC and UAS dialogs,
  2 transactions per call.

Memory: ``--memory-count`` transactions (half OPTIONS round trips, half calls)
measured with tracemalloc: live transactions and traced memory while they all
still wait for their timers, then after the clock passes the last timer, both
against the baseline of an empty layer.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import itertools
import os
import statistics
import sys
import time
import tracemalloc
from typing import Any, Callable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from twisted.internet.base import DelayedCall  # noqa: E402

from b2bua.sip.actions import Source  # noqa: E402
from b2bua.sip.dialog import Dialog  # noqa: E402
from b2bua.sip.message import Request, Response, make_response, parse_message  # noqa: E402
from b2bua.sip.transaction_layer import TransactionLayer  # noqa: E402

A = ("192.0.2.10", 5060)
B = ("192.0.2.20", 5060)


class HeapClock:
    """An IReactorTime on a heap, as the real reactor schedules: cancelled
    calls stay until there are many, then the heap is rebuilt (task.Clock
    re-sorts a list on every callLater, which would dominate the figures)."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, DelayedCall]] = []
        self._seq = itertools.count()
        self._cancellations = 0

    def seconds(self) -> float:
        return self.now

    def callLater(self, delay: float, f: Callable[..., Any], *args: Any, **kw: Any) -> DelayedCall:
        call = DelayedCall(self.now + delay, f, args, kw, self._cancelled, _noop, self.seconds)
        heapq.heappush(self._heap, (call.time, next(self._seq), call))
        return call

    def _cancelled(self, call: DelayedCall) -> None:
        self._cancellations += 1
        if self._cancellations > 50 and self._cancellations > len(self._heap) >> 1:
            self._cancellations = 0
            self._heap = [entry for entry in self._heap
                          if not entry[2].cancelled and entry[2] is not call]
            heapq.heapify(self._heap)

    def advance(self, amount: float) -> None:
        self.now += amount
        heap = self._heap
        while heap and heap[0][0] <= self.now:
            call = heapq.heappop(heap)[2]
            if call.cancelled:
                self._cancellations -= 1
            elif not call.called:
                call.called = 1
                call.func(*call.args, **call.kw)


def _noop(call: DelayedCall) -> None:
    pass


class Peer:
    """A TU that answers everything at once and ACKs every 2xx it gets."""

    def __init__(self, clock: HeapClock, address: tuple[str, int], send: Callable[..., None]):
        self.address = address
        self.layer = TransactionLayer(clock, send, self, sent_by={"UDP": "%s:%d" % address})
        self.completed = 0

    def request_received(self, tx: Any, request: Request, source: Source) -> None:
        if request.method == "INVITE":
            self.layer.send_response(tx, make_response(request, 180, to_tag="b1"))
            ok = make_response(request, 200, to_tag="b1",
                               extra=[("Contact", "<sip:b@%s:%d>" % self.address)])
            Dialog.uas(request, ok)
            self.layer.send_response(tx, ok)
        else:
            self.layer.send_response(tx, make_response(request, 200, to_tag="b1"))

    def response_received(self, tx: Any, response: Response) -> None:
        if response.status >= 200:
            self.completed += 1
            if response.cseq.method == "INVITE":
                dialog = Dialog.uac(tx.request, response)
                self.layer.send_ack(dialog.create_ack(response.cseq.number), B, "UDP", tx=tx)

    def transaction_timeout(self, tx: Any) -> None:
        raise AssertionError("timeout in the benchmark: %r" % tx)

    def transport_error(self, tx: Any) -> None:
        raise AssertionError("transport error in the benchmark")

    def ack_received(self, request: Request, source: Source) -> None:
        pass

    def cancel_received(self, tx: Any, cancel: Request) -> None:
        pass

    def stray_response(self, response: Response, source: Source) -> None:
        pass


def pair() -> tuple[HeapClock, Peer, Peer]:
    """Two layers whose transport_send parses the bytes into the other one."""
    clock = HeapClock()
    peers: dict[tuple[str, int], Peer] = {}

    def sender(me: tuple[str, int]) -> Callable[..., None]:
        def send(data: bytes, dest: tuple[str, int], transport: str, flow: object) -> None:
            peers[dest].layer.message_received(parse_message(data), Source("UDP", me, dest))
        return send

    a, b = Peer(clock, A, sender(A)), Peer(clock, B, sender(B))
    peers.update({A: a, B: b})
    return clock, a, b


def new_request(method: str, i: int) -> Request:
    return Request(method, "sip:b@192.0.2.20", [
        ("Max-Forwards", "70"), ("From", "<sip:a@192.0.2.10>;tag=a%d" % i),
        ("To", "<sip:b@192.0.2.20>"), ("Call-ID", "bench-%d" % i), ("CSeq", "1 " + method),
        ("Contact", "<sip:a@192.0.2.10:5060>")])


def run_pair(method: str, count: int) -> tuple[float, int]:
    clock, a, b = pair()
    start = time.process_time()
    for i in range(count):
        a.layer.send_request(new_request(method, i), B, "UDP")
    clock.advance(40.0)
    elapsed = time.process_time() - start
    assert a.completed == count and len(a.layer) == 0 and len(b.layer) == 0
    return elapsed, 2 * count


def run_server_layer(count: int) -> tuple[float, int]:
    clock = HeapClock()
    sent = [0]

    def send(data: bytes, dest: tuple[str, int], transport: str, flow: object) -> None:
        sent[0] += len(data)

    peer = Peer(clock, B, send)
    source = Source("UDP", A, B)
    template = new_request("OPTIONS", 0).to_bytes()
    requests = [parse_message(template.replace(b"Call-ID: bench-0", b"Call-ID: bench-%d" % i)
                              .replace(b"Max-Forwards", b"Via: SIP/2.0/UDP 192.0.2.10;branch="
                                       b"z9hG4bK%d;rport\r\nMax-Forwards" % i, 1))
                for i in range(count)]
    gc.collect()
    gc.freeze()  # the prepared requests are not the layer's garbage to scan
    start = time.process_time()
    for request in requests:
        peer.layer.message_received(request, source)
    clock.advance(40.0)
    elapsed = time.process_time() - start
    gc.unfreeze()
    assert len(peer.layer) == 0 and sent[0] > 0
    return elapsed, count


def throughput(runs: int, count: int) -> None:
    scenarios: dict[str, Callable[[], tuple[float, int]]] = {
        "server-layer": lambda: run_server_layer(count),
        "options-pair": lambda: run_pair("OPTIONS", count),
        "invite-pair": lambda: run_pair("INVITE", count),
    }
    print("%-14s %14s %12s" % ("scenario", "transactions/s", "us/tx"))
    for name, run in scenarios.items():
        rates = []
        for _ in range(runs):
            gc.collect()
            elapsed, transactions = run()
            rates.append(transactions / elapsed)
        rate = statistics.median(rates)
        print("%-14s %14.0f %12.1f" % (name, rate, 1e6 / rate))


def memory(count: int) -> None:
    gc.collect()
    tracemalloc.start()
    clock, a, b = pair()
    gc.collect()
    baseline = tracemalloc.get_traced_memory()[0]
    half = count // 4  # each unit is 2 transactions; half OPTIONS, half INVITE
    for i in range(half):
        a.layer.send_request(new_request("OPTIONS", i), B, "UDP")
        a.layer.send_request(new_request("INVITE", half + i), B, "UDP")
    gc.collect()
    live = len(a.layer) + len(b.layer)
    with_live = tracemalloc.get_traced_memory()[0] - baseline
    clock.advance(40.0)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] - baseline
    remaining = len(a.layer) + len(b.layer)
    clock.advance(200.0)
    gc.collect()
    later = tracemalloc.get_traced_memory()[0] - baseline
    tracemalloc.stop()
    done = 4 * half
    print()
    print("memory: %d transactions completed (tracemalloc, vs an empty layer)" % done)
    print("  all live, waiting for their timers: %d live, %.1f MiB, %.0f bytes per live tx"
          % (live, with_live / 2**20, with_live / max(live, 1)))
    print("  after the last RFC timer (40 s):    %d live, %+.1f KiB (cancelled timer"
          " objects the reactor has not dropped yet)" % (remaining, after / 2**10))
    print("  after Timer C's time (240 s):       %d live, %+.1f KiB"
          % (len(a.layer) + len(b.layer), later / 2**10))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--memory-count", type=int, default=100000)
    args = parser.parse_args()
    throughput(args.runs, args.count)
    memory(args.memory_count)


if __name__ == "__main__":
    main()
