"""Read and validate the TOML configuration file into `b2bua.config_schema` dataclasses.

Start-up must fail early and plainly: an unknown key, a wrong type or a bad value raises
`ConfigError` naming the file and the key path (``trunk[0].accept_from[1]``), never the value
of a secret. Relative paths are taken from the config file's folder; a string that is exactly
``${NAME}`` comes from the environment variable NAME.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, cast

from twisted.internet.endpoints import serverFromString

from b2bua.config_schema import (
    APNS_ENDPOINTS,
    DIGEST_ALGORITHMS,
    DnsConfig,
    TONE_COUNTRIES,
    TRANSPORTS,
    ApnsConfig,
    FcmConfig,
    CallsConfig,
    Config,
    ConfigContext,
    ConfigError,
    ClusterConfig,
    DatabaseConfig,
    ListenAddress,
    LogConfig,
    MediaConfig,
    MetricsConfig,
    Network,
    PushConfig,
    RegistrarConfig,
    RouterEntry,
    SipConfig,
    Table,
    TlsConfig,
    TrunkConfig,
    UserEntry,
    keys_of,
    parse_https_url,
)

__all__ = [
    "ApnsConfig", "CallsConfig", "FcmConfig", "Config", "ConfigError", "DatabaseConfig", "ListenAddress",
    "LogConfig", "MediaConfig", "MetricsConfig", "PushConfig", "RegistrarConfig", "RouterEntry",
    "SipConfig", "TlsConfig", "TrunkConfig", "UserEntry", "load_config", "parse_config",
]

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?$")
_USER = re.compile(r"^[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+$")  # RFC 3261 user part, unescaped
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_PLUGIN = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*(?::[A-Za-z_]\w*)?$", re.ASCII)
_SECTIONS = ("sip", "tls", "database", "registrar", "users", "push", "apns", "fcm", "trunk", "router",
             "cluster", "metrics", "log", "calls", "media", "dns")
_SIP_URI = re.compile(r"(?i)(?P<scheme>sips?):(?:(?P<userinfo>[^@;]*)@)?"
                      r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^:;\[\]@]+)(?::(?P<port>\d+))?(?P<params>;.*)?")
_LOG_LEVELS = {"debug": "debug", "info": "info", "warn": "warn", "warning": "warn",
               "error": "error", "critical": "critical"}
_DEFAULT_DATABASE = "../var/b2bua.sqlite3"


def load_config(path: str | Path, environ: Mapping[str, str] | None = None) -> Config:
    """Read, parse and validate the config file; `environ` defaults to ``os.environ``."""
    path = Path(path).expanduser().absolute()
    try:
        with path.open("rb") as stream:
            data = tomllib.load(stream)
    except FileNotFoundError:
        raise ConfigError(path, None, "config file not found") from None
    except IsADirectoryError:
        raise ConfigError(path, None, "config file is a directory") from None
    except PermissionError:
        raise ConfigError(path, None, "config file not readable (permission denied)") from None
    except UnicodeDecodeError:
        raise ConfigError(path, None, "config file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(path, None, f"not valid TOML: {error}") from None
    return parse_config(data, path, environ)


def parse_config(data: Mapping[str, Any], path: str | Path,
                 environ: Mapping[str, str] | None = None) -> Config:
    """Validate an already-parsed TOML document as if it had been read from `path`."""
    path = Path(path).absolute()
    ctx = ConfigContext(path, os.environ if environ is None else environ)
    root = Table(ctx, data, "", _SECTIONS)
    sip = _sip(root.table("sip", keys_of(SipConfig)))
    media = _media(root.table("media", keys_of(MediaConfig, "rtp_ports")))
    database = _database(root.table("database", keys_of(DatabaseConfig)))
    return Config(
        path=path,
        sip=sip,
        tls=_tls(root, sip),
        database=database,
        registrar=_registrar(root.table("registrar", keys_of(RegistrarConfig))),
        users=_users(root.tables("users", keys_of(UserEntry))),
        push=_push(root.table("push", keys_of(PushConfig)), media),
        apns=_apns(root.table("apns", keys_of(ApnsConfig))),
        trunks=_trunks(root.tables("trunk", keys_of(TrunkConfig))),
        routers=_routers(root.tables("router", None)),
        metrics=_metrics(root.table("metrics", keys_of(MetricsConfig))),
        log=_log(root.table("log", keys_of(LogConfig))),
        calls=_calls(root.table("calls", keys_of(CallsConfig))),
        media=media,
        fcm=_fcm(root.table("fcm", keys_of(FcmConfig))),
        dns=_dns(root.table("dns", keys_of(DnsConfig))),
        cluster=_cluster(root.table("cluster", keys_of(ClusterConfig)), database.url),
    )


def _dns(t: Table) -> DnsConfig:
    servers: list[tuple[str, int]] = []
    for key, text in t.string_list("servers", []):
        host, _, port = text.rpartition(":") if text.count(":") == 1 or "]:" in text \
            else (text, "", "53")
        host = host.strip("[]") or text
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(t.ctx.file, key, f"{text!r}: expected IP or IP:PORT") from None
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ConfigError(t.ctx.file, key, f"{text!r}: bad port")
        servers.append((host, int(port)))
    return DnsConfig(servers=tuple(servers), min_ttl=t.seconds("min_ttl", 5.0, low=0, high=86400))


def _sip(t: Table) -> SipConfig:
    domain = t.string("domain", "localhost").lower()
    if not _is_host(domain):
        raise t.error("domain", f"{domain!r} is not a host name or IP address")
    listen: list[ListenAddress] = []
    for key, text in t.string_list("listen", ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]):
        try:
            address = ListenAddress.parse(text)
        except ValueError as error:
            raise t.error(key, f"bad listen address {text!r}: {error}", relative=False) from None
        if address in listen:
            raise t.error(key, f"{address} is listed twice", relative=False)
        listen.append(address)
    if not listen:
        raise t.error("listen", "at least one listen address is needed")
    aliases = []
    for key, alias in t.string_list("aliases", []):
        if not _is_host(alias):
            raise t.error(key, f"{alias!r} is not a host name or IP address", relative=False)
        aliases.append(alias.lower())
    advertised = t.string("advertised_address", "") or None
    if advertised is not None and not _is_host(advertised):
        raise t.error("advertised_address", f"{advertised!r} is not a host name or IP address")
    t1 = t.seconds("t1", 0.5, low=0.001, high=60)
    t2 = t.seconds("t2", 4.0, low=0.001, high=600)
    if t2 < t1:
        raise t.error("t2", f"must not be less than t1 ({t1:g})")
    return SipConfig(
        domain=domain, listen=tuple(listen), aliases=tuple(aliases), advertised_address=advertised,
        t1=t1, t2=t2, t4=t.seconds("t4", 5.0, low=0.001, high=600),
        max_message_size=t.integer("max_message_size", 65535, low=1500, high=16 * 1024 * 1024),
        user_agent=t.string("user_agent", "b2bua"),
        max_forwards=t.integer("max_forwards", 70, low=1, high=255),
    )


def _tls(root: Table, sip: SipConfig) -> TlsConfig | None:
    if not root.has("tls"):
        for index, address in enumerate(sip.listen):
            if address.transport == "tls":
                raise root.error(f"sip.listen[{index}]", "a tls listener needs the [tls] section "
                                 "(certificate and private_key)")
        return None
    t = root.table("tls", keys_of(TlsConfig))
    return TlsConfig(certificate=t.required_path("certificate", must_exist=True),
                     private_key=t.required_path("private_key", must_exist=True))


def _database(t: Table) -> DatabaseConfig:
    text = t.string("path", _DEFAULT_DATABASE)
    if not text:
        raise t.error("path", "must not be empty")
    url = t.string("url", "")
    if url:
        try:
            parse_redis_url(url)
        except ValueError as error:
            raise t.error("url", str(error)) from None
    return DatabaseConfig(Path(text) if text == ":memory:" else t.resolve("path", text, must_exist=False),
                          url)


def _cluster(t: Table, url: str) -> ClusterConfig:
    node = t.string("node", "")
    if node and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", node):
        raise t.error("node", f"{node!r}: use letters, digits, '.', '_' or '-' (at most 63)")
    if not url:
        return ClusterConfig(node)
    return ClusterConfig(node or socket.gethostname().split(".")[0] or "node")


def parse_redis_url(url: str) -> tuple[str, int, int]:
    """``redis://HOST[:PORT][/DB]`` -> (host, port, db); ValueError otherwise."""
    match = re.fullmatch(
        r"redis://(?:[^@/]*@)?(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:/\[\]@]+))(?::(?P<port>\d+))?"
        r"(?:/(?P<db>\d*))?", url)
    if match is None:
        raise ValueError(f"{url!r}: expected a URL like redis://127.0.0.1:6379/0")
    port = int(match["port"] or 6379)
    if not 0 < port < 65536:
        raise ValueError(f"{url!r}: port out of range")
    return match["v6"] or match["host"], port, int(match["db"] or 0)


def _registrar(t: Table) -> RegistrarConfig:
    day = 86400
    registrar = RegistrarConfig(
        min_expires=t.integer("min_expires", 60, low=1, high=365 * day),
        max_expires=t.integer("max_expires", day, low=1, high=365 * day),
        default_expires=t.integer("default_expires", 3600, low=1, high=365 * day),
        nonce_ttl=t.integer("nonce_ttl", 300, low=1, high=day),
        auth_failures_limit=t.integer("auth_failures_limit", 5, low=0, high=10000),
        auth_block_time=t.integer("auth_block_time", 300, low=1, high=day),
        digest_algorithms=_digest_algorithms(t),
    )
    if registrar.max_expires < registrar.min_expires:
        raise t.error("max_expires", f"must not be less than min_expires ({registrar.min_expires})")
    if not registrar.min_expires <= registrar.default_expires <= registrar.max_expires:
        raise t.error("default_expires", "must lie between min_expires and max_expires")
    return registrar


def _digest_algorithms(t: Table) -> tuple[str, ...]:
    """The challenges to offer, in order; only algorithms the store keeps an HA1 for."""
    names: list[str] = []
    for key, text in t.string_list("digest_algorithms", ["MD5"]):
        name = text.strip().upper()
        if name not in DIGEST_ALGORITHMS:
            raise ConfigError(t.ctx.file, key, f"unknown digest algorithm {text!r} "
                              f"(known: {', '.join(DIGEST_ALGORITHMS)})")
        if name in names:
            raise ConfigError(t.ctx.file, key, f"{name} is listed twice")
        names.append(name)
    if not names:
        raise t.error("digest_algorithms", "must name at least one algorithm")
    return tuple(names)


def _users(tables: list[Table]) -> tuple[UserEntry, ...]:
    users: dict[str, UserEntry] = {}
    for t in tables:
        name = t.string("name", None)
        if not _USER.match(name):
            raise t.error("name", f"{name!r} is not a valid SIP user name")
        if name in users:
            raise t.error("name", f"user {name!r} is listed twice")
        password = t.string("password", None)
        if not password:
            raise t.error("password", "must not be empty")
        users[name] = UserEntry(name=name, password=password,
                                display_name=t.string("display_name", "") or None)
    return tuple(users.values())


def _push(t: Table, media: MediaConfig) -> PushConfig:
    ringback = t.raw("ringback")
    if ringback is None:
        ringback = "180"
    elif type(ringback) is int:  # ringback = 183 is an easy slip; take it
        ringback = str(ringback)
    elif not isinstance(ringback, str):
        raise t.error("ringback", 'expected a string, "180" or "183"')
    if ringback not in ("180", "183"):
        raise t.error("ringback", f'must be "180" or "183", not {ringback!r}')
    if ringback == "183" and not media.enabled:
        raise t.error("ringback", '"183" plays a tone, which needs [media] enabled = true')
    return PushConfig(wake_timeout=t.seconds("wake_timeout", 30.0, low=1, high=600),
                      ringback=cast(Any, ringback), call_ended_push=t.boolean("call_ended_push", False),
                      token_lifetime=t.seconds("token_lifetime", 2592000.0, low=0,
                                               high=366 * 86400.0),
                      message_lifetime=t.seconds("message_lifetime", 604800.0, low=1,
                                                 high=366 * 86400.0),
                      max_message_size=t.integer("max_message_size", 16384, low=1,
                                                 high=1024 * 1024),
                      max_stored_messages=t.integer("max_stored_messages", 100, low=1,
                                                    high=100000),
                      max_stored_bytes=t.integer("max_stored_bytes", 1048576, low=1,
                                                 high=1024 * 1024 * 1024))


def _apns(t: Table) -> ApnsConfig:
    enabled = t.boolean("enabled", False)
    t.strict = enabled  # a disabled section is checked for spelling and types only
    auth = t.choice("auth", "token", ("token", "certificate"))
    endpoint = t.string("endpoint", "production")
    sandbox_endpoint = t.string("sandbox_endpoint", "")
    for key, value in (("endpoint", endpoint), ("sandbox_endpoint", sandbox_endpoint)):
        if value and value not in APNS_ENDPOINTS:
            try:
                parse_https_url(value)
            except ValueError as error:
                raise t.error(key, str(error)) from None
    apns = ApnsConfig(
        enabled=enabled, auth=cast(Any, auth),
        key_file=t.path("key_file", must_exist=auth == "token"),
        key_id=t.string("key_id", ""), team_id=t.string("team_id", ""),
        certificate=t.path("certificate", must_exist=auth == "certificate"),
        endpoint=endpoint,
        ca_file=t.path("ca_file", must_exist=True),
        timeout=t.seconds("timeout", 10.0, low=0.1, high=600),
        ping_interval=t.seconds("ping_interval", 60.0, low=1, high=86400),
        sandbox_endpoint=sandbox_endpoint,
    )
    if enabled:
        for key in ("key_file", "key_id", "team_id") if auth == "token" else ("certificate",):
            value = getattr(apns, key)
            if not value:
                raise t.error(key, f"required when apns is enabled with auth = {auth!r}")
            if isinstance(value, str) and not value.isalnum():
                raise t.error(key, "must be letters and digits, as shown in the Apple developer account")
    return apns


def _fcm(t: Table) -> FcmConfig:
    enabled = t.boolean("enabled", False)
    t.strict = enabled  # a disabled section is checked for spelling and types only
    endpoint = t.string("endpoint", FcmConfig.endpoint)
    try:
        parse_https_url(endpoint)
    except ValueError:
        raise t.error("endpoint", "expected a URL like https://fcm.googleapis.com") from None
    fcm = FcmConfig(enabled=enabled, service_account=t.path("service_account", must_exist=True),
                    endpoint=endpoint, ca_file=t.path("ca_file", must_exist=True))
    if enabled and fcm.service_account is None:
        raise t.error("service_account", "required when fcm is enabled (the service-account JSON key file)")
    return fcm


def _trunks(tables: list[Table]) -> tuple[TrunkConfig, ...]:
    trunks: dict[str, TrunkConfig] = {}
    for t in tables:
        name = t.string("name", None)
        if not _NAME.match(name):
            raise t.error("name", f"{name!r}: use letters, digits, '_', '.', '-'")
        if name in trunks:
            raise t.error("name", f"trunk {name!r} is listed twice")
        uri = t.string("uri", None)
        match = _SIP_URI.fullmatch(uri)
        if match is None or not _is_host(match["host"].strip("[]")):
            raise t.error("uri", "is not a sip: or sips: URI with a host")  # no value: may hold a password
        if ":" in (match["userinfo"] or ""):
            raise t.error("uri", "holds a password; put it in password (with \"${VAR}\") instead")
        if match["port"] is not None and not 1 <= int(match["port"]) <= 65535:
            raise t.error("uri", f"port {match['port']} is out of range 1-65535")
        params = dict(p.partition("=")[::2] for p in (match["params"] or "").split(";")[1:])
        implied = params.get("transport", "").lower() or ("tls" if match["scheme"].lower() == "sips" else "")
        transport = t.choice("transport", implied or "udp", TRANSPORTS)
        if implied and transport != implied:
            raise t.error("transport", f"{transport!r} contradicts transport {implied!r} implied by the uri")
        host = match["host"].strip("[]")
        username = t.string("username", "")
        register = t.boolean("register", False)
        if register and not username:
            raise t.error("username", "required when register = true")
        accept_from = tuple(_networks(t, "accept_from", [host] if _is_ip(host) else []))
        trunks[name] = TrunkConfig(
            name=name, uri=uri, accept_from=accept_from, username=username,
            password=t.string("password", ""), register=register,
            register_expires=t.integer("register_expires", 3600, low=60, high=86400),
            transport=cast(Any, transport),
            from_user=cast(Any, t.choice("from_user", "caller_id", ("caller_id", "account"))),
            send_display_name=t.boolean("send_display_name", True),
            ca_file=t.path("ca_file", must_exist=True),
        )
        if trunks[name].from_user == "account" and not username:
            raise t.error("from_user", '"account" needs username (the trunk account)')
    return tuple(trunks.values())


def _routers(tables: list[Table]) -> tuple[RouterEntry, ...]:
    routers = []
    for t in tables:
        plugin = t.string("plugin", None)
        if not _PLUGIN.match(plugin):
            raise t.error("plugin", f"{plugin!r}: expected a module in plugins/ or 'package.module:Class'")
        timeout = t.seconds("timeout", 2.0, low=0.01, high=3600)   # ours, not the plugin's
        routers.append(RouterEntry(plugin=plugin, options=MappingProxyType(t.rest()),
                                   timeout=timeout))
    return tuple(routers) or (RouterEntry("local_users"),)


def _metrics(t: Table) -> MetricsConfig:
    listen = t.string("listen", "") or None
    if listen is not None:
        reason = _check_endpoint(listen)
        if reason:
            raise t.error("listen", f"bad endpoint {listen!r}: {reason}")
    return MetricsConfig(listen=listen, allow=tuple(_networks(t, "allow", ["127.0.0.0/8", "::1/128"])))


def _log(t: Table) -> LogConfig:
    level = _LOG_LEVELS[t.choice("level", "info", tuple(_LOG_LEVELS))]
    return LogConfig(level=level, format=cast(Any, t.choice("format", "text", ("text", "json"))))


def _calls(t: Table) -> CallsConfig:
    return CallsConfig(
        ring_timeout=t.seconds("ring_timeout", 120.0, low=1),
        max_duration=t.seconds("max_duration", 3 * 3600.0, low=0),
        timer_c=t.seconds("timer_c", 180.0, low=1),
        drain_time=t.seconds("drain_time", 30.0, low=0),
    )


def _media(t: Table) -> MediaConfig:
    if t.has("rtp_ports"):
        if t.has("rtp_port_min") or t.has("rtp_port_max"):
            raise t.error("rtp_ports", "give either rtp_ports or rtp_port_min/rtp_port_max, not both")
        text = t.string("rtp_ports", None)
        match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", text)
        if match is None:
            raise t.error("rtp_ports", f'{text!r}: expected a range like "20000-20999"')
        low, high, key = int(match[1]), int(match[2]), "rtp_ports"
    else:
        low = t.integer("rtp_port_min", 20000, low=1, high=65535)
        high = t.integer("rtp_port_max", 20999, low=1, high=65535)
        key = "rtp_port_max"
    if not 1024 <= low < high <= 65535:
        raise t.error(key, f"port range {low}-{high} must lie within 1024-65535 with min < max")
    addresses = {}
    for name in ("bind_address", "advertised_address"):
        value = t.string(name, "") or None
        if value is not None and not _is_ip(value):
            raise t.error(name, f"{value!r} is not an IP address")
        addresses[name] = value
    engine = t.choice("engine", "builtin", ("builtin", "rtpengine"))
    rtpengine = t.string("rtpengine", "udp:127.0.0.1:2223")
    if not re.fullmatch(r"udp:(\d{1,3}(\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\]):\d{1,5}", rtpengine):
        raise t.error("rtpengine", f'{rtpengine!r}: expected "udp:ADDRESS:PORT"')
    return MediaConfig(enabled=t.boolean("enabled", True), country=t.choice("country", "us", TONE_COUNTRIES),
                       rtp_port_min=low, rtp_port_max=high, relay=t.boolean("relay", False),
                       rtp_timeout=t.seconds("rtp_timeout", 0.0, low=0), engine=engine,
                       rtpengine=rtpengine, **addresses)


def _networks(t: Table, name: str, default: list[str]) -> list[Network]:
    networks = []
    for key, text in t.string_list(name, default):
        try:
            networks.append(ipaddress.ip_network(text.strip(), strict=False))
        except ValueError:
            raise t.error(key, f"{text!r} is not an IP address or CIDR network", relative=False) from None
    return networks


def _check_endpoint(description: str) -> str | None:
    """Why a Twisted server endpoint string is unusable, or None; nothing is opened."""
    try:
        serverFromString(object(), description)  # type: ignore[no-untyped-call]
    except Exception as error:  # any parser failure (bad syntax, ssl: files missing) means unusable
        return str(error) or type(error).__name__
    kind, _, rest = description.partition(":")
    if kind.lower() == "tcp":  # Twisted leaves the port range to listen time
        args = [arg for arg in rest.split(":") if "=" not in arg]
        port = dict(arg.partition("=")[::2] for arg in rest.split(":")).get("port", args[0] if args else "")
        if not port.isdigit() or int(port) > 65535:
            return "the TCP port must be a number 0-65535"
    return None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_host(text: str) -> bool:
    return _is_ip(text) or bool(_HOSTNAME.match(text))

