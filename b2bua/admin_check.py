"""`b2bua-admin check-config`: refuse what start-up would refuse, without starting.

Beyond `load_config` (keys, types, values, files named), it builds what the service builds
from the config and can fail on: the router plugins (against a dummy context), the APNs
client (key or certificate files), the TLS certificate and key, and it checks that an
existing database is not from a newer release. Nothing is listened on, connected to or
written: the database, if any, is opened read-only.
"""

from __future__ import annotations

import argparse
import sqlite3

from twisted.internet import reactor
from twisted.internet.ssl import PrivateCertificate

from b2bua.admin_common import AdminError, load
from b2bua.admin_push import build_apns_client, build_fcm_client
from b2bua.config import Config
from b2bua.plugin_loader import PluginLoadError, load_routers
from b2bua.push import PushConfigError
from b2bua.routing import RouterContext, TrunkInfo
from b2bua.store.db import MIGRATIONS

__all__ = ["run_check_config"]


def run_check_config(args: argparse.Namespace) -> int:
    """Everything start-up would refuse, without opening a socket or the database."""
    config = load(args.file or args.config)
    context = RouterContext(
        domain=config.sip.domain, lookup_user=lambda name: False,
        trunks={t.name: TrunkInfo(t.name, t.uri) for t in config.trunks}, clock=reactor,
    )
    try:
        load_routers(config.routers, context, search_paths=[config.base_dir])
    except PluginLoadError as error:
        raise AdminError(f"{config.path}: {error}") from None
    try:
        build_apns_client(config, reactor)
        build_apns_client(config, reactor, sandbox=True)
        build_fcm_client(config, reactor)
    except PushConfigError as error:
        raise AdminError(f"{config.path}: {error}") from None
    _check_tls(config)
    _check_database(config)
    print(f"config OK: {config.path}")
    return 0


def _check_tls(config: Config) -> None:
    """The certificate and key must load together, as the TLS listener will load them."""
    if config.tls is None:
        return
    try:
        pem = config.tls.certificate.read_bytes() + b"\n" + config.tls.private_key.read_bytes()
        PrivateCertificate.loadPEM(pem)  # type: ignore[no-untyped-call]
    except Exception as error:  # any OpenSSL/OS failure means the listener cannot start
        raise AdminError(f"{config.path}: tls.certificate / tls.private_key: cannot load "
                         f"({type(error).__name__})") from None


def _check_database(config: Config) -> None:
    """An existing database must not come from a newer release; it is opened read-only."""
    path = config.database.path
    if str(path) == ":memory:" or not path.is_file():
        return
    try:
        with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
            version = 0
            if "schema_version" in tables:
                version = db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
    except sqlite3.Error as error:
        raise AdminError(f"{config.path}: database.path: {path}: {error}") from None
    if version > len(MIGRATIONS):
        raise AdminError(f"{config.path}: database.path: {path} has schema version {version}, "
                         f"newer than this release knows ({len(MIGRATIONS)})")
