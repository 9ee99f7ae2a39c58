"""`b2bua-admin user import FILE`: CSV or JSON lines, passwords or HA1s, one
transaction, bad lines by number, and fast enough for 100,000 users."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from b2bua.store import Store
from tests.test_admin import DOMAIN, admin, db_path, fails, ok, write_config  # noqa: F401

import pytest


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path)


def ha1(name: str, password: str, algorithm: str = "md5") -> str:
    return hashlib.new(algorithm, f"{name}:{DOMAIN}:{password}".encode()).hexdigest()


def stored(config: Path, name: str) -> tuple[str | None, str | None, str | None, bool] | None:
    store = Store.open(db_path(config))
    try:
        user = store.users.get(name, DOMAIN)
        if user is None:
            return None
        return user.ha1("MD5"), user.ha1("SHA-256"), user.display_name, user.enabled
    finally:
        store.close()


def test_csv_with_passwords(config: Path, tmp_path: Path) -> None:
    users = tmp_path / "users.csv"
    users.write_text('name,password,display_name,enabled\n1111,s3cret,"Front, desk",\n'
                     "2222,other,,no\n")
    assert "imported 2 users" in ok(admin(config, "user", "import", str(users)))
    assert stored(config, "1111") == (ha1("1111", "s3cret"), ha1("1111", "s3cret", "sha256"),
                                      "Front, desk", True)
    assert stored(config, "2222") == (ha1("2222", "other"), ha1("2222", "other", "sha256"),
                                      None, False)


def test_json_lines_with_precomputed_ha1s(config: Path, tmp_path: Path) -> None:
    users = tmp_path / "users.jsonl"
    users.write_text("\n".join(json.dumps(r) for r in [
        {"name": "1111", "ha1_md5": ha1("1111", "pw").upper()},
        {"name": "2222", "ha1_md5": ha1("2222", "pw"), "ha1_sha256": ha1("2222", "pw", "sha256"),
         "enabled": False}]) + "\n")
    ok(admin(config, "user", "import", str(users)))
    # an MD5 HA1 only: no SHA-256 secret at all (never an empty one a digest could match)
    assert stored(config, "1111") == (ha1("1111", "pw"), None, None, True)
    assert stored(config, "2222") == (ha1("2222", "pw"), ha1("2222", "pw", "sha256"), None, False)


def test_bad_lines_are_reported_by_number_and_nothing_is_imported(
        config: Path, tmp_path: Path) -> None:
    users = tmp_path / "users.jsonl"
    users.write_text("\n".join([
        json.dumps({"name": "1111", "password": "pw"}),
        "{not json",
        json.dumps({"name": "bad name", "password": "pw"}),
        "",
        json.dumps({"name": "3333"}),
        json.dumps({"name": "4444", "ha1_md5": "xyz"}),
        json.dumps({"name": "1111", "password": "again"}),
        json.dumps({"name": "5555", "password": "pw", "ha1_md5": ha1("5555", "pw")}),
        json.dumps({"name": "6666", "password": "pw", "colour": "red"}),
    ]) + "\n")
    err = fails(admin(config, "user", "import", str(users)), "nothing imported")
    for number, words in [(2, "not JSON"), (3, "not a valid SIP user name"),
                          (5, "needs password or ha1_md5"), (6, "32 hex"),
                          (7, "already on line 1"), (8, "not both"), (9, "unknown field")]:
        assert "line %d: " % number in err and words in err, (number, err)
    assert "s3cret" not in err and "again" not in err
    assert not db_path(config).exists() or stored(config, "1111") is None


def test_existing_users_are_bad_lines_unless_update(config: Path, tmp_path: Path) -> None:
    ok(admin(config, "user", "add", "2222", "--password-stdin", stdin="old\n"))
    users = tmp_path / "users.csv"
    users.write_text("name,password\n1111,pw\n2222,new\n")
    fails(admin(config, "user", "import", str(users)), "line 3: user 2222 already exists")
    assert stored(config, "1111") is None
    ok(admin(config, "user", "import", "--update", str(users)))
    assert stored(config, "2222")[0] == ha1("2222", "new")  # type: ignore[index]


def test_a_csv_without_a_name_column_is_refused(config: Path, tmp_path: Path) -> None:
    users = tmp_path / "users.csv"
    users.write_text("user,password\n1111,pw\n")
    fails(admin(config, "user", "import", str(users)), "name")


def test_100k_users_in_well_under_a_minute(config: Path, tmp_path: Path) -> None:
    users = tmp_path / "users.csv"
    users.write_text("name,password\n" + "".join(
        "%d,pw%d\n" % (100000 + i, i) for i in range(100000)))
    started = time.monotonic()
    out = ok(admin(config, "user", "import", str(users)))
    elapsed = time.monotonic() - started
    assert "imported 100000 users" in out
    assert elapsed < 60, elapsed
    assert stored(config, "199999")[0] == ha1("199999", "pw99999")  # type: ignore[index]


def test_bindings_stream_prints_what_the_whole_list_printed(
        capsys: pytest.CaptureFixture[str]) -> None:
    from b2bua.admin import _stream_json, _stream_table, print_json, table
    documents = [{"id": 1, "path": ["<sip:a;lr>", "b"], "x": {"y": None}, "t": "a\nb"},
                 {"id": 2, "path": [], "x": {}, "t": ""}]
    for docs in (documents, documents[:1], []):
        print_json(docs)
        whole = capsys.readouterr().out
        _stream_json(iter(docs))
        assert capsys.readouterr().out == whole
    rows = [["1", "sip:1111@x", "12s"], ["22", "sip:2@x", "4m05s"]]
    _stream_table(["ID", "AOR", "EXPIRES IN"], iter(rows), "none")
    assert capsys.readouterr().out == table(["ID", "AOR", "EXPIRES IN"], rows) + "\n"
    _stream_table(["ID"], iter([]), "none")
    assert capsys.readouterr().out == "none\n"


def test_bindings_are_read_as_they_are_printed(tmp_path: Path) -> None:
    from b2bua.store.bindings import Binding
    store = Store.open(tmp_path / "b.sqlite3")
    store.bindings.write([Binding(aor="sip:%d@x" % n, contact="sip:%d@h" % n,
                                  expires_at=100.0 + n, updated_at=0.0) for n in range(5)])
    rows = store.bindings.iter_live(102.0)
    assert next(rows).aor == "sip:3@x"   # a generator: nothing else read yet
    assert [b.aor for b in rows] == ["sip:4@x"]
    store.close()
