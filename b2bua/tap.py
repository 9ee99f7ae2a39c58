"""Start-up glue for twistd: options, config loading, clean start-up errors.

A configuration problem must stop start-up with one line naming the key and
the file, never a traceback, so both entry points (the twistd plugin and
``twistd.tac``) go through :func:`make_service_from_path`.
"""

from __future__ import annotations

import os
import sys

from twisted.application.service import IServiceMaker, MultiService
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer

DEFAULT_CONFIG = os.path.join("etc", "b2bua.toml")


class Options(usage.Options):
    """``twistd b2bua --config FILE``."""

    optParameters = [
        ["config", "c", None,
         "Path to the TOML configuration file (default: $B2BUA_CONFIG or etc/b2bua.toml)."],
    ]

    def postOptions(self) -> None:  # noqa: N802
        if not self["config"]:
            self["config"] = os.environ.get("B2BUA_CONFIG") or DEFAULT_CONFIG


class StartupError(SystemExit):
    """Stops twistd with a one-line message and exit status 1."""

    def __init__(self, message: str) -> None:
        sys.stderr.write(f"b2bua: {message}\n")
        sys.stderr.flush()
        super().__init__(1)


class CleanStart(MultiService):
    """The top of the tree twistd starts: a listener that cannot be bound
    (port in use, address not on this host) stops start-up with one logged
    line, the same line on the real stderr, and exit status 1 -- not a
    traceback from inside twistd."""

    log = Logger()

    def startService(self) -> None:  # noqa: N802
        from b2bua.transport.network import ListenError

        try:
            super().startService()  # type: ignore[no-untyped-call]
        except ListenError as exc:
            self.log.critical("b2bua: {error}", error=str(exc))
            stderr = sys.__stderr__ or sys.stderr  # twistd redirects sys.stderr to the log
            stderr.write(f"b2bua: {exc}\n")
            stderr.flush()
            raise SystemExit(1) from None


def make_service_from_path(path: str) -> MultiService:
    """Load and validate the config at ``path``, then build the service tree
    (under a :class:`CleanStart`)."""
    from b2bua.config import ConfigError, load_config
    from b2bua.service import ServiceBuildError, make_service

    try:
        config = load_config(path)
    except ConfigError as exc:
        raise StartupError(str(exc)) from None
    try:
        root = make_service(config)
    except (ConfigError, ServiceBuildError) as exc:
        raise StartupError(str(exc)) from None
    top = CleanStart()  # type: ignore[no-untyped-call]
    root.setServiceParent(top)  # type: ignore[no-untyped-call]
    return top


@implementer(IServiceMaker, IPlugin)
class B2buaServiceMaker:
    tapname = "b2bua"
    description = "SIP back-to-back user agent with push wake-up."
    options = Options

    def makeService(self, options: Options) -> MultiService:  # noqa: N802
        return make_service_from_path(options["config"])
