"""The typed configuration the rest of the B2BUA reads, and the reader that enforces it.

The frozen dataclasses are the schema: their field names are the TOML keys (`keys_of`).
`Table` reads one TOML table with typed getters that know the key path, so every error can
name it. Secrets (passwords, plugin options) are excluded from ``repr()`` so a logged or
printed config never shows them. `b2bua.config.load_config` puts the two together.
"""

from __future__ import annotations

from b2bua.media.tone import TONES

import difflib
import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from twisted.logger import LogLevel

Transport = Literal["udp", "tcp", "tls"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

TRANSPORTS: tuple[str, ...] = ("udp", "tcp", "tls")
DEFAULT_PORTS: Mapping[str, int] = {"udp": 5060, "tcp": 5060, "tls": 5061}
#: Ringback tone plans the media layer knows (ITU-T E.180 cadences).
TONE_COUNTRIES: tuple[str, ...] = tuple(sorted(TONES))  # the cadences b2bua.media.tone knows
#: Digest algorithms we can verify: the store keeps an HA1 for each (b2bua.store.users).
DIGEST_ALGORITHMS: tuple[str, ...] = ("MD5", "SHA-256")
#: APNs endpoints by name; anything else must be an https URL.
APNS_ENDPOINTS: Mapping[str, tuple[str, int]] = {
    "production": ("api.push.apple.com", 443),
    "sandbox": ("api.sandbox.push.apple.com", 443),
}

_LISTEN = re.compile(r"^(?P<transport>[A-Za-z]+):(?:\[(?P<v6>[^\]]*)\]|(?P<host>[^:\[\]]*))"
                     r"(?::(?P<port>[^:]*))?$")


class ConfigError(Exception):
    """The configuration cannot be used; the message names the file and the key at fault.

    Values are never part of the message for secret keys, so it can be logged as is.
    """

    def __init__(self, file: str | Path, key: str | None, reason: str) -> None:
        self.file = str(file)
        self.key = key
        self.reason = reason
        where = f"{self.file}: {key}" if key else self.file
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class ListenAddress:
    """One SIP listener, written ``transport:host:port`` (IPv6 hosts in brackets)."""

    transport: Transport
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> ListenAddress:
        """Parse ``udp:127.0.0.1:5060``, ``tcp:[::1]:5060`` or ``tls:0.0.0.0`` (default port).

        Raises ValueError whose message says what is wrong (without the text itself).
        """
        match = _LISTEN.match(text.strip())
        if match is None:
            raise ValueError("expected TRANSPORT:ADDRESS:PORT, e.g. udp:127.0.0.1:5060 or tcp:[::1]:5060")
        transport = match["transport"].lower()
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of udp, tcp, tls, not {match['transport']!r}")
        host = match["v6"] if match["v6"] is not None else match["host"]
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IP address (IPv6 goes in brackets)") from None
        if match["v6"] is not None and address.version != 6:
            raise ValueError(f"brackets are for IPv6 addresses only, not {host!r}")
        if match["port"] is None:
            port = DEFAULT_PORTS[transport]
        else:
            if not match["port"].isdigit():
                raise ValueError(f"port {match['port']!r} is not a number")
            port = int(match["port"])
            if not 0 <= port <= 65535:
                raise ValueError(f"port {port} is out of range 0-65535")
        return cls(transport=transport, host=str(address), port=port)  # type: ignore[arg-type]

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


@dataclass(frozen=True)
class SipConfig:
    """The served domain, the listeners and the RFC 3261 knobs."""

    domain: str = "localhost"
    listen: tuple[ListenAddress, ...] = (
        ListenAddress("udp", "127.0.0.1", 5060),
        ListenAddress("tcp", "127.0.0.1", 5060),
    )
    aliases: tuple[str, ...] = ()
    advertised_address: str | None = None
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    max_message_size: int = 65535
    user_agent: str = "b2bua"
    max_forwards: int = 70

    @property
    def realm(self) -> str:
        """The digest realm is the domain (CONTRACT.md)."""
        return self.domain


@dataclass(frozen=True)
class TlsConfig:
    """Server certificate chain and key for ``tls:`` listeners (PEM files)."""

    certificate: Path
    private_key: Path


@dataclass(frozen=True)
class DatabaseConfig:
    """Where the SQLite file lives; ``:memory:`` is kept as is (tests).

    ``url`` (``redis://HOST:PORT/DB``) is cluster mode: users, bindings and stored
    messages live in Redis, shared by every node; ``path`` then keeps only this
    node's CDRs."""

    path: Path
    url: str = ""


@dataclass(frozen=True)
class ClusterConfig:
    """This node's unique name among the nodes sharing ``database.url``."""

    node: str = ""


@dataclass(frozen=True)
class RegistrarConfig:
    """REGISTER limits (seconds) and digest-auth guards."""

    min_expires: int = 60
    max_expires: int = 86400
    default_expires: int = 3600
    nonce_ttl: int = 300
    auth_failures_limit: int = 5
    auth_block_time: int = 300
    #: Digest challenges offered in 401/407, most preferred first (RFC 8760 §2.4).
    digest_algorithms: tuple[str, ...] = ("MD5",)


@dataclass(frozen=True)
class UserEntry:
    """A user created at start if missing."""

    name: str
    password: str = field(repr=False)
    display_name: str | None = None


@dataclass(frozen=True)
class PushConfig:
    """How a call waits for a phone woken by push."""

    wake_timeout: float = 30.0
    ringback: Literal["180", "183"] = "180"
    call_ended_push: bool = False
    token_lifetime: float = 2592000.0
    """Seconds a device's push token outlives its contact's expiry (30 days)."""
    message_lifetime: float = 604800.0
    """Seconds a stored MESSAGE waits for its phone (7 days)."""
    max_message_size: int = 16384
    """Largest MESSAGE body accepted, in bytes (413 above)."""
    max_stored_messages: int = 100
    """Messages kept per user at most (480 once full)."""
    max_stored_bytes: int = 1048576
    """Body bytes kept per user at most (480 once full)."""


@dataclass(frozen=True)
class ApnsConfig:
    """Apple Push Notification service client; when disabled the other fields are unchecked."""

    enabled: bool = False
    auth: Literal["token", "certificate"] = "token"
    key_file: Path | None = None
    key_id: str = ""
    team_id: str = ""
    certificate: Path | None = None
    endpoint: str = "production"
    ca_file: Path | None = None
    timeout: float = 10.0
    ping_interval: float = 60.0
    sandbox_endpoint: str = ""  # "sandbox" or a URL: serves RFC 8599 pn-provider=apns.dev phones

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) of the endpoint: a named one or the URL given."""
        if self.endpoint in APNS_ENDPOINTS:
            return APNS_ENDPOINTS[self.endpoint]
        return parse_https_url(self.endpoint)


@dataclass(frozen=True)
class FcmConfig:
    """Firebase Cloud Messaging HTTP v1 client (Android phones); unchecked when disabled."""

    enabled: bool = False
    service_account: Path | None = None  # Google's service-account JSON key file
    endpoint: str = "https://fcm.googleapis.com"
    ca_file: Path | None = None  # extra trust roots, for the endpoint and the key's token_uri


@dataclass(frozen=True)
class TrunkConfig:
    """A carrier: where to send calls, whom to accept calls from, optional registration."""

    name: str
    uri: str
    accept_from: tuple[Network, ...] = ()
    username: str = ""
    password: str = field(default="", repr=False)
    register: bool = False
    register_expires: int = 3600
    transport: Transport = "udp"
    #: The From user of calls from local users: their caller number, or `username`.
    from_user: Literal["caller_id", "account"] = "caller_id"
    #: Whether From/P-Asserted-Identity carry the user's configured display name.
    send_display_name: bool = True
    #: Extra trust roots (PEM) for a TLS trunk's certificate, checked against the URI's host.
    ca_file: Path | None = None

    def accepts(self, address: str) -> bool:
        """True when a request from this IP address comes from this trunk."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.accept_from)


@dataclass(frozen=True)
class DnsConfig:
    """Where trunk host names are looked up (RFC 3263: NAPTR, SRV, A/AAAA)."""

    #: (IP, port) name servers; empty: the system's (/etc/resolv.conf, /etc/hosts).
    servers: tuple[tuple[str, int], ...] = ()
    #: Seconds an answer is kept at least (a TTL of 0 would mean one query per call).
    min_ttl: float = 5.0


@dataclass(frozen=True)
class RouterEntry:
    """One router in the chain: the plugin name and its own options (the rest of the table)."""

    plugin: str
    options: Mapping[str, Any] = field(default_factory=dict)
    #: Seconds the router may take to decide; then the caller gets 503.
    timeout: float = 2.0

    def __repr__(self) -> str:
        # Option values may be secrets (API tokens); show only their names.
        return (f"RouterEntry(plugin={self.plugin!r}, options=<{', '.join(sorted(self.options))}>, "
                f"timeout={self.timeout!r})")


def _loopback() -> tuple[Network, ...]:
    return (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@dataclass(frozen=True)
class MetricsConfig:
    """The /metrics and /status HTTP endpoint (a Twisted endpoint string) and who may read it."""

    listen: str | None = None
    allow: tuple[Network, ...] = field(default_factory=_loopback)


@dataclass(frozen=True)
class LogConfig:
    """Minimum level and line format of the log."""

    level: str = "info"
    format: Literal["text", "json"] = "text"

    @property
    def log_level(self) -> LogLevel:
        level: LogLevel = LogLevel.levelWithName(self.level)
        return level


@dataclass(frozen=True)
class CallsConfig:
    """Call timers, seconds; 0 for max_duration means unlimited."""

    ring_timeout: float = 120.0
    max_duration: float = 3 * 3600.0
    timer_c: float = 180.0
    drain_time: float = 30.0


@dataclass(frozen=True)
class MediaConfig:
    """RTP: the ringback tone for 183 and optional media relay."""

    enabled: bool = True
    country: str = "us"
    rtp_port_min: int = 20000
    rtp_port_max: int = 20999
    relay: bool = False
    bind_address: str | None = None
    advertised_address: str | None = None
    rtp_timeout: float = 0.0             # seconds without RTP before a relayed call ends; 0 = off
    engine: str = "builtin"              # or "rtpengine"
    rtpengine: str = "udp:127.0.0.1:2223"  # its ng control socket, with engine = "rtpengine"

    @property
    def rtp_ports(self) -> range:
        """The RTP port range, both ends included."""
        return range(self.rtp_port_min, self.rtp_port_max + 1)


@dataclass(frozen=True)
class Config:
    """The whole validated configuration; ``path`` is the file it came from."""

    path: Path
    sip: SipConfig
    tls: TlsConfig | None
    database: DatabaseConfig
    registrar: RegistrarConfig
    users: tuple[UserEntry, ...]
    push: PushConfig
    apns: ApnsConfig
    trunks: tuple[TrunkConfig, ...]
    routers: tuple[RouterEntry, ...]
    metrics: MetricsConfig
    log: LogConfig
    calls: CallsConfig
    media: MediaConfig
    fcm: FcmConfig = FcmConfig()
    dns: DnsConfig = field(default_factory=lambda: DnsConfig())
    cluster: ClusterConfig = ClusterConfig()

    @property
    def base_dir(self) -> Path:
        """The folder relative paths are taken from (plugins resolve their own paths here)."""
        return self.path.parent

    def trunk(self, name: str) -> TrunkConfig | None:
        return next((trunk for trunk in self.trunks if trunk.name == name), None)


def parse_https_url(url: str) -> tuple[str, int]:
    """``https://host[:port][/]`` -> (host, port); ValueError otherwise."""
    match = re.fullmatch(r"https://(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:/\[\]]+))(?::(?P<port>\d+))?/?", url)
    if match is None:
        raise ValueError("expected 'production', 'sandbox' or a URL like https://127.0.0.1:2197")
    port = int(match["port"] or 443)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 1-65535")
    return (match["v6"] or match["host"], port)


# --- Reading TOML tables against the schema --------------------------------------------------

_ENV = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def _kind(value: object) -> str:
    """TOML's word for the type of a parsed value, for messages that must not show the value."""
    if isinstance(value, bool):
        return "a boolean"
    for kind, word in ((str, "a string"), (int, "an integer"), (float, "a number"),
                       (list, "an array"), (dict, "a table")):
        if isinstance(value, kind):
            return word
    return "a date/time"


@dataclass(frozen=True)
class ConfigContext:
    """What every table needs: the file (for messages and relative paths) and the environment."""

    file: Path
    environ: Mapping[str, str]


class Table:
    """One TOML table being read: typed getters that know the key path, and a check for leftovers.

    With ``strict`` false (a disabled section) an unset ``${NAME}`` reads as "" and named files
    are not checked, so a disabled [apns] may mention variables that are not set.
    """

    def __init__(self, ctx: ConfigContext, data: Mapping[str, Any], path: str,
                 keys: Iterable[str] | None = None) -> None:
        self.ctx = ctx
        self.strict = True
        self._data = data
        self._path = path
        self._seen: set[str] = set()
        if keys is not None:
            self._reject_unknown(frozenset(keys))

    def key(self, name: str) -> str:
        return f"{self._path}.{name}" if self._path else name

    def error(self, name: str, reason: str, relative: bool = True) -> ConfigError:
        return ConfigError(self.ctx.file, self.key(name) if relative else name, reason)

    def has(self, name: str) -> bool:
        return name in self._data

    def raw(self, name: str) -> Any:
        """The value with ``${NAME}`` substituted, or None when the key is absent."""
        self._seen.add(name)
        if name not in self._data:
            return None
        return self._expand(self._data[name], self.key(name))

    def _expand(self, value: Any, key: str) -> Any:
        if isinstance(value, str):
            match = _ENV.match(value)
            if match is None:
                return value
            if match[1] in self.ctx.environ:
                return self.ctx.environ[match[1]]
            if not self.strict:
                return ""
            raise ConfigError(self.ctx.file, key, f"environment variable {match[1]} is not set")
        if isinstance(value, list):
            return [self._expand(item, f"{key}[{index}]") for index, item in enumerate(value)]
        if isinstance(value, dict):
            return {name: self._expand(item, f"{key}.{name}") for name, item in value.items()}
        return value

    def _typed(self, name: str, default: Any, kinds: tuple[type, ...], what: str) -> Any:
        value = self.raw(name)
        if value is None:
            if default is None:
                raise self.error(name, "required")
            return default
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise self.error(name, f"expected {what}, got {_kind(value)}")
        return value

    def string(self, name: str, default: str | None) -> str:
        """A string; `default` None makes the key required."""
        return str(self._typed(name, default, (str,), "a string"))

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.string(name, default).lower()
        if value not in choices:
            raise self.error(name, f"must be one of {', '.join(repr(c) for c in choices)}, not {value!r}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        return bool(self._typed(name, default, (bool,), "true or false"))

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = int(self._typed(name, default, (int,), "an integer"))
        if not low <= value <= high:
            raise self.error(name, f"{value} is out of range {low}-{high}")
        return value

    def seconds(self, name: str, default: float, low: float, high: float = 10.0 * 365 * 86400) -> float:
        """A duration in seconds, integer or decimal."""
        value = float(self._typed(name, default, (int, float), "a number of seconds"))
        if not value >= low:  # also catches nan
            raise self.error(name, f"must be at least {low:g} seconds, not {value:g}")
        if value > high:
            raise self.error(name, f"must be at most {high:.0f} seconds, not {value:g}")
        return value

    def string_list(self, name: str, default: list[str]) -> list[tuple[str, str]]:
        """(key path, string) pairs; a lone string counts as a one-item list."""
        value = self.raw(name)
        if value is None:
            value = default
        elif isinstance(value, str):
            return [(self.key(name), value)]
        elif not isinstance(value, list):
            raise self.error(name, f"expected an array of strings, got {_kind(value)}")
        items = []
        for index, item in enumerate(value):
            key = f"{self.key(name)}[{index}]"
            if not isinstance(item, str):
                raise ConfigError(self.ctx.file, key, f"expected a string, got {_kind(item)}")
            items.append((key, item))
        return items

    def path(self, name: str, must_exist: bool) -> Path | None:
        """An optional file path, relative ones taken from the config file's folder; "" means none."""
        text = self.string(name, "")
        return self.resolve(name, text, must_exist) if text else None

    def required_path(self, name: str, must_exist: bool) -> Path:
        text = self.string(name, None)
        if not text:
            raise self.error(name, "required")
        return self.resolve(name, text, must_exist)

    def resolve(self, name: str, text: str, must_exist: bool) -> Path:
        if "\n" in text or "-----BEGIN" in text:
            raise self.error(name, "expected a file path, got what looks like key material "
                                   "(put it in a file)")
        path = Path(text).expanduser()
        if not path.is_absolute():
            path = self.ctx.file.parent / path
        path = Path(os.path.normpath(path))
        if must_exist and self.strict:
            if not path.exists():
                raise self.error(name, f"file not found: {path}")
            if not path.is_file():
                raise self.error(name, f"not a file: {path}")
            if not os.access(path, os.R_OK):
                raise self.error(name, f"file not readable: {path}")
        return path

    def table(self, name: str, keys: Iterable[str] | None) -> Table:
        """A sub-table ([name]) allowed only `keys` (None: any); absent reads as empty."""
        self._seen.add(name)
        value = self._data.get(name, {})
        if not isinstance(value, dict):
            raise self.error(name, f"expected a table ([{self.key(name)}]), got {_kind(value)}")
        return Table(self.ctx, value, self.key(name), keys)

    def tables(self, name: str, keys: Iterable[str] | None) -> list[Table]:
        """An array of tables ([[name]]), each allowed only `keys` (None: any); absent reads as empty."""
        self._seen.add(name)
        value = self._data.get(name, [])
        if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
            raise self.error(name, f"expected an array of tables ([[{self.key(name)}]]), got {_kind(value)}")
        return [Table(self.ctx, item, f"{self.key(name)}[{index}]", keys) for index, item in enumerate(value)]

    def rest(self) -> dict[str, Any]:
        """Every key not read yet, substituted (a router's plugin options)."""
        names = [name for name in self._data if name not in self._seen]
        return {name: self.raw(name) for name in names}

    def _reject_unknown(self, keys: frozenset[str]) -> None:
        """Stop on the first key not in `keys`: a typo must not silently fall back to a default."""
        for name in self._data:
            if name not in keys:
                close = difflib.get_close_matches(name, sorted(keys), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise self.error(name, f"unknown key{hint}")


def keys_of(schema: type, *extra: str, without: tuple[str, ...] = ()) -> frozenset[str]:
    """The TOML keys of a section: its dataclass's field names (one source of truth)."""
    return frozenset(f.name for f in fields(schema) if f.name not in without) | set(extra)
