"""Memory after a flood of mutated SIP messages, in process (issue 21).

Builds the service as ``make_service`` does (tests/fuzz_support.py: the real
endpoint, transaction layer, core, registrar and calls, SQLite in a temporary
folder) on a ``Clock``, and feeds it mutated copies of REGISTER, INVITE and
OPTIONS requests from many source addresses, at a simulated rate, freezing the
heap once a simulated second as ``_GcPacer`` does.  Then lets 64 simulated
seconds pass (every transaction ends) and reports RSS, the live objects the
collector tracks, the frozen count, the top tracemalloc sites, and what each
step of the reclaim gets back (a full collection; then ``malloc_trim``).

    python bench/flood_memory.py [--messages 35000] [--rate 600] [--tracemalloc]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import random
import sys
import tempfile
import tracemalloc
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pytest  # noqa: E402  (MonkeyPatch, as the tests use it)

from b2bua.sip.addressing import Source  # noqa: E402
from tests.fuzz_support import Service  # noqa: E402

SEEDS = [
    b"REGISTER sip:sip.example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bK%(n)d"
    b";rport\r\nFrom: <sip:1111@sip.example.com>;tag=f%(n)d\r\nTo: <sip:1111@sip.example.com>\r\n"
    b"Call-ID: reg-%(n)d\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\nContact: <sip:1111@192.0.2.7:5062>"
    b"\r\nX-MPUSH: i:com.example.app:tok%(n)d\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n",
    b"INVITE sip:5551234@sip.example.com SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.10:5060;branch="
    b"z9hG4bK%(n)d\r\nFrom: <sip:4930@198.51.100.10>;tag=a%(n)d\r\nTo: <sip:5551234@sip.example.com>"
    b"\r\nCall-ID: inv-%(n)d\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContact: <sip:4930@198.51.100.10>"
    b"\r\nContent-Length: 0\r\n\r\n",
    b"OPTIONS sip:b2bua@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK%(n)d\r\n"
    b"From: <sip:x@192.0.2.9>;tag=o%(n)d\r\nTo: <sip:b2bua@127.0.0.1>\r\nCall-ID: opt-%(n)d\r\n"
    b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
]


def mutate(data: bytes, rnd: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rnd.randint(0, 3)):
        pos = rnd.randrange(len(out))
        op = rnd.random()
        if op < 0.4:
            out[pos] = rnd.randrange(256)
        elif op < 0.7:
            out[pos:pos] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 4)))
        else:
            del out[pos:pos + rnd.randint(1, 8)]
    return bytes(out)


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def malloc_trim() -> bool:
    try:
        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def arenas() -> str:
    """pymalloc's arenas now / at most, and the bytes in their used blocks."""
    import os
    read, write = os.pipe()
    saved = os.dup(2)
    os.dup2(write, 2)
    try:
        sys._debugmallocstats()
    finally:
        os.dup2(saved, 2)
        os.close(write)
        os.close(saved)
    with open(read, errors="replace") as pipe:
        text = pipe.read()
    wanted = {}
    for line in text.splitlines():
        line = line.lstrip("# ")
        for key in ("arenas allocated current", "arenas highwater mark",
                    "bytes in allocated blocks", "bytes in available blocks"):
            if line.startswith(key):
                wanted[key] = int(line.split("=")[1].replace(",", ""))
    if len(wanted) < 4:
        return "no pymalloc (PYTHONMALLOC=malloc)"
    return ("arenas %(arenas allocated current)d (high %(arenas highwater mark)d), "
            "used blocks %(bytes in allocated blocks)d B, free blocks "
            "%(bytes in available blocks)d B" % wanted)


def tracked_types(top: int = 8) -> list[tuple[str, int]]:
    return Counter(type(o).__name__ for o in gc.get_objects()).most_common(top)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=35000)
    parser.add_argument("--rate", type=float, default=600.0, help="simulated messages/s")
    parser.add_argument("--tracemalloc", action="store_true")
    parser.add_argument("--seed", type=int, default=21)
    args = parser.parse_args()
    rnd = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as patch:
        svc = Service(Path(folder), patch)
        layer = svc.root.layer
        gc.collect()
        gc.freeze()
        if args.tracemalloc:
            tracemalloc.start(8)
        before = rss_kib()
        start_snapshot = tracemalloc.take_snapshot() if args.tracemalloc else None
        print("before: RSS %d KiB, frozen %d; %s" % (before, gc.get_freeze_count(), arenas()))
        step, frozen_at = 1.0 / args.rate, 0.0
        peak = before
        for n in range(args.messages):
            seed = SEEDS[n % len(SEEDS)] % {b"n": n}
            source = Source("UDP", ("10.%d.%d.%d" % (rnd.randrange(256), rnd.randrange(256),
                                                        rnd.randrange(1, 255)), 5060),
                            ("127.0.0.1", 5060), None)
            svc.root.network.deliver(mutate(seed, rnd), source)
            svc.clock.advance(step)
            if svc.clock.seconds() - frozen_at >= 1.0:
                gc.freeze()        # as _GcPacer, once a (simulated) second
                frozen_at = svc.clock.seconds()
                peak = max(peak, rss_kib())
            svc.wire.sent.clear()
        during = rss_kib()
        servers, clients = len(layer.servers), len(getattr(layer, "clients", {}))
        print("end of flood: RSS %d KiB (peak %d), transactions %d server / %d client, "
              "calls %d" % (during, peak, servers, clients, len(svc.root.calls.calls)))
        for _ in range(130):   # 65 s: every timer fires, every transaction ends
            svc.clock.advance(0.5)
            svc.wire.sent.clear()
            gc.freeze()
        after = rss_kib()
        print("pymalloc 64 s after:", arenas())
        print("64 s later: RSS %d KiB, transactions %d server / %d client, calls %d, "
              "frozen %d, gc-tracked %d" % (
                  after, len(layer.servers), len(getattr(layer, "clients", {})),
                  len(svc.root.calls.calls), gc.get_freeze_count(), len(gc.get_objects())))
        sizes = {
            "nonce counts": svc.root.registrar.auth.tracked_nonces,
            "throttle pairs": len(getattr(svc.root.registrar.throttle, "_failures", {})),
            "user cache": len(getattr(svc.root.store.users, "_cache", {})),
            "trunk cache": len(getattr(svc.root.calls, "_trunk_of", {})),
        }
        print("tables:", sizes)
        print("most common tracked types:", tracked_types())
        if args.tracemalloc and start_snapshot is not None:
            snapshot = tracemalloc.take_snapshot()
            for stat in snapshot.compare_to(start_snapshot, "lineno")[:12]:
                print("  ", stat)
        gc.unfreeze()
        live = Counter(type(o).__name__ for o in gc.get_objects())
        print("tracked after the flood (unfrozen): %d; most common %s" % (
            sum(live.values()), live.most_common(8)))
        gc.set_debug(gc.DEBUG_SAVEALL)
        found = gc.collect()
        garbage = Counter(type(o).__name__ for o in gc.garbage)
        print("cyclic garbage by type:", garbage.most_common(10))
        gc.garbage.clear()
        gc.set_debug(0)
        gc.collect()
        gc.freeze()
        collected = rss_kib()
        print("after a full collection (%d unreachable objects): RSS %d KiB, gc-tracked %d"
              % (found, collected, len(gc.get_objects())))
        trimmed = malloc_trim()
        final = rss_kib()
        print("pymalloc after trim:", arenas())
        print("after malloc_trim (%s): RSS %d KiB" % ("released" if trimmed else "nothing",
                                                     final))
        grew = (final - before) / before * 100
        print("summary: before %d KiB, flood peak %d KiB, 64 s after %d KiB, after collect %d "
              "KiB, after trim %d KiB (%+.1f %% of before)" % (
                  before, peak, after, collected, final, grew))
        svc.close()
        return 0 if grew <= 10 else 1


if __name__ == "__main__":
    sys.exit(main())
