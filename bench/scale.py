"""A big subscriber base, in process (issue 21): for each size, a database with
that many users and bindings is built, then the service is made from it as
``twistd`` makes it (``make_service``, which loads every binding), and this
prints the start time, the RSS the bindings add, /metrics scrape time,
/status time, a dead token's lookup, the expiry purge with nothing due, and
authenticated REGISTERs/s through the real endpoint, core and registrar.

    python bench/scale.py [--sizes 10000,100000] [--registers 3000]

The REGISTERs are refreshes of existing users' bindings, answered as the
service answers them (digest checked, binding committed in the batch).  Compare
sizes within one run: the host's speed varies (see README, Performance).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pytest  # noqa: E402  (MonkeyPatch, as the tests use it)
from prometheus_client import generate_latest  # noqa: E402

from b2bua.metrics import status_document  # noqa: E402
from b2bua.sip.addressing import Source  # noqa: E402
from b2bua.store import Store  # noqa: E402
from b2bua.store.bindings import Binding  # noqa: E402
from tests.fuzz_support import CONFIG, DOMAIN, Service  # noqa: E402

START = 1_800_000_000.0


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def populate(folder: Path, size: int) -> None:
    """``size`` users with one binding each (a push token on every other one)."""
    store = Store.open(folder / "b2bua.sqlite3")
    rows = [(str(100000 + n), hashlib.md5(f"{100000 + n}:{DOMAIN}:pw".encode()).hexdigest(),
             hashlib.sha256(f"{100000 + n}:{DOMAIN}:pw".encode()).hexdigest(), None, 1)
            for n in range(size)]
    store.users.import_rows(DOMAIN, rows)
    batch: list[Binding] = []
    for n in range(size):
        user = str(100000 + n)
        batch.append(Binding(
            aor=f"sip:{user}@{DOMAIN}", contact=f"sip:{user}@10.{n >> 16 & 255}.{n >> 8 & 255}."
            f"{n & 255}:5060", expires_at=START + 3600 + n % 600, updated_at=START, user=user,
            call_id=f"c{n}", cseq=1, source_transport="UDP", source_host="10.0.0.1",
            source_port=5060, local_host="127.0.0.1", local_port=5060, user_agent="bench",
            push_provider="i" if n % 2 else None, push_package="com.example" if n % 2 else None,
            push_topic="com.example.voip" if n % 2 else None,
            push_token=f"token{n:08d}" if n % 2 else None,
            push_source="x-mpush" if n % 2 else None))
        if len(batch) == 20000:
            store.bindings.write(batch)
            batch = []
    store.bindings.write(batch)
    store.close()


def timed(fn, repeat: int = 20) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return median(times) * 1000


REGISTER = ("REGISTER sip:%(domain)s SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK%(n)d"
            "\r\nFrom: <sip:%(user)s@%(domain)s>;tag=f%(n)d\r\nTo: <sip:%(user)s@%(domain)s>\r\n"
            "Call-ID: c%(n)d-b\r\nCSeq: %(cseq)d REGISTER\r\nMax-Forwards: 70\r\n"
            "Contact: <sip:%(user)s@10.0.0.1:5060>\r\nExpires: 3600\r\n%(auth)s"
            "Content-Length: 0\r\n\r\n")


def registers_per_second(svc: Service, size: int, count: int, round_: int) -> float:
    source = Source("UDP", ("10.0.0.1", 5060), ("127.0.0.1", 5060), None)
    users = [(n * 7919) % size for n in range(count)]
    answered = 0
    started, cpu = time.perf_counter(), time.process_time()
    for n, index in enumerate(users, round_ * 1_000_000):
        user = str(100000 + index)
        values = {"domain": DOMAIN, "user": user, "n": n, "cseq": 1, "auth": ""}
        [challenge] = svc.feed((REGISTER % values).encode(), source)
        nonce = re.search(rb'nonce="([0-9a-f]+)"', challenge.data).group(1).decode()  # type: ignore
        ha1 = hashlib.md5(f"{user}:{DOMAIN}:pw".encode()).hexdigest()
        ha2 = hashlib.md5(f"REGISTER:sip:{DOMAIN}".encode()).hexdigest()
        response = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
        values.update(cseq=2, n=n + 100_000_000, auth=(
            f'Authorization: Digest username="{user}", realm="{DOMAIN}", nonce="{nonce}", '
            f'uri="sip:{DOMAIN}", response="{response}"\r\n'))
        sent = svc.feed((REGISTER % values).encode(), source)
        answered += sum(1 for s in sent if s.data.startswith(b"SIP/2.0 200 "))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    if answered != count:
        raise SystemExit("only %d of %d REGISTERs got 200" % (answered, count))
    CPU_US.append(cpu / count * 1e6)
    return count / elapsed


CPU_US: list[float] = []   # CPU per REGISTER (challenge + authenticated) of each round


def measure(size: int, registers: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as name, pytest.MonkeyPatch.context() as patch:
        folder = Path(name)
        started = time.perf_counter()   # in a child: its memory must not be reused here
        subprocess.run([sys.executable, __file__, "--populate", name, str(size)], check=True)
        populate_s = time.perf_counter() - started
        gc.collect()
        before = rss_kib()
        started = time.perf_counter()
        svc = Service(folder, patch)
        start_s = time.perf_counter() - started
        svc.clock.advance(START - svc.clock.seconds())
        gc.collect()
        added = rss_kib() - before
        root = svc.root
        bindings = root.bindings
        assert bindings is not None
        figures = {
            "bindings": float(size), "populate s": populate_s, "start s": start_s,
            "RSS added MB": added / 1024, "KB/binding": added / max(size, 1),
            "/metrics ms": timed(lambda: generate_latest(root.metrics.registry)),
            "/status ms": timed(lambda: status_document(root)),
            "dead token ms": timed(lambda: bindings.list_for_push_token("token%08d" % (size - 1))),
            "purge ms": timed(lambda: bindings.purge_expired(START)),
            "REGISTER/s": max(registers_per_second(svc, size, registers, r) for r in range(3)),
            "REGISTER CPU us": min(CPU_US[-3:]),
        }
        svc.close()
        return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--registers", type=int, default=2000,
                        help="per round; the best of 3 rounds counts")
    parser.add_argument("--populate", nargs=2, metavar=("FOLDER", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.populate:
        populate(Path(args.populate[0]), int(args.populate[1]))
        return 0
    rows = [measure(int(size), args.registers) for size in args.sizes.split(",")]
    names = list(rows[0])
    print("  ".join("%14s" % name for name in names))
    for row in rows:
        print("  ".join("%14.3f" % row[name] if row[name] < 1000 else "%14.0f" % row[name]
                        for name in names))
    base = rows[0]["REGISTER/s"]
    print("REGISTER/s relative to %d bindings: %s" % (
        rows[0]["bindings"], ", ".join("%.0f%%" % (100 * r["REGISTER/s"] / base) for r in rows)))
    return 0


if __name__ == "__main__":
    _ = CONFIG
    sys.exit(main())
