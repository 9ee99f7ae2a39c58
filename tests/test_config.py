"""The config file: the shipped one loads, every rule holds, every fault names its key."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from b2bua.config import (
    ApnsConfig,
    Config,
    ConfigError,
    ListenAddress,
    RouterEntry,
    TrunkConfig,
    UserEntry,
    load_config,
)

SHIPPED = Path(__file__).resolve().parent.parent / "etc" / "b2bua.toml"
SECRET = "s3cret-Value-42"


def write(tmp_path: Path, text: str, name: str = "b2bua.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, **environ: str) -> Config:
    return load_config(write(tmp_path, text), environ=environ)


# --- the shipped file --------------------------------------------------------------------------

def test_shipped_config_loads_with_an_empty_environment() -> None:
    config = load_config(SHIPPED, environ={})
    assert config.sip.domain == "localhost"
    assert config.sip.listen == (ListenAddress("udp", "127.0.0.1", 5060), ListenAddress("tcp", "127.0.0.1", 5060))
    assert config.tls is None
    assert config.database.path == SHIPPED.parent.parent / "var" / "b2bua.sqlite3"
    assert config.apns.enabled is False
    assert config.trunks == ()
    assert config.routers == (RouterEntry("local_users", {}),)
    assert config.metrics.listen == "tcp:9090:interface=127.0.0.1"
    assert config.push.ringback == "180"


def test_shipped_values_are_the_defaults_except_metrics(tmp_path: Path) -> None:
    """The shipped file documents the defaults: an empty file differs only where it says so."""
    shipped = load_config(SHIPPED, environ={})
    empty = load(tmp_path, "")
    for section in ("sip", "registrar", "push", "apns", "log", "calls", "media", "routers", "trunks"):
        assert getattr(empty, section) == getattr(shipped, section), section
    assert empty.metrics.listen is None
    assert empty.metrics.allow == shipped.metrics.allow


# --- faults: each names the file and the key ---------------------------------------------------

APNS_TOKEN = '[apns]\nenabled = true\nkey_id = "ABC123DEFG"\nteam_id = "DEF123GHIJ"\n'

ERRORS = [
    ("unknown top-level key", 'sipp = 1\n', "sipp: unknown key"),
    ("unknown key in [sip]", '[sip]\nlisen = ["udp:127.0.0.1:5060"]\n', "sip.lisen: unknown key (did you mean 'listen'?)"),
    ("unknown key in [[trunk]]", '[[trunk]]\nname = "c"\nuri = "sip:192.0.2.1"\nregistr = true\n', "trunk[0].registr: unknown key"),
    ("section of wrong type", 'sip = "x"\n', "sip: expected a table"),
    ("trunk as a table", '[trunk]\nname = "c"\n', "trunk: expected an array of tables ([[trunk]])"),
    ("wrong type", '[registrar]\nmin_expires = "60"\n', "registrar.min_expires: expected an integer, got a string"),
    ("bool is not an int", '[registrar]\nmax_expires = true\n', "registrar.max_expires: expected an integer, got a boolean"),
    ("wrong type in list", '[sip]\nlisten = ["udp:127.0.0.1:5060", 5]\n', "sip.listen[1]: expected a string, got an integer"),
    ("bad listen", '[sip]\nlisten = ["udp:127.0.0.1:5060", "udp:localhost:5060"]\n', "sip.listen[1]: bad listen address"),
    ("bad listen transport", '[sip]\nlisten = ["sctp:127.0.0.1:5060"]\n', "sip.listen[0]: bad listen address"),
    ("listen port out of range", '[sip]\nlisten = ["tcp:[::1]:70000"]\n', "out of range 0-65535"),
    ("IPv6 without brackets", '[sip]\nlisten = ["udp:::1:5060"]\n', "sip.listen[0]: bad listen address"),
    ("duplicate listen", '[sip]\nlisten = ["udp:127.0.0.1:5060", "udp:127.0.0.1"]\n', "sip.listen[1]: udp:127.0.0.1:5060 is listed twice"),
    ("bad domain", '[sip]\ndomain = "no spaces.example"\n', "sip.domain:"),
    ("t2 below t1", '[sip]\nt1 = 2\nt2 = 1\n', "sip.t2: must not be less than t1"),
    ("bad ringback", '[push]\nringback = "182"\n', 'push.ringback: must be "180" or "183"'),
    ("183 without media", '[push]\nringback = "183"\n[media]\nenabled = false\n', "push.ringback:"),
    ("missing env var", '[[users]]\nname = "1111"\npassword = "${USER_1111_PASSWORD}"\n',
     "users[0].password: environment variable USER_1111_PASSWORD is not set"),
    ("tls listener without [tls]", '[sip]\nlisten = ["tls:127.0.0.1:5061"]\n', "sip.listen[0]: a tls listener needs the [tls] section"),
    ("missing tls file", '[sip]\nlisten = ["tls:127.0.0.1:5061"]\n[tls]\ncertificate = "tls/server.pem"\nprivate_key = "/x/y.key"\n',
     "tls.certificate: file not found: {dir}/tls/server.pem"),
    ("tls key missing", '[tls]\ncertificate = "cert.pem"\n', "tls.private_key: required"),
    ("apns without key_file", APNS_TOKEN, "apns.key_file: required when apns is enabled"),
    ("apns key_file not found", APNS_TOKEN + 'key_file = "/x/y.p8"\n', "apns.key_file: file not found: /x/y.p8"),
    ("apns without team_id", '[apns]\nenabled = true\nkey_file = "cert.pem"\nkey_id = "ABC123DEFG"\n', "apns.team_id: required"),
    ("apns certificate auth", '[apns]\nenabled = true\nauth = "certificate"\n', "apns.certificate: required"),
    ("apns bad auth", '[apns]\nauth = "password"\n', "apns.auth: must be one of 'token', 'certificate'"),
    ("apns bad endpoint", '[apns]\nendpoint = "http://127.0.0.1:2197"\n', "apns.endpoint:"),
    ("apns missing ca_file", APNS_TOKEN + 'key_file = "cert.pem"\nca_file = "ca.pem"\n', "apns.ca_file: file not found"),
    ("bad CIDR in trunk", '[[trunk]]\nname = "c"\nuri = "sip:192.0.2.1"\naccept_from = ["192.0.2.0/24", "192.0.2.0/33"]\n',
     "trunk[0].accept_from[1]: '192.0.2.0/33' is not an IP address or CIDR network"),
    ("trunk without uri", '[[trunk]]\nname = "c"\n', "trunk[0].uri: required"),
    ("trunk bad uri", '[[trunk]]\nname = "c"\nuri = "tel:+15551234"\n', "trunk[0].uri:"),
    ("trunk password in uri", '[[trunk]]\nname = "c"\nuri = "sip:acct:pw@192.0.2.1"\n', "trunk[0].uri: holds a password"),
    ("trunk transport conflict", '[[trunk]]\nname = "c"\nuri = "sip:192.0.2.1;transport=tcp"\ntransport = "udp"\n', "trunk[0].transport:"),
    ("trunk register without username", '[[trunk]]\nname = "c"\nuri = "sip:192.0.2.1"\nregister = true\n', "trunk[0].username: required"),
    ("duplicate trunk", '[[trunk]]\nname = "c"\nuri = "sip:192.0.2.1"\n[[trunk]]\nname = "c"\nuri = "sip:192.0.2.2"\n', "trunk[1].name:"),
    ("router without plugin", '[[router]]\ntarget = "sip:127.0.0.1"\n', "router[0].plugin: required"),
    ("bad metrics endpoint", '[metrics]\nlisten = "tcp:http"\n', "metrics.listen: bad endpoint"),
    ("metrics port out of range", '[metrics]\nlisten = "tcp:port=99999:interface=127.0.0.1"\n', "metrics.listen: bad endpoint"),
    ("bad metrics CIDR", '[metrics]\nallow = ["localhost"]\n', "metrics.allow[0]:"),
    ("bad log level", '[log]\nlevel = "loud"\n', "log.level: must be one of"),
    ("negative duration", '[calls]\nmax_duration = -1\n', "calls.max_duration:"),
    ("bad rtp range", '[media]\nrtp_ports = "30000-20000"\n', "media.rtp_ports:"),
    ("rtp range twice", '[media]\nrtp_ports = "20000-20999"\nrtp_port_min = 20000\n', "media.rtp_ports:"),
    ("negative rtp_timeout", '[media]\nrtp_timeout = -5\n', "media.rtp_timeout:"),
    ("unknown media engine", '[media]\nengine = "mediaproxy"\n', "media.engine: must be one of"),
    ("rtpengine not udp", '[media]\nrtpengine = "tcp:127.0.0.1:2223"\n', "media.rtpengine:"),
    ("rtpengine without port", '[media]\nrtpengine = "udp:127.0.0.1"\n', "media.rtpengine:"),
    ("expires order", '[registrar]\nmin_expires = 600\ndefault_expires = 300\n', "registrar.default_expires:"),
    ("duplicate user", '[[users]]\nname = "1"\npassword = "a"\n[[users]]\nname = "1"\npassword = "b"\n', "users[1].name:"),
    ("not TOML", '[sip\n', "not valid TOML"),
]


@pytest.mark.parametrize(("text", "expected"), [case[1:] for case in ERRORS], ids=[case[0] for case in ERRORS])
def test_fault_names_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "cert.pem").write_text("-- test --")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    assert expected.format(dir=tmp_path) in message


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nowhere.toml: config file not found"):
        load_config(tmp_path / "nowhere.toml")


def test_error_carries_key_and_reason(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, '[push]\nringback = "182"\n')
    assert caught.value.key == "push.ringback"
    assert caught.value.file == str(tmp_path / "b2bua.toml")


# --- rules -------------------------------------------------------------------------------------

def test_env_substitution_everywhere(tmp_path: Path) -> None:
    config = load(tmp_path, """
[sip]
domain = "${DOMAIN}"
listen = ["${LISTEN}"]
[[users]]
name = "1111"
password = "${PW}"
[[trunk]]
name = "carrier"
uri = "sip:192.0.2.1"
password = "${TRUNK_PW}"
[[router]]
plugin = "static"
target = "${TARGET}"
nested = {token = "${TOKEN}"}
[metrics]
listen = "tcp:9090:interface=${NOT_WHOLE}"
""", DOMAIN="sip.example.com", LISTEN="tcp:[::1]:5070", PW=SECRET, TRUNK_PW="t", TARGET="sip:10.0.0.1", TOKEN="tok")
    assert config.sip.domain == "sip.example.com"
    assert config.sip.listen == (ListenAddress("tcp", "::1", 5070),)
    assert config.users == (UserEntry("1111", SECRET, None),)
    assert config.trunks[0].password == "t"
    assert config.routers[0].options == {"target": "sip:10.0.0.1", "nested": {"token": "tok"}}
    assert config.metrics.listen == "tcp:9090:interface=${NOT_WHOLE}"  # only whole values


def test_missing_env_var_in_router_options_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"router\[0\]\.creds\[1\]: environment variable API_KEY is not set"):
        load(tmp_path, '[[router]]\nplugin = "pkg.mod:Router"\ncreds = ["x", "${API_KEY}"]\n')


def test_disabled_apns_tolerates_unset_variables_and_missing_files(tmp_path: Path) -> None:
    config = load(tmp_path, '[apns]\nenabled = false\nkey_file = "${APNS_KEY_FILE}"\nca_file = "none.pem"\n')
    assert config.apns.key_file is None
    assert config.apns.ca_file == tmp_path / "none.pem"


def test_relative_paths_are_taken_from_the_config_folder(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    (folder / "tls").mkdir(parents=True)
    (folder / "tls" / "server.pem").write_text("cert")
    (tmp_path / "server.key").write_text("key")
    (folder / "AuthKey.p8").write_text("key")
    path = write(folder, """
[sip]
listen = ["tls:0.0.0.0:5061", "udp:[::]"]
[tls]
certificate = "tls/server.pem"
private_key = "../server.key"
[database]
path = "../var/b2bua.sqlite3"
[apns]
enabled = true
key_file = "${KEY}"
key_id = "ABC123DEFG"
team_id = "DEF123GHIJ"
endpoint = "https://[::1]:2197"
""")
    config = load_config(path, environ={"KEY": "AuthKey.p8"})
    assert config.tls is not None
    assert config.tls.certificate == folder / "tls" / "server.pem"
    assert config.tls.private_key == tmp_path / "server.key"
    assert config.database.path == tmp_path / "var" / "b2bua.sqlite3"
    assert config.apns.key_file == folder / "AuthKey.p8"
    assert config.apns.address == ("::1", 2197)
    assert config.sip.listen[1] == ListenAddress("udp", "::", 5060)
    assert config.base_dir == folder


def test_memory_database_is_kept(tmp_path: Path) -> None:
    assert str(load(tmp_path, '[database]\npath = ":memory:"\n').database.path) == ":memory:"


def test_trunk_defaults_come_from_the_uri(tmp_path: Path) -> None:
    config = load(tmp_path, """
[[trunk]]
name = "a"
uri = "sip:198.51.100.10:5060;transport=TCP"
[[trunk]]
name = "b"
uri = "sips:carrier.example.net"
accept_from = ["203.0.113.0/24", "2001:db8::1"]
""")
    a, b = config.trunks
    assert a.transport == "tcp" and a.accept_from == (ipaddress.ip_network("198.51.100.10/32"),)
    assert b.transport == "tls" and b.accepts("203.0.113.7") and b.accepts("2001:db8::1")
    assert not b.accepts("198.51.100.10") and not b.accepts("garbage")
    assert config.trunk("b") is b and config.trunk("c") is None


def test_router_options_are_the_rest_of_the_table(tmp_path: Path) -> None:
    config = load(tmp_path, '[[router]]\nplugin = "static"\ntarget = "sip:127.0.0.1:5070"\nweight = 3\n')
    assert config.routers == (RouterEntry("static", {"target": "sip:127.0.0.1:5070", "weight": 3}),)
    assert config.routers[0].timeout == 2.0
    with pytest.raises(TypeError):
        config.routers[0].options["target"] = "x"  # type: ignore[index]


def test_alternative_spellings(tmp_path: Path) -> None:
    config = load(tmp_path, '[sip]\nlisten = "UDP:10.0.0.1:5080"\n[push]\nringback = 183\n'
                            '[media]\nrtp_port_min = 30000\nrtp_port_max = 30099\n[log]\nlevel = "WARNING"\n')
    assert config.sip.listen == (ListenAddress("udp", "10.0.0.1", 5080),)
    assert config.push.ringback == "183"
    assert config.media.rtp_ports == range(30000, 30100)
    assert (config.media.rtp_timeout, config.media.engine) == (0.0, "builtin")
    assert config.log.level == "warn" and config.log.log_level.name == "warn"


@pytest.mark.parametrize(("text", "expected"), [
    ("udp:127.0.0.1:5060", ListenAddress("udp", "127.0.0.1", 5060)),
    ("tcp:[::1]:5060", ListenAddress("tcp", "::1", 5060)),
    ("tls:0.0.0.0:5061", ListenAddress("tls", "0.0.0.0", 5061)),
    ("tls:[2001:db8::1]", ListenAddress("tls", "2001:db8::1", 5061)),
])
def test_listen_address_round_trip(text: str, expected: ListenAddress) -> None:
    assert ListenAddress.parse(text) == expected
    assert ListenAddress.parse(str(expected)) == expected


@given(st.sampled_from(["udp", "tcp", "tls"]), st.ip_addresses(), st.integers(0, 65535))
def test_any_listen_address_round_trips(transport: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
                                        port: int) -> None:
    address = ListenAddress(transport, str(ip), port)  # type: ignore[arg-type]
    assert ListenAddress.parse(str(address)) == address


# --- secrets -----------------------------------------------------------------------------------

def test_secrets_are_not_in_repr(tmp_path: Path) -> None:
    config = load(tmp_path, """
[[users]]
name = "1111"
password = "${PW}"
[[trunk]]
name = "carrier"
uri = "sip:192.0.2.1"
username = "acct"
password = "${PW}"
[[router]]
plugin = "rest"
api_key = "${PW}"
""", PW=SECRET)
    assert config.users[0].password == SECRET
    assert SECRET not in repr(config)
    assert "api_key" in repr(config.routers[0])


@pytest.mark.parametrize("text", [
    '[[users]]\nname = "1111"\npassword = 12345\n',
    '[[trunk]]\nname = "c"\nuri = "sip:192.0.2.1"\npassword = ["' + SECRET + '"]\n',
    '[apns]\nenabled = true\nkey_file = "${PW}"\nkey_id = "A"\nteam_id = "B"\n',
    '[[users]]\nname = "1111"\npassword = "' + SECRET + '"\nbad = 1\n',
    '[[trunk]]\nname = "c"\nuri = "sip:acct:' + SECRET + '@192.0.2.1"\n',
    '[[trunk]]\nname = "c"\nuri = "sip:acct:' + SECRET + '@"\n',
])
def test_secrets_are_not_in_error_messages(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, PW="-----BEGIN PRIVATE KEY-----\n" + SECRET)
    assert SECRET not in str(caught.value) and "12345" not in str(caught.value)


def test_dataclasses_are_frozen() -> None:
    trunk = TrunkConfig(name="c", uri="sip:192.0.2.1")
    with pytest.raises(AttributeError):
        trunk.name = "d"  # type: ignore[misc]
    assert ApnsConfig().address == ("api.push.apple.com", 443)
    assert ApnsConfig(endpoint="sandbox").address == ("api.sandbox.push.apple.com", 443)


def test_router_timeout_is_ours_not_the_plugins(tmp_path: Path) -> None:
    config = load(tmp_path, '[[router]]\nplugin = "static"\ntarget = "sip:127.0.0.1:5070"\ntimeout = 0.5\n')
    assert config.routers[0].timeout == 0.5
    assert dict(config.routers[0].options) == {"target": "sip:127.0.0.1:5070"}
    with pytest.raises(ConfigError, match=r"router\[0\]\.timeout: must be at least"):
        load(tmp_path, '[[router]]\nplugin = "static"\ntimeout = 0\n')
