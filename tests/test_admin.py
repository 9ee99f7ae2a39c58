"""`b2bua-admin`, run as operators run it: a subprocess against a config and database in tmp_path."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.utils import getProcessOutputAndValue

from b2bua.store import Binding, Cdr, Store, compute_ha1
from tests.fake_apns import BUNDLE_ID, KEY_ID, TEAM_ID, FakeApns, Reply, make_pki
from tests.support import free_port

REPO = Path(__file__).resolve().parent.parent
DOMAIN = "example.test"
AOR = f"sip:1111@{DOMAIN}"
TOKEN = "3f2a1b" + "0123456789abcdef" * 3 + "9c0d"
OTHER_TOKEN = "aa11bb" + "fedcba9876543210" * 3 + "ee22"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.pop("B2BUA_CONFIG", None)
    return env


def admin(config: Path | str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "b2bua.admin", "--config", str(config), *args],
        input=stdin, capture_output=True, text=True, cwd=REPO, env=_env(), timeout=60,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def fails(result: subprocess.CompletedProcess[str], *words: str) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in result.stderr
    return result.stderr


def write_config(tmp_path: Path, extra: str = "") -> Path:
    config = tmp_path / "b2bua.toml"
    config.write_text(f'[sip]\ndomain = "{DOMAIN}"\n\n[database]\npath = "var/b2bua.sqlite3"\n\n{extra}\n')
    return config


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path)


def db_path(config: Path) -> Path:
    return config.parent / "var" / "b2bua.sqlite3"


@pytest.fixture
def store(config: Path) -> Iterator[Store]:
    db_path(config).parent.mkdir(exist_ok=True)
    opened = Store.open(db_path(config))
    yield opened
    opened.close()


def add_binding(store: Store, contact: str = "sip:1111@192.0.2.7:5062;transport=tcp",
                token: str | None = TOKEN, expires_in: float = 3600, **fields: Any) -> Binding:
    now = time.time()
    binding = Binding(
        aor=AOR, contact=contact, expires_at=now + expires_in, updated_at=now, user="1111",
        source_transport="tcp", source_host="192.0.2.7", source_port=5062,
        user_agent="Acrobits Softphone", instance_id=fields.pop("instance_id", None),
        push_provider="i" if token else None, push_package=BUNDLE_ID if token else None,
        push_topic=BUNDLE_ID + ".voip" if token else None, push_token=token,
        push_source="x-mpush" if token else None, **fields,
    )
    stored, _ = store.bindings.upsert(binding)
    return stored


# -- check-config ---------------------------------------------------------------------------


def test_check_config_accepts_the_shipped_file_in_both_forms() -> None:
    shipped = REPO / "etc" / "b2bua.toml"
    assert ok(admin(shipped, "check-config")).strip() == f"config OK: {shipped}"
    legacy = subprocess.run([sys.executable, "-m", "b2bua.admin", "check-config", str(shipped)],
                            capture_output=True, text=True, cwd=REPO, env=_env(), timeout=60)
    assert ok(legacy).startswith("config OK:")


@pytest.mark.parametrize("extra, words", [
    ("[registrar]\nmin_expirs = 60\n", ["registrar.min_expirs"]),
    ('[[router]]\nplugin = "no_such_router"\n', ["router[0]", "no_such_router"]),
    ('[[router]]\nplugin = "static"\n', ["router[0]", "target"]),
])
def test_check_config_names_the_bad_key(tmp_path: Path, extra: str, words: list[str]) -> None:
    stderr = fails(admin(write_config(tmp_path, extra), "check-config"), *words)
    assert len(stderr.strip().splitlines()) == 1


def test_check_config_builds_the_apns_client(tmp_path: Path) -> None:
    (tmp_path / "AuthKey.p8").write_text("not a key\n")
    extra = (f'[apns]\nenabled = true\nkey_file = "AuthKey.p8"\nkey_id = "{KEY_ID}"\n'
             f'team_id = "{TEAM_ID}"\n')
    fails(admin(write_config(tmp_path, extra), "check-config"), "[apns] key_file")
    pki = make_pki(tmp_path / "pki")
    good = extra.replace("AuthKey.p8", str(pki.key_file))
    assert ok(admin(write_config(tmp_path, good), "check-config")).startswith("config OK:")


def test_check_config_refuses_a_database_from_a_newer_release(config: Path, store: Store) -> None:
    store.db.execute("INSERT INTO schema_version (version, name, applied_at) VALUES (99, 'x', 0)")
    fails(admin(config, "check-config"), "database.path", "schema version 99")


def test_config_option_after_the_command_and_from_the_environment(config: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "b2bua.admin", "user", "add", "1111",
                             "--password-stdin", "--config", str(config)],
                            input="pw\n", capture_output=True, text=True, cwd=REPO, env=_env(), timeout=60)
    ok(result)
    env = {**_env(), "B2BUA_CONFIG": str(config)}
    listed = subprocess.run([sys.executable, "-m", "b2bua.admin", "user", "list", "--json"],
                            capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    assert [u["name"] for u in json.loads(ok(listed))] == ["1111"]


def test_missing_config_file_is_one_line(tmp_path: Path) -> None:
    fails(admin(tmp_path / "nope.toml", "user", "list"), "config file not found")


# -- users ----------------------------------------------------------------------------------


def users_json(config: Path) -> list[dict[str, Any]]:
    return json.loads(ok(admin(config, "user", "list", "--json")))


def ha1_row(config: Path) -> tuple[str, str]:
    with sqlite3.connect(db_path(config)) as db:
        row = db.execute("SELECT ha1_md5, ha1_sha256 FROM users WHERE name = '1111'").fetchone()
    return row


def test_user_add_stores_ha1_not_the_password(config: Path) -> None:
    ok(admin(config, "user", "add", "1111", "--display-name", "Front desk", "--password-stdin",
             stdin="s3cret-pass\nignored second line\n"))
    (user,) = users_json(config)
    assert user["name"] == "1111" and user["realm"] == DOMAIN
    assert user["display_name"] == "Front desk" and user["enabled"] is True
    assert "ha1" not in json.dumps(user)
    assert ha1_row(config) == (compute_ha1("1111", DOMAIN, "s3cret-pass"),
                               compute_ha1("1111", DOMAIN, "s3cret-pass", "SHA-256"))
    assert b"s3cret-pass" not in db_path(config).read_bytes()
    assert "1111" in ok(admin(config, "user", "list"))


def test_user_passwd_disable_enable_remove(config: Path) -> None:
    ok(admin(config, "user", "add", "1111", "--password-stdin", stdin="first\n"))
    ok(admin(config, "user", "passwd", "1111", "--password-stdin", stdin="second\n"))
    assert ha1_row(config)[0] == compute_ha1("1111", DOMAIN, "second")
    ok(admin(config, "user", "disable", "1111"))
    assert users_json(config)[0]["enabled"] is False
    assert " no " in ok(admin(config, "user", "list"))
    ok(admin(config, "user", "enable", "1111"))
    assert users_json(config)[0]["enabled"] is True
    ok(admin(config, "user", "remove", "1111"))
    assert users_json(config) == []
    fails(admin(config, "user", "remove", "1111"), "no such user: 1111")


def test_user_errors(config: Path) -> None:
    fails(admin(config, "user", "list"), "no database at")
    ok(admin(config, "user", "add", "1111", "--password-stdin", stdin="pw\n"))
    fails(admin(config, "user", "add", "1111", "--password-stdin", stdin="pw\n"), "already exists")
    fails(admin(config, "user", "passwd", "2222", "--password-stdin", stdin="pw\n"), "no such user: 2222")
    fails(admin(config, "user", "disable", "2222"), "no such user: 2222")
    fails(admin(config, "user", "add", "2222", "--password-stdin", stdin="\n"), "empty")
    fails(admin(config, "user", "add", "bad name", "--password-stdin", stdin="pw\n"), "not a valid")
    no_tty = admin(config, "user", "add", "3333")  # no --password-stdin, no terminal, no input
    assert no_tty.returncode == 1 and "Traceback" not in no_tty.stderr
    assert [u["name"] for u in users_json(config)] == ["1111"]


def test_password_is_never_taken_from_argv(config: Path) -> None:
    result = admin(config, "user", "add", "1111", "--password", "x")
    assert result.returncode == 2


# -- bindings -------------------------------------------------------------------------------


def test_bindings_json_has_the_whole_token_and_text_shortens_it(config: Path, store: Store) -> None:
    store.users.add("1111", DOMAIN, "pw")
    binding = add_binding(store, instance_id="<urn:uuid:00000000-0000-0000-0000-000000000001>")
    add_binding(store, contact="sip:1111@192.0.2.9:5060", token=None, expires_in=-10)  # expired
    for args in (("bindings", "--json"), ("bindings", "1111", "--json")):
        (item,) = json.loads(ok(admin(config, *args)))
        assert item["push_token"] == TOKEN
        assert item["user"] == "1111" and item["aor"] == AOR and item["id"] == binding.id
        assert item["contact"] == binding.contact and item["source"] == "192.0.2.7:5062"
        assert item["transport"] == "tcp" and item["user_agent"] == "Acrobits Softphone"
        assert item["push_provider"] == "i" and item["push_package"] == BUNDLE_ID
        assert item["push_topic"] == BUNDLE_ID + ".voip"
        assert item["instance_id"] == binding.instance_id
        assert 3500 < item["expires_in"] <= 3600 and item["expires_at"] == binding.expires_at
    text = ok(admin(config, "bindings", "1111"))
    assert TOKEN not in text and "3f2a1b…9c0d" in text
    assert binding.contact in text and "TCP 192.0.2.7:5062" in text and "apns" in text
    assert "192.0.2.9" not in text


def test_bindings_remove_by_contact_and_by_id(config: Path, store: Store) -> None:
    first = add_binding(store)
    second = add_binding(store, contact="sip:1111@192.0.2.8:5060", token=OTHER_TOKEN)
    ok(admin(config, "bindings", "remove", "1111", first.contact))
    fails(admin(config, "bindings", "remove", "1111", first.contact), "no binding")
    fails(admin(config, "bindings", "remove", "2222", str(second.id)), "no binding")
    ok(admin(config, "bindings", "remove", "1111", str(second.id)))
    assert json.loads(ok(admin(config, "bindings", "--json"))) == []
    assert "no registered contacts" in ok(admin(config, "bindings"))


def test_bindings_of_an_unknown_user(config: Path, store: Store) -> None:
    fails(admin(config, "bindings", "9999"), "no such user: 9999")


# -- cdr ------------------------------------------------------------------------------------


def test_cdr_tail(config: Path, store: Store) -> None:
    start = time.time() - 600
    for index in range(3):
        store.cdrs.write(Cdr(
            call_id=f"call-{index}", started_at=start + index, from_uri=f"sip:+4930{index}@carrier",
            to_uri=AOR, answered_at=start + index + 5, ended_at=start + index + 65, status=200,
            reason="OK", ended_by="caller", push_outcome="delivered 200",
        ))
    rows = json.loads(ok(admin(config, "cdr", "--tail", "2", "--json")))
    assert [row["call_id"] for row in rows] == ["call-1", "call-2"]
    assert rows[1]["from_uri"] == "sip:+49302@carrier" and rows[1]["status"] == 200
    lines = ok(admin(config, "cdr", "--tail", "2")).strip().splitlines()
    assert len(lines) == 3  # header and two calls
    assert "sip:+49302@carrier" in lines[2] and AOR in lines[2]
    assert "200 OK" in lines[2] and "1m00s" in lines[2] and "caller" in lines[2]
    assert admin(config, "cdr", "--tail", "0").returncode == 2


# -- calls ----------------------------------------------------------------------------------


CALLS = [{"call_id": "a84b4c76e66710", "state": "answered", "from": "sip:+4930123@carrier",
          "to": AOR, "caller": "+4930123", "callee": "1111", "started_at": time.time() - 90,
          "answered_at": time.time() - 60, "branches": [{"contact": "sip:1111@192.0.2.7"}]}]


@pytest.fixture
def status_server() -> Iterator[int]:
    class Status(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = json.dumps({"calls": CALLS, "registrations": 1}).encode()
            self.send_response(200 if self.path == "/status" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Status)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()


def test_calls_from_the_status_endpoint(tmp_path: Path, status_server: int) -> None:
    config = write_config(tmp_path, f'[metrics]\nlisten = "tcp:{status_server}:interface=127.0.0.1"\n')
    assert json.loads(ok(admin(config, "calls", "--json"))) == CALLS
    text = ok(admin(config, "calls"))
    assert "a84b4c76e66710" in text and "answered" in text and "sip:+4930123@carrier" in text


def test_calls_when_metrics_are_off_or_the_service_is_down(tmp_path: Path) -> None:
    fails(admin(write_config(tmp_path), "calls"), "metrics are off")
    down = write_config(tmp_path, f'[metrics]\nlisten = "tcp:{free_port()}:interface=127.0.0.1"\n')
    fails(admin(down, "calls", "--json"), "is b2bua running?")


# -- push -----------------------------------------------------------------------------------


def test_push_without_apns_or_devices(config: Path, store: Store) -> None:
    fails(admin(config, "push", "1111"), "APNs is disabled")


@pytest.fixture
def apns(tmp_path: Path) -> Iterator[tuple[FakeApns, Path]]:
    pki = make_pki(tmp_path / "pki")
    fake = FakeApns(reactor, pki).start()
    config = write_config(tmp_path, (
        f'[apns]\nenabled = true\nkey_file = "{pki.key_file}"\nkey_id = "{KEY_ID}"\n'
        f'team_id = "{TEAM_ID}"\nendpoint = "{fake.url}"\nca_file = "{pki.ca_file}"\ntimeout = 5\n'))
    yield fake, config
    pytest_twisted.blockon(fake.stop())


def admin_async(config: Path, *args: str) -> Any:
    """The tool as a child of the running reactor, so the in-process fake APNs can answer."""
    argv = ["-m", "b2bua.admin", "--config", str(config), *args]
    return getProcessOutputAndValue(sys.executable, argv, env=_env(), path=str(REPO))


@pytest_twisted.inlineCallbacks
def test_push_reports_each_device_and_drops_a_dead_token(apns: tuple[FakeApns, Path]) -> Any:
    fake, config = apns
    db_path(config).parent.mkdir()
    store = Store.open(db_path(config))
    store.users.add("1111", DOMAIN, "pw")
    add_binding(store)
    add_binding(store, contact="sip:1111@192.0.2.8:5060", token=OTHER_TOKEN)
    fake.script(OTHER_TOKEN, Reply.error(410, "Unregistered"))
    out, err, code = yield admin_async(config, "push", "1111", "--json")
    assert code == 1 and b"Traceback" not in err, err
    results = {r["token"]: r for r in json.loads(out)}
    assert results[TOKEN]["outcome"] == "delivered" and results[TOKEN]["status"] == 200
    assert results[TOKEN]["apns_id"] and results[TOKEN]["topic"] == BUNDLE_ID + ".voip"
    assert results[OTHER_TOKEN]["outcome"] == "token_dead" and results[OTHER_TOKEN]["status"] == 410
    assert results[OTHER_TOKEN]["reason"].startswith("Unregistered")
    assert results[OTHER_TOKEN]["token_removed"] is True
    assert sorted(r.token for r in fake.requests) == sorted([TOKEN, OTHER_TOKEN])
    payload = fake.requests[0].payload
    assert payload["data"]["ntousr"] == "1111" and fake.requests[0].headers["apns-push-type"] == "voip"
    assert [b.push_token for b in store.bindings.list_all()] == [TOKEN, None]
    out, err, code = yield admin_async(config, "push", "1111")
    assert code == 0, err
    (line,) = out.decode().strip().splitlines()
    assert "3f2a1b…9c0d" in line and TOKEN not in line and "delivered 200" in line
    store.close()


@pytest_twisted.inlineCallbacks
def test_push_to_a_user_without_devices(apns: tuple[FakeApns, Path]) -> Any:
    fake, config = apns
    db_path(config).parent.mkdir()
    store = Store.open(db_path(config))
    store.users.add("1111", DOMAIN, "pw")
    add_binding(store, token=None)
    out, err, code = yield admin_async(config, "push", "1111", "--json")
    assert code == 1 and b"no registered device with a push token" in err
    assert json.loads(out) == []
    out, err, code = yield admin_async(config, "push", "2222")
    assert code == 1 and b"no such user: 2222" in err
    assert fake.requests == []
    store.close()


# -- FCM (issue 15) ------------------------------------------------------------------------


def test_check_config_reads_the_fcm_key_and_names_the_bad_field(tmp_path: Path) -> None:
    from tests.fake_fcm import service_account_json, service_account_key

    key = service_account_key(1024)  # small: only its type and shape are checked here
    document = service_account_json(key, "https://oauth2.example/token", client_email="nobody")
    (tmp_path / "sa.json").write_text(json.dumps(document))
    extra = '[fcm]\nenabled = true\nservice_account = "sa.json"\n'
    error = fails(admin(write_config(tmp_path, extra), "check-config"), "[fcm] service_account",
                  "'client_email'")
    assert "PRIVATE KEY" not in error
    (tmp_path / "sa.json").write_text(json.dumps(service_account_json(key, "https://oauth2.example/token")))
    assert ok(admin(write_config(tmp_path, extra), "check-config")).startswith("config OK:")


@pytest_twisted.inlineCallbacks
def test_push_reaches_android_devices_through_fcm(tmp_path: Path) -> Any:
    from tests.fake_fcm import FakeFcm

    fake = FakeFcm(reactor, make_pki(tmp_path / "pki")).start()
    try:
        config = write_config(tmp_path, (
            f'[fcm]\nenabled = true\nservice_account = "{fake.service_account_file}"\n'
            f'endpoint = "{fake.url}"\nca_file = "{fake.pki.ca_file}"\n'))
        db_path(config).parent.mkdir()
        store = Store.open(db_path(config))
        store.users.add("1111", DOMAIN, "pw")
        android = Binding(aor=AOR, contact="sip:1111@192.0.2.9:5060", expires_at=time.time() + 3600,
                          updated_at=time.time(), user="1111", push_provider="a", push_package="com.example.app",
                          push_token=OTHER_TOKEN, push_source="x-mpush")
        store.bindings.upsert(android)
        fake.script(OTHER_TOKEN, Reply.ok(), Reply.error(404, "UNREGISTERED"))
        out, err, code = yield admin_async(config, "push", "1111", "--json")
        assert code == 0 and b"Traceback" not in err, err
        [result] = json.loads(out)
        assert result["provider"] == "fcm" and result["outcome"] == "delivered" and result["status"] == 200
        assert fake.requests[0].payload["message"]["data"]["ntousr"] == "1111"
        out, err, code = yield admin_async(config, "push", "1111", "--json")
        [result] = json.loads(out)
        assert code == 1 and result["outcome"] == "token_dead" and result["token_removed"] is True
        assert [b.push_token for b in store.bindings.list_all()] == [None]
        store.close()
    finally:
        yield fake.stop()


@pytest_twisted.inlineCallbacks
def test_sandbox_and_production_apps_are_pushed_to_their_own_apns(tmp_path: Path) -> Any:
    """pn-provider=apns.dev devices go to [apns] sandbox_endpoint, the others to endpoint."""
    pki = make_pki(tmp_path / "pki")
    production, sandbox = FakeApns(reactor, pki).start(), FakeApns(reactor, pki).start()
    try:
        config = write_config(tmp_path, (
            f'[apns]\nenabled = true\nkey_file = "{pki.key_file}"\nkey_id = "{KEY_ID}"\n'
            f'team_id = "{TEAM_ID}"\nendpoint = "{production.url}"\nsandbox_endpoint = "{sandbox.url}"\n'
            f'ca_file = "{pki.ca_file}"\ntimeout = 5\n'))
        assert ok(admin(config, "check-config")).startswith("config OK:")
        db_path(config).parent.mkdir()
        store = Store.open(db_path(config))
        store.users.add("1111", DOMAIN, "pw")
        add_binding(store)
        add_binding(store, contact="sip:1111@192.0.2.8:5060", token=OTHER_TOKEN, instance_id=None)
        store.db.execute("UPDATE bindings SET push_provider = 'apns.dev' WHERE push_token = ?", (OTHER_TOKEN,))
        out, err, code = yield admin_async(config, "push", "1111", "--json")
        assert code == 0 and b"Traceback" not in err, err
        assert {r["token"]: r["provider"] for r in json.loads(out)} == {TOKEN: "apns", OTHER_TOKEN: "apns.dev"}
        assert [r.token for r in production.requests] == [TOKEN]
        assert [r.token for r in sandbox.requests] == [OTHER_TOKEN]
        assert sandbox.requests[0].headers["apns-topic"] == BUNDLE_ID + ".voip"
        store.close()
    finally:
        yield gatherResults([production.stop(), sandbox.stop()])
