"""`b2bua-admin calls`: the active calls, read from the running service's /status.

The calls live only in the service's memory, so the tool asks the service over HTTP on the
metrics listener (`[metrics] listen`, a Twisted endpoint string) rather than the database.
The document is ``{"calls": [...], "registrations": N, ...}``; each call has call_id, state,
from, to, caller, callee, started_at, answered_at and branches.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import time
import urllib.error
import urllib.request
from typing import Any

from b2bua.admin_common import AdminError, load, print_json, span, table, when
from b2bua.config import Config

__all__ = ["fetch_status", "run_calls", "run_trunks", "status_url"]


def _split_endpoint(text: str) -> tuple[str, list[str], dict[str, str]]:
    """A Twisted endpoint string: kind, positional and keyword arguments (``\\:`` escapes)."""
    parts: list[str] = []
    current, escaped = "", False
    for char in text:
        if escaped:
            current, escaped = current + char, False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts, current = parts + [current], ""
        else:
            current += char
    kind, *rest = parts + [current]
    positional = [p for p in rest if "=" not in p]
    keywords = dict(p.split("=", 1) for p in rest if "=" in p)
    return kind.lower(), positional, keywords


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def status_url(config: Config) -> str:
    """Where the service's /status is: ``http://HOST:PORT/status`` or ``unix:PATH``."""
    listen = config.metrics.listen
    if not listen:
        raise AdminError(f"{config.path}: metrics are off ([metrics] listen is not set), "
                         "so the running service cannot be asked for its calls")
    kind, positional, keywords = _split_endpoint(listen)
    try:
        if kind == "unix":
            return "unix:" + (keywords.get("address") or positional[0])
        if kind not in ("tcp", "tcp6"):
            raise AdminError(f"metrics.listen {listen!r}: only tcp: and unix: endpoints can be read")
        port = int(keywords.get("port") or positional[0])
    except (IndexError, ValueError):
        raise AdminError(f"metrics.listen {listen!r}: cannot tell the address") from None
    if port == 0:
        raise AdminError(f"metrics.listen {listen!r} uses port 0, so its port is unknown")
    host = keywords.get("interface") or (positional[1:] or [""])[0]
    # A wildcard listener is reached on loopback, of the listener's address family.
    wildcard = "::1" if kind == "tcp6" or ":" in host else "127.0.0.1"
    host = wildcard if host in ("", "0.0.0.0", "::") else host
    return "http://%s:%d/status" % (f"[{host}]" if ":" in host else host, port)


def _get(url: str, timeout: float) -> bytes:
    if not url.startswith("unix:"):
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body: bytes = response.read()
            return body
    connection = _UnixConnection(url[len("unix:"):], timeout)
    try:
        connection.request("GET", "/status")
        response = connection.getresponse()
        if response.status != 200:
            raise AdminError(f"{url}: HTTP {response.status} {response.reason}")
        return response.read()
    finally:
        connection.close()


def fetch_status(config: Config, timeout: float = 5.0) -> dict[str, Any]:
    """GET /status from the running service, on the metrics listener of `config`."""
    url = status_url(config)
    try:
        body = _get(url, timeout)
    except urllib.error.HTTPError as error:
        raise AdminError(f"{url}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", None) or error or type(error).__name__
        raise AdminError(f"cannot reach the service at {url} ({reason}); is b2bua running?") from None
    try:
        status = json.loads(body)
    except ValueError:
        raise AdminError(f"{url} did not answer JSON") from None
    if not isinstance(status, dict) or not isinstance(status.get("calls"), list):
        raise AdminError(f'{url} did not answer a document with a "calls" list')
    return status


def _epoch(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _call_row(call: dict[str, Any], now: float) -> list[str]:
    started, answered = _epoch(call.get("started_at")), _epoch(call.get("answered_at"))
    branches = call.get("branches")
    count = len(branches) if isinstance(branches, list) else branches
    return [str(call.get("call_id", "-")), str(call.get("state", "-")),
            str(call.get("from") or call.get("caller") or "-"),
            str(call.get("to") or call.get("callee") or "-"),
            when(started) if started else str(call.get("started_at") or "-"),
            span(now - answered) if answered else "-", str(count if count is not None else "-")]


def run_calls(args: argparse.Namespace) -> int:
    config = load(args.config)
    calls = [c for c in fetch_status(config)["calls"] if isinstance(c, dict)]
    if args.json:
        print_json(calls)
    elif calls:
        now = time.time()
        print(table(["CALL-ID", "STATE", "FROM", "TO", "STARTED", "TALKING", "BRANCHES"],
                     [_call_row(c, now) for c in calls]))
    else:
        print("no active calls")
    return 0


def run_trunks(args: argparse.Namespace) -> int:
    """`b2bua-admin trunks`: each trunk's registration state and last failure (from /status)."""
    config = load(args.config)
    trunks = [t for t in fetch_status(config).get("trunks") or [] if isinstance(t, dict)]
    if args.json:
        print_json(trunks)
        return 0
    if not trunks:
        print("no trunks")
        return 0
    now = time.time()
    rows = []
    for trunk in trunks:
        until = _epoch(trunk.get("registered_until"))
        state = trunk.get("registration") or "-"
        if state == "registered" and until:
            state += f" ({span(until - now)} left)"
        failed_at = _epoch(trunk.get("last_failure_at"))
        failure = trunk.get("last_failure") or "-"
        if failed_at:
            failure = f"{when(failed_at)} {failure}"
        rows.append([str(trunk.get("name")), str(trunk.get("uri")), state,
                     str(trunk.get("failures", 0)), failure])
    print(table(["TRUNK", "URI", "REGISTRATION", "FAILURES", "LAST FAILURE"], rows))
    return 0
