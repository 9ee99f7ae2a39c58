"""Start-up glue for twistd: options, config loading, clean start-up errors.

A configuration problem must stop start-up with one line naming the key and
the file, never a traceback, so both entry points (the twistd plugin and
``twistd.tac``) go through :func:`make_service_from_path`.
"""

from __future__ import annotations

import os
import sys

from twisted.application.service import IServiceMaker, MultiService
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


def make_service_from_path(path: str) -> MultiService:
    """Load and validate the config at ``path``, then build the service tree."""
    from b2bua.config import ConfigError, load_config
    from b2bua.service import ServiceBuildError, make_service

    try:
        config = load_config(path)
    except ConfigError as exc:
        raise StartupError(str(exc)) from None
    try:
        return make_service(config)
    except (ConfigError, ServiceBuildError) as exc:
        raise StartupError(str(exc)) from None


@implementer(IServiceMaker, IPlugin)
class B2buaServiceMaker:
    tapname = "b2bua"
    description = "SIP back-to-back user agent with push wake-up."
    options = Options

    def makeService(self, options: Options) -> MultiService:  # noqa: N802
        return make_service_from_path(options["config"])
