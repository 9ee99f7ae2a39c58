"""What every `b2bua-admin` command shares: its error, the config and the database,
and how results are printed.

Its own module so that the command modules (``admin_calls``, ``admin_check``,
``admin_push``) and ``admin`` import it rather than each other: ``python -m
b2bua.admin`` and the commands then raise and catch the same ``AdminError``.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from b2bua.config import Config, ConfigError, load_config
from b2bua.store import Store, StoreError, normalise_aor

__all__ = ["DEFAULT_CONFIG", "AdminError", "load", "open_store", "print_json", "span", "table",
           "user_aor", "when"]

DEFAULT_CONFIG = os.path.join("etc", "b2bua.toml")
_USER = re.compile(r"^[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+$")  # RFC 3261 user part, unescaped


class AdminError(Exception):
    """A failure to report as one line on stderr (exit 1)."""


# -- helpers ----------------------------------------------------------------------------


def load(path: str) -> Config:
    try:
        return load_config(path)
    except ConfigError as error:
        raise AdminError(str(error)) from None


@contextmanager
def open_store(config: Config, create: bool = False) -> Iterator[Store]:
    """The service's database; only `create` commands may make a new one."""
    if config.database.url:
        yield from _open_cluster_store(config)
        return
    path = config.database.path
    if str(path) == ":memory:":
        raise AdminError(f"{config.path}: database.path is :memory:; there is nothing to administer")
    if not path.exists():
        if not create:
            raise AdminError(f"no database at {path} yet (the service or `user add` creates it)")
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        store = Store.open(path)
    except (StoreError, sqlite3.Error, OSError) as error:
        raise AdminError(f"database {path}: {error}") from None
    try:
        yield store
    except sqlite3.Error as error:
        raise AdminError(f"database {path}: {error}") from None
    finally:
        store.close()


def _open_cluster_store(config: Config) -> Iterator[Any]:
    """Cluster mode: users, bindings and messages in the shared Redis, from any node's config
    (CDRs are this node's file)."""
    from b2bua.store.redis_client import StoreUnavailable
    from b2bua.store.redis_cluster import open_cluster_store
    try:
        store = open_cluster_store(config.database.url, config.database.path,
                                   config.cluster.node, config.push.token_lifetime)
    except Exception as error:
        raise AdminError(f"database.url {config.database.url}: {error}") from None
    try:
        yield store
    except (StoreUnavailable, sqlite3.Error) as error:
        raise AdminError(f"database: {error}") from None
    finally:
        store.close()


def _check_name(name: str) -> str:
    if not _USER.match(name):
        raise AdminError(f"{name!r} is not a valid SIP user name")
    return name


def user_aor(config: Config, name: str) -> str:
    """AOR of a user name (or of a SIP URI given as is)."""
    try:
        if name.lower().startswith(("sip:", "sips:")):
            return normalise_aor(name)
        return normalise_aor(f"sip:{_check_name(name)}@{config.sip.domain}")
    except ValueError as error:
        raise AdminError(str(error)) from None


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        try:
            password = getpass.getpass("Password: ")
            if password != getpass.getpass("Password (again): "):
                raise AdminError("the passwords do not match")
        except EOFError:
            raise AdminError("no password given (use --password-stdin to pipe one)") from None
    if not password:
        raise AdminError("the password must not be empty")
    return password


def print_json(document: Any) -> None:
    print(json.dumps(document, indent=2, ensure_ascii=False))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                     for row in [headers, *rows])


def when(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch)) if epoch else "-"


def span(seconds: float | None) -> str:
    """12s, 4m05s, 2h03m."""
    if seconds is None:
        return "-"
    whole = max(0, int(round(seconds)))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
