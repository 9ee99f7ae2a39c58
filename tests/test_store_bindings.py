"""Bindings: device identity, push-token keeping, expiry, persistence."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from b2bua.registrar.push_token import PushBinding, parse_x_mpush
from b2bua.store import Store
from b2bua.store.bindings import Binding, BindingStore, merge_binding, normalise_aor

NOW = 1_700_000_000.0
AOR = "sip:1111@sip.mydomain.com"
TOKEN = "c-10-ap_Kt0:G7SThkASJx2K4Rm1033iR0mIgzI1cLg5xxpST4cjrd_cqQquRLkHMi3eY4g"


def make(contact: str = "sip:1111@192.168.1.101:14501", **changes: Any) -> Binding:
    values: dict[str, Any] = {
        "aor": AOR,
        "contact": contact,
        "expires_at": NOW + 3600,
        "updated_at": NOW,
        "user": "1111",
        "call_id": "enutmuwaynqib",
        "cseq": 2,
        "source_transport": "UDP",
        "source_host": "203.0.113.7",
        "source_port": 14501,
        "local_host": "198.51.100.1",
        "local_port": 5060,
        "user_agent": "MyCoolApp",
    }
    values.update(changes)
    return Binding(**values)


def with_token(binding: Binding, token: str = TOKEN) -> Binding:
    push = parse_x_mpush(f"i:com.mycompany.myapp:{token}")
    assert isinstance(push, PushBinding)
    return binding.with_push(push)


@pytest.fixture(params=["memory", "file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BindingStore]:
    path = ":memory:" if request.param == "memory" else tmp_path / "bindings.sqlite3"
    opened = Store.open(path)
    yield opened.bindings
    opened.close()


# -- AOR normalisation -------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("sip:1111@sip.mydomain.com", "sip:1111@sip.mydomain.com"),
        ("SIP:1111@SIP.MyDomain.com", "sip:1111@sip.mydomain.com"),
        ("sip:1111@sip.mydomain.com;transport=tcp?subject=x", "sip:1111@sip.mydomain.com"),
        ("<sip:1111@sip.mydomain.com;user=phone>", "sip:1111@sip.mydomain.com"),
        ('"Alice" <sip:%31111@sip.mydomain.com>;tag=x', "sip:1111@sip.mydomain.com"),
        ("sip:1111:secret@sip.mydomain.com:5060", "sip:1111@sip.mydomain.com:5060"),
        ("sips:Alice@Example.COM", "sips:Alice@example.com"),
        ("sip:example.com", "sip:example.com"),
        ("tel:+15551234;phone-context=x", "tel:+15551234"),
    ],
)
def test_normalise_aor(given: str, canonical: str) -> None:
    assert normalise_aor(given) == canonical


@pytest.mark.parametrize("bad", ["", "1111", "sip:", "sip:1111@"])
def test_normalise_aor_rejects_non_uris(bad: str) -> None:
    with pytest.raises(ValueError):
        normalise_aor(bad)


# -- identity rules (pure) ---------------------------------------------------


def test_merge_new_device_is_new() -> None:
    change = merge_binding([], make())
    assert change.is_new and change.replaced is None and change.binding.id is None


def test_merge_refresh_of_same_contact_is_not_new() -> None:
    old = make(id=7)
    change = merge_binding([old], make(cseq=3, updated_at=NOW + 60))
    assert not change.is_new and change.replaced == old and change.binding.id == 7


def test_merge_contact_equal_but_other_instance_is_a_duplicate_removed() -> None:
    old = make(id=1, instance_id="<urn:uuid:a>", reg_id=1)
    new = make(instance_id="<urn:uuid:b>", reg_id=1)
    change = merge_binding([old], new)
    assert change.replaced is None and change.removed == (old,) and not change.is_new


# -- BindingStore ------------------------------------------------------------


def test_upsert_new_then_refresh(store: BindingStore) -> None:
    first, is_new = store.upsert(make())
    assert is_new and first.id is not None
    again, is_new = store.upsert(make(cseq=3, updated_at=NOW + 30, expires_at=NOW + 3630))
    assert not is_new and again.id == first.id and again.cseq == 3
    assert store.list_for_aor(AOR, NOW + 31) == [again]


def test_phone_back_on_new_port_with_same_token_replaces_stale_binding(
    store: BindingStore,
) -> None:
    stale, _ = store.upsert(with_token(make("sip:1111@192.168.1.101:14501")))
    change = store.upsert_change(
        with_token(make("sip:1111@192.168.1.101:14999", call_id="new", updated_at=NOW + 90))
    )
    assert change.is_new  # a new contact: a waiting call forks to it
    assert change.replaced == stale
    assert change.binding.id == stale.id
    live = store.list_for_aor(AOR, NOW + 91)
    assert [b.contact for b in live] == ["sip:1111@192.168.1.101:14999"]
    assert live[0].push_token == TOKEN


def test_instance_id_identifies_the_device(store: BindingStore) -> None:
    instance = "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"
    store.upsert(make("sip:1111@10.0.0.1:5060", instance_id=instance, reg_id=1))
    _, is_new = store.upsert(make("sip:1111@10.0.0.1:6000", instance_id=instance, reg_id=1))
    assert is_new
    assert [b.contact for b in store.list_for_aor(AOR, NOW)] == ["sip:1111@10.0.0.1:6000"]
    # Another flow (reg-id 2) of the same instance is its own binding (RFC 5626).
    store.upsert(make("sip:1111@10.0.0.1:7000", instance_id=instance, reg_id=2))
    assert len(store.list_for_aor(AOR, NOW)) == 2


def test_instance_wins_over_token(store: BindingStore) -> None:
    store.upsert(with_token(make("sip:1111@10.0.0.1:1", instance_id="<urn:uuid:a>")))
    store.upsert(with_token(make("sip:1111@10.0.0.1:2", instance_id="<urn:uuid:b>")))
    assert len(store.list_for_aor(AOR, NOW)) == 2


def test_without_identity_contacts_are_separate_devices(store: BindingStore) -> None:
    store.upsert(make("sip:1111@10.0.0.1:5060"))
    _, is_new = store.upsert(make("sip:1111@10.0.0.2:5060"))
    assert is_new and len(store.list_for_aor(AOR, NOW)) == 2


def test_first_token_on_a_known_contact_updates_it(store: BindingStore) -> None:
    plain, _ = store.upsert(make())
    tokened, is_new = store.upsert(with_token(make(updated_at=NOW + 1)))
    assert not is_new and tokened.id == plain.id and tokened.push_token == TOKEN


def test_refresh_without_header_keeps_token(store: BindingStore) -> None:
    store.upsert(with_token(make()))
    kept, _ = store.upsert(make(cseq=3, updated_at=NOW + 60))
    assert kept.push_token == TOKEN
    assert kept.push_provider == "i"
    assert kept.push_topic == "com.mycompany.myapp.voip"
    assert kept.push_source == "x-mpush"


def test_null_token_drops_the_push_binding(store: BindingStore) -> None:
    store.upsert(with_token(make()))
    cleared, is_new = store.upsert(make(cseq=3, updated_at=NOW + 60), keep_push=False)
    assert not is_new and cleared.push_token is None and cleared.push_provider is None
    assert store.list_for_aor(AOR, NOW + 61)[0].push_token is None


def test_same_token_under_two_aors_stays_two_bindings(store: BindingStore) -> None:
    # A multi-account app registers both accounts with one device token.
    store.upsert(with_token(make()))
    _, is_new = store.upsert(with_token(make(aor="sip:2222@sip.mydomain.com")))
    assert is_new
    assert len(store.list_all(NOW)) == 2


def test_expired_binding_coming_back_counts_as_new(store: BindingStore) -> None:
    store.upsert(make(expires_at=NOW + 60))
    back, is_new = store.upsert(make(updated_at=NOW + 120, expires_at=NOW + 3720))
    assert is_new and len(store.list_all()) == 1 and back.expires_at == NOW + 3720


def test_list_for_aor_skips_expired_and_orders_by_q(store: BindingStore) -> None:
    store.upsert(make("sip:a@h", q=0.5))
    store.upsert(make("sip:b@h", q=None, updated_at=NOW + 1))
    store.upsert(make("sip:c@h", q=1.0))
    store.upsert(make("sip:d@h", expires_at=NOW + 10))
    contacts = [b.contact for b in store.list_for_aor(AOR, NOW + 20)]
    assert contacts == ["sip:b@h", "sip:c@h", "sip:a@h"]
    assert len(store.list_for_aor(AOR, NOW)) == 4


def test_aor_is_normalised_on_write_and_read(store: BindingStore) -> None:
    stored, _ = store.upsert(make(aor="<SIP:1111@SIP.MYDOMAIN.COM;transport=udp>"))
    assert stored.aor == AOR
    assert store.list_for_aor("sip:1111@sip.mydomain.com;user=phone", NOW) == [stored]


def test_remove_one_contact(store: BindingStore) -> None:
    store.upsert(make("sip:a@h"))
    store.upsert(make("sip:b@h"))
    assert store.remove(AOR, "sip:a@h")
    assert not store.remove(AOR, "sip:a@h")
    assert [b.contact for b in store.list_for_aor(AOR, NOW)] == ["sip:b@h"]


def test_remove_by_id_and_get(store: BindingStore) -> None:
    stored, _ = store.upsert(make())
    assert stored.id is not None and store.get(stored.id) == stored
    assert store.remove_by_id(stored.id)
    assert store.get(stored.id) is None
    assert not store.remove_by_id(stored.id)


def test_remove_all(store: BindingStore) -> None:
    store.upsert(make("sip:a@h"))
    store.upsert(make("sip:b@h"))
    store.upsert(make("sip:c@h", aor="sip:2222@sip.mydomain.com"))
    assert store.remove_all(AOR) == 2
    assert [b.aor for b in store.list_all()] == ["sip:2222@sip.mydomain.com"]


def test_remove_push_token_clears_every_carrier(store: BindingStore) -> None:
    store.upsert(with_token(make("sip:a@h")))
    store.upsert(with_token(make("sip:a@h", aor="sip:2222@sip.mydomain.com")))
    store.upsert(with_token(make("sip:b@h"), token="other-token-1234567890"))
    assert store.remove_push_token(TOKEN) == 2
    rows = store.list_all()
    assert len(rows) == 3  # the SIP bindings stay
    assert sorted(b.push_token or "-" for b in rows) == ["-", "-", "other-token-1234567890"]
    assert all(b.push_topic is None for b in rows if b.push_token is None)
    assert store.list_for_push_token(TOKEN) == []


def test_purge_expired(store: BindingStore) -> None:
    store.upsert(make("sip:a@h", expires_at=NOW + 10))
    store.upsert(make("sip:b@h", expires_at=NOW + 100))
    assert store.purge_expired(NOW + 10) == 1
    assert [b.contact for b in store.list_all()] == ["sip:b@h"]
    assert store.list_all(NOW + 100) == []


def test_binding_ids_are_never_reused(store: BindingStore) -> None:
    first, _ = store.upsert(make("sip:a@h"))
    second, _ = store.upsert(make("sip:b@h"))
    assert second.id is not None and store.remove_by_id(second.id)
    third, _ = store.upsert(make("sip:c@h"))
    assert third.id is not None and third.id > second.id
    assert store.highest_id() == third.id


def test_all_fields_round_trip(store: BindingStore) -> None:
    full = with_token(
        make(
            q=0.7,
            path=("<sip:edge1.example;lr>", "<sip:edge2.example;lr>"),
            instance_id='"<urn:uuid:1>"',
            reg_id=1,
        )
    )
    stored, _ = store.upsert(full)
    assert stored == full
    assert store.list_for_aor(AOR, NOW) == [full]
    assert store.list_for_aor(AOR, NOW)[0].path == full.path


def test_repr_hides_the_push_token() -> None:
    assert TOKEN not in repr(with_token(make()))


def test_bindings_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "bindings.sqlite3"
    first = Store.open(path)
    stored, _ = first.bindings.upsert(with_token(make()))
    first.close()
    again = Store.open(path)
    assert again.bindings.list_for_aor(AOR, NOW) == [stored]
    # The same phone after the restart: refresh, not a new device.
    _, is_new = again.bindings.upsert(with_token(make(updated_at=NOW + 5)))
    assert not is_new
    again.close()
