"""Users: HA1 only, never the password; clear errors; enabled flag."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from twisted.internet.task import Clock

from b2bua.store import Store
from b2bua.store.users import UnknownUser, UserExists, UserStore, compute_ha1

REALM = "sip.mydomain.com"


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    clock = Clock()
    clock.advance(1_700_000_000)
    path = ":memory:" if request.param == "memory" else tmp_path / "users.sqlite3"
    opened = Store.open(path, clock)
    yield opened
    opened.close()


def test_add_stores_ha1s_not_the_password(store: Store) -> None:
    user = store.users.add("1111", REALM, "s3cret", display_name="Alice")
    assert user.ha1_md5 == hashlib.md5(f"1111:{REALM}:s3cret".encode()).hexdigest()
    assert user.ha1_sha256 == hashlib.sha256(f"1111:{REALM}:s3cret".encode()).hexdigest()
    assert user.created_at == 1_700_000_000
    assert store.users.get("1111", REALM) == user
    dump = "\n".join(store.db.iterdump())
    assert "s3cret" not in dump


def test_rfc2617_ha1_vector() -> None:
    # RFC 2617 3.5: Mufasa / testrealm@host.com / Circle Of Life
    assert compute_ha1("Mufasa", "testrealm@host.com", "Circle Of Life") == (
        "939e7578ed9e3c518a452acee763bce9"
    )


def test_add_existing_user_raises_clearly(store: Store) -> None:
    store.users.add("1111", REALM, "a")
    with pytest.raises(UserExists, match="1111"):
        store.users.add("1111", REALM, "b")
    # Same name in another realm is another user.
    store.users.add("1111", "other.example", "b")
    assert len(store.users.list()) == 2


def test_set_password_changes_both_ha1s(store: Store) -> None:
    before = store.users.add("1111", REALM, "old")
    store.users.set_password("1111", REALM, "new")
    after = store.users.get("1111", REALM)
    assert after is not None
    assert after.ha1_md5 == compute_ha1("1111", REALM, "new", "MD5") != before.ha1_md5
    assert after.ha1_sha256 == compute_ha1("1111", REALM, "new", "SHA-256")


def test_changes_to_unknown_users_raise(store: Store) -> None:
    with pytest.raises(UnknownUser):
        store.users.set_password("nobody", REALM, "x")
    with pytest.raises(UnknownUser):
        store.users.set_enabled("nobody", REALM, False)
    with pytest.raises(UnknownUser):
        store.users.remove("nobody", REALM)


def test_remove(store: Store) -> None:
    store.users.add("1111", REALM, "a")
    store.users.remove("1111", REALM)
    assert store.users.get("1111", REALM) is None


def test_disabled_user_has_no_ha1_like_an_unknown_one(store: Store) -> None:
    store.users.add("1111", REALM, "pw")
    lookup = store.users.ha1_lookup(REALM)
    assert lookup("1111", "SHA-256") == compute_ha1("1111", REALM, "pw", "SHA-256")
    assert lookup("1111", "MD5") == compute_ha1("1111", REALM, "pw", "MD5")
    assert lookup("1111", "SHA-512-256") is None
    store.users.set_enabled("1111", REALM, False)
    user = store.users.get("1111", REALM)
    assert user is not None and not user.enabled
    assert lookup("1111", "MD5") is None
    assert lookup("2222", "MD5") is None
    store.users.set_enabled("1111", REALM, True)
    assert lookup("1111", "MD5") is not None


def test_list_is_sorted_and_filterable(store: Store) -> None:
    for name in ("3333", "1111", "2222"):
        store.users.add(name, REALM, "pw")
    store.users.add("0000", "a.example", "pw")
    assert [u.name for u in store.users.list(REALM)] == ["1111", "2222", "3333"]
    assert [(u.realm, u.name) for u in store.users.list()][0] == ("a.example", "0000")


def test_names_with_colons_or_empty_are_rejected(store: Store) -> None:
    with pytest.raises(ValueError):
        store.users.add("a:b", REALM, "pw")
    with pytest.raises(ValueError):
        store.users.add("", REALM, "pw")


def test_users_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "users.sqlite3"
    first = Store.open(path)
    first.users.add("1111", REALM, "pw", "Alice")
    first.close()
    again = Store.open(path)
    user = again.users.get("1111", REALM)
    assert user is not None and user.display_name == "Alice"
    again.close()


def test_user_store_on_a_bare_database_uses_the_wall_clock() -> None:
    store = Store.open()
    users = UserStore(store.db)
    assert users.add("1111", REALM, "pw").created_at > 1_600_000_000


def _every_change_is_seen(writer: UserStore, reader: UserStore) -> None:
    """``reader.get`` answers from a cache: each change through ``writer`` must show."""
    assert reader.get("1111", REALM) is None      # an unknown name is cached too
    writer.add("1111", REALM, "one")
    assert reader.ha1("1111", REALM, "MD5") == compute_ha1("1111", REALM, "one")
    writer.set_password("1111", REALM, "two")
    assert reader.ha1("1111", REALM, "MD5") == compute_ha1("1111", REALM, "two")
    writer.set_enabled("1111", REALM, False)
    assert reader.ha1("1111", REALM, "MD5") is None
    writer.remove("1111", REALM)
    assert reader.get("1111", REALM) is None


def test_lookups_see_every_change_made_here(store: Store) -> None:
    _every_change_is_seen(store.users, store.users)


def test_lookups_see_changes_made_by_another_connection(tmp_path: Path) -> None:
    """b2bua-admin writes through its own connection while the service runs."""
    path = tmp_path / "users.sqlite3"
    service, admin = Store.open(path), Store.open(path)
    try:
        _every_change_is_seen(admin.users, service.users)
    finally:
        service.close()
        admin.close()


def test_the_lookup_cache_is_bounded(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(UserStore, "max_cached", 3)
    for i in range(10):
        assert store.users.get("nobody%d" % i, REALM) is None
        assert len(store.users._cache) <= 3


def test_a_flood_of_unknown_names_does_not_push_out_the_users_in_use(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache used to empty itself whole when full: every user was read from
    SQLite again.  It is an LRU now: the users asked for stay."""
    monkeypatch.setattr(UserStore, "max_cached", 4)
    store.users.add("1111", REALM, "pw")
    store.users.add("2222", REALM, "pw")
    reads: list[str] = []
    store.db.conn.set_trace_callback(reads.append)
    try:
        for i in range(20):
            assert store.users.get("1111", REALM) is not None
            assert store.users.get("2222", REALM) is not None
            assert store.users.get("nobody%d" % i, REALM) is None
    finally:
        store.db.conn.set_trace_callback(None)
    selects = [r for r in reads if r.startswith("SELECT")]
    assert len(selects) == 2 + 20   # each user once, each unknown name once
    assert len(store.users._cache) == 4
