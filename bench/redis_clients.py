"""Which Redis client for the binding writer: txredisapi (Twisted-native) or redis-py in a thread.

Starts a throwaway redis-server on a free loopback port and, for each client, writes N bindings
the way the cluster store does (a MULTI per batch: HSET the binding, ZADD its expiry, SADD its
AOR index, PUBLISH the change) in batches of B, as the registrar's flush does, and measures
wall time and the CPU time spent on the reactor's thread (what REGISTERs wait behind).

    python bench/redis_clients.py [N] [B]
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from twisted.internet import defer, reactor, threads


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis() -> tuple[subprocess.Popen[bytes], int, str]:
    port = free_port()
    tmp = tempfile.mkdtemp()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--dir", tmp],
                            stdout=subprocess.DEVNULL)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, port, tmp
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("redis-server did not start")


def rows(n: int) -> list[tuple[str, str, str, float]]:
    return [(f"b2bua:binding:{i}", f"sip:{i}@example.com", json.dumps(
        {"contact": f"sip:{i}@127.0.0.1:5060", "push_token": "x" * 64, "node": "a"}),
        1e9 + i) for i in range(n)]


def thread_cpu() -> float:
    return time.thread_time()


@defer.inlineCallbacks
def run_redis_py(port: int, data: list, batch: int) -> defer.Deferred:
    import redis
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)
    reactor.suggestThreadPoolSize(2)

    def write(chunk: list) -> None:
        pipe = client.pipeline(transaction=True)
        for key, aor, value, score in chunk:
            pipe.hset(key, "b", value)
            pipe.zadd("b2bua:gone", {key: score})
            pipe.sadd("b2bua:aor:" + aor, key)
        pipe.publish("b2bua:changes", "x" * 200)
        pipe.execute()

    cpu0, t0 = thread_cpu(), time.perf_counter()
    for i in range(0, len(data), batch):
        yield threads.deferToThread(write, data[i:i + batch])
    return time.perf_counter() - t0, thread_cpu() - cpu0


@defer.inlineCallbacks
def run_txredisapi(port: int, data: list, batch: int) -> defer.Deferred:
    import txredisapi
    conn = yield txredisapi.Connection("127.0.0.1", port, reconnect=False)
    cpu0, t0 = thread_cpu(), time.perf_counter()
    for i in range(0, len(data), batch):
        tx = yield conn.multi()
        for key, aor, value, score in data[i:i + batch]:
            tx.hset(key, "b", value)
            tx.zadd("b2bua:gone", score, key)
            tx.sadd("b2bua:aor:" + aor, key)
        tx.publish("b2bua:changes", "x" * 200)
        yield tx.commit()
    result = time.perf_counter() - t0, thread_cpu() - cpu0
    yield conn.disconnect()
    return result


@defer.inlineCallbacks
def main(n: int, batch: int) -> defer.Deferred:
    proc, port, tmp = start_redis()
    try:
        data = rows(n)
        for name, fn in (("redis-py in a thread", run_redis_py), ("txredisapi", run_txredisapi)):
            wall, cpu = yield fn(port, data, batch)
            print(f"{name:22s} {n} bindings in batches of {batch}: {n / wall:8.0f}/s wall, "
                  f"reactor thread CPU {cpu / n * 1e6:6.1f} us per binding")
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)
        reactor.stop()


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    b = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    reactor.callWhenRunning(main, n, b)
    reactor.run()
