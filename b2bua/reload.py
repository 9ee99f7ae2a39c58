"""SIGHUP: apply a changed config file to new calls, all of it or nothing.

The new file is read and validated, and everything that depends on it (router chain, TLS
client roots, caller-ID policy, call settings) is built before anything is swapped in; any
fault refuses the whole file with one log line naming the key, and the running configuration
stays. Calls in progress keep the `CallServices` (settings, trunk credentials) they started
with: new calls get a new one. Sections that only a restart can change (listeners, TLS server
certificate, database, metrics, DNS, push providers, media) are named in a warning and left
as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from b2bua.config import Config, ConfigError, load_config
from b2bua.logs import Logger

#: Config sections a reload cannot apply (sockets, files and clients built at start).
RESTART_ONLY = ("sip", "tls", "database", "metrics", "dns", "apns", "media", "registrar", "log")


@dataclass
class ReloadParts:
    """What a reload builds from a config (each may raise with a message naming the key)."""

    chain: Callable[[Config], Any]                 # router chain
    client_tls: Callable[[Config], Any]            # network.client_tls_options
    caller_id: Callable[[Config], Any]             # CallerIdPolicy
    call_settings: Callable[[Config], Any]         # CallSettings
    trunk_credentials: Callable[[Config], dict[str, Any]]
    create_users: Callable[[Config], None]         # [[users]] missing from the store
    registration: Callable[[Any], Any]             # trunk -> a started TrunkRegistration


class Reloader:
    """Holds the running config and swaps in a new one (see the module docstring)."""

    log = Logger()

    def __init__(self, root: Any, chain_holder: Any, parts: ReloadParts) -> None:
        self.root = root
        self.chain_holder = chain_holder
        self.parts = parts

    def reload(self) -> bool:
        """Apply the config file again; False (and a log line) when it is refused."""
        old: Config = self.root.config
        try:
            new = load_config(old.path)
            chain = self.parts.chain(new)
            client_tls = self.parts.client_tls(new)
            caller_id = self.parts.caller_id(new)
            settings = self.parts.call_settings(new)
            credentials = self.parts.trunk_credentials(new)
        except ConfigError as error:     # names the file and the key
            self.log.error("reload refused, keeping the running configuration: {error}",
                           error=str(error))
            return False
        except Exception as error:  # noqa: BLE001 (a broken plugin, a bad ca_file: named)
            self.log.error("reload refused, keeping the running configuration: {error}",
                           error=str(error) or error.__class__.__name__)
            return False
        fixed = [name for name in RESTART_ONLY if getattr(old, name) != getattr(new, name)]
        if fixed:
            self.log.warn("reload: {sections} changed; these take effect at the next restart",  # noqa: G010
                          sections=", ".join(fixed))
        self._swap(new, chain, client_tls, caller_id, settings, credentials)
        try:
            self.parts.create_users(new)
        except Exception:  # noqa: BLE001 (the store's error: logged, the reload stands)
            self.log.failure("reload: creating [[users]] failed")
        self.log.info("reloaded {path}: {trunks} trunks, {routers} routers",
                      path=str(new.path), trunks=len(new.trunks), routers=len(new.routers))
        return True

    def _swap(self, new: Config, chain: Any, client_tls: Any, caller_id: Any, settings: Any,
              credentials: dict[str, Any]) -> None:
        """Everything at once, between two reactor events: no call sees half of it."""
        root = self.root
        calls = root.calls
        self.chain_holder.swap(chain)
        if calls is not None:
            calls.trunks = list(new.trunks)
            calls._trunk_of.clear()           # the accept_from cache
            calls.caller_id = caller_id
            calls.services = replace(calls.services, settings=settings,
                                     trunk_credentials=credentials)
        if root.network is not None:
            root.network.client_tls_options = client_tls
        status = root.trunk_status
        if status is not None:
            status.trunks = {t.name: t for t in new.trunks}
            self._registrations(status, {t.name: t for t in root.config.trunks}, new)
        root.config = new

    def _registrations(self, status: Any, old: dict[str, Any], new: Config) -> None:
        """Keep a registration whose trunk did not change; stop the others, start new ones."""
        wanted = {t.name: t for t in new.trunks if t.register}
        for name, registration in list(status.registrations.items()):
            if name not in wanted or old.get(name) != wanted[name]:
                registration.disownServiceParent()
                del status.registrations[name]
        for name, trunk in wanted.items():
            if name not in status.registrations:
                status.registrations[name] = self.parts.registration(trunk)
