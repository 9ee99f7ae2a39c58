"""Push tokens outlive contacts ([push] token_lifetime), driven by a Clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from b2bua.registrar.events import BindingEventKind
from tests.test_registrar import AOR, EXAMPLE, FLUSH, TOKEN, Harness, set_cseq

LIFETIME = 30 * 86400.0


@pytest.fixture(params=["store", "writer"])
def h(request: pytest.FixtureRequest) -> Iterator[Harness]:
    harness = Harness(batched=request.param == "writer")
    harness.registrar.token_lifetime = LIFETIME
    yield harness


def _kept(h: Harness) -> list:
    return h.registrar.kept_bindings(AOR)


def _again(h: Harness, text: str) -> int:
    """Register after a long sleep: the old nonce is stale, so a fresh challenge first."""
    h.nonce = None
    return h.register(text).status


def _purge(h: Harness) -> int:
    counts: list[int] = []
    h.registrar.purge().addCallback(counts.append)
    h.clock.advance(FLUSH)
    return counts[0]


def test_token_kept_after_the_contact_expires_until_token_lifetime(h: Harness) -> None:
    assert h.register().status == 200
    h.clock.advance(3600)                           # the contact expires
    assert h.bindings() == []
    _purge(h)
    kept = _kept(h)
    assert [b.push_token for b in kept] == [TOKEN]
    h.clock.advance(LIFETIME - 1)                   # just before the token's end
    assert _purge(h) == 0 and len(_kept(h)) == 1
    h.clock.advance(2)                              # just past it
    assert _kept(h) == []
    assert _purge(h) == 1
    assert h.store.bindings.list_all() == []


def test_binding_without_token_goes_with_its_contact(h: Harness) -> None:
    text = EXAMPLE.replace("X-MPUSH", "X-Other")
    assert h.register(text).status == 200
    h.clock.advance(3601)
    assert _kept(h) == []
    assert _purge(h) == 1


def test_phone_back_replaces_its_kept_binding(h: Harness) -> None:
    assert h.register().status == 200
    old_id = h.store.bindings.list_all()[0].id if h.location is h.store.bindings else \
        h.location.list_all()[0].id
    h.clock.advance(7200)
    _purge(h)
    moved = set_cseq(EXAMPLE, 3).replace("192.168.1.101:14501>", "192.168.1.101:15555>")
    assert _again(h, moved) == 200
    live = h.bindings()
    assert len(live) == 1 and live[0].id == old_id   # the same device, not a second one
    assert live[0].contact.endswith(":15555")
    assert _kept(h) == []
    assert h.kinds()[-1] is BindingEventKind.ADDED   # a waiting call forks to it


def test_unregister_drops_the_kept_token(h: Harness) -> None:
    assert h.register().status == 200
    h.clock.advance(7200)
    assert len(_kept(h)) == 1
    gone = set_cseq(EXAMPLE, 3).replace("Expires: 3600", "Expires: 0")
    assert _again(h, gone) == 200
    assert _kept(h) == []


def test_null_token_drops_the_kept_token(h: Harness) -> None:
    assert h.register().status == 200
    h.clock.advance(3000)
    null = set_cseq(EXAMPLE, 3).replace(TOKEN, "null").replace("Expires: 3600", "Expires: 60")
    assert _again(h, null) == 200
    h.clock.advance(61)
    assert _kept(h) == []


def test_dead_token_drops_the_kept_binding(h: Harness) -> None:
    assert h.register().status == 200
    h.clock.advance(7200)
    h.location.remove_push_token(TOKEN)
    h.clock.advance(FLUSH)
    assert _kept(h) == []
    assert _purge(h) == 1


def test_kept_binding_survives_a_restart(h: Harness) -> None:
    from b2bua.store.writer import BindingWriter

    assert h.register().status == 200
    h.clock.advance(7200)
    _purge(h)
    reopened = BindingWriter(h.store.bindings, h.clock)     # what a restart reads
    kept = reopened.list_kept_for_aor(AOR, h.clock.seconds(), LIFETIME)
    assert [b.push_token for b in kept] == [TOKEN]


def test_zero_lifetime_keeps_nothing(h: Harness) -> None:
    h.registrar.token_lifetime = 0
    assert h.register().status == 200
    h.clock.advance(3601)
    assert _kept(h) == []
    assert _purge(h) == 1


@pytest.mark.parametrize("batched", [False, True])
def test_a_dead_remote_token_keeps_the_voip_one(batched: bool) -> None:
    from twisted.internet.task import Clock

    from b2bua.store import Store
    from b2bua.store.bindings import Binding
    from b2bua.store.writer import BindingWriter

    clock = Clock()
    store = Store.open(":memory:", clock)
    location = BindingWriter(store.bindings, clock) if batched else store.bindings
    binding = Binding(aor=AOR, contact="sip:1111@192.0.2.1", expires_at=3600, updated_at=0,
                      push_provider="i", push_token="VOIP", push_remote_token="REMOTE")
    location.upsert(binding)
    clock.advance(1)
    location.remove_push_token("REMOTE")
    clock.advance(1)
    (row,) = store.bindings.list_all()
    assert (row.push_token, row.push_remote_token) == ("VOIP", None)
    location.remove_push_token("VOIP")
    clock.advance(1)
    (row,) = store.bindings.list_all()
    assert (row.push_token, row.push_remote_token) == (None, None)
