"""Provider tokens: ES256, minted once, refreshed on schedule, forced at most once early."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from twisted.internet.task import Clock

from b2bua.push.jwt_token import ProviderToken
from b2bua.push.outcome import PushConfigError
from tests.fake_apns import FakePki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> FakePki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _token(pki: FakePki, clock: Clock, **kw: float) -> ProviderToken:
    return ProviderToken(pki.key_file.read_bytes(), pki.key_id, pki.team_id, clock, **kw)


def _decode(pki: FakePki, authorization: str) -> tuple[dict[str, object], dict[str, object]]:
    assert authorization.startswith("bearer ")
    token = authorization[len("bearer "):]
    claims = jwt.decode(token, pki.public_key(), algorithms=["ES256"], options={"verify_iat": False})
    return jwt.get_unverified_header(token), claims


def test_token_is_es256_with_kid_iss_iat(pki: FakePki) -> None:
    clock = Clock()
    clock.advance(1_700_000_000.7)
    header, claims = _decode(pki, _token(pki, clock).authorization())
    assert header["alg"] == "ES256" and header["kid"] == pki.key_id
    assert claims == {"iss": pki.team_id, "iat": 1_700_000_000}


def test_token_is_reused_until_refresh_after(pki: FakePki) -> None:
    clock = Clock()
    token = _token(pki, clock)
    first = token.authorization()
    clock.advance(40 * 60 - 0.1)
    assert token.authorization() == first
    assert token.minted == 1
    clock.advance(0.2)
    second = token.authorization()
    assert second != first and token.minted == 2
    assert _decode(pki, second)[1]["iat"] == 2400


@pytest.mark.parametrize("minutes", [19, 61])
def test_refresh_interval_must_be_20_to_60_minutes(pki: FakePki, minutes: int) -> None:
    with pytest.raises(PushConfigError, match="between 20 and 60"):
        _token(pki, Clock(), refresh_after=minutes * 60)


def test_expired_token_forces_one_refresh_then_refuses_for_20_minutes(pki: FakePki) -> None:
    clock = Clock()
    token = _token(pki, clock)
    rejected = token.authorization()
    clock.advance(5)
    assert token.invalidate(rejected) is True
    fresh = token.authorization()
    assert fresh != rejected and token.minted == 2
    clock.advance(60)
    assert token.invalidate(fresh) is False  # forced once already: the clock must be wrong
    assert token.authorization() == fresh
    clock.advance(20 * 60)
    assert token.invalidate(fresh) is True
    assert token.authorization() != fresh and token.minted == 3


def test_invalidating_an_already_replaced_token_mints_nothing(pki: FakePki) -> None:
    clock = Clock()
    token = _token(pki, clock)
    old = token.authorization()
    assert token.invalidate(old)
    new = token.authorization()
    for _ in range(5):  # the other pushes that were in flight with the old token
        assert token.invalidate(old) is True
    assert token.authorization() == new and token.minted == 2


def test_garbage_key_is_a_config_error_that_does_not_quote_it(pki: FakePki) -> None:
    secret = "-----BEGIN PRIVATE KEY-----\nTOPSECRETgarbage\n-----END PRIVATE KEY-----\n"
    with pytest.raises(PushConfigError) as raised:
        ProviderToken(secret, pki.key_id, pki.team_id, Clock())
    assert "TOPSECRET" not in str(raised.value)
    assert "key_file" in str(raised.value)


@pytest.mark.parametrize("make", [
    lambda: ec.generate_private_key(ec.SECP384R1()),
    lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024),
])
def test_key_of_the_wrong_kind_is_a_config_error(pki: FakePki, make: object) -> None:
    key = make()  # type: ignore[operator]
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    with pytest.raises(PushConfigError, match="P-256"):
        ProviderToken(pem, pki.key_id, pki.team_id, Clock())


@pytest.mark.parametrize("key_id, team_id", [("", "DEF123GHIJ"), ("ABC123DEFG", ""), ("ABC 123", "X")])
def test_missing_ids_are_config_errors(pki: FakePki, key_id: str, team_id: str) -> None:
    with pytest.raises(PushConfigError):
        ProviderToken(pki.key_file.read_bytes(), key_id, team_id, Clock())


def test_key_as_text(pki: FakePki) -> None:
    token = ProviderToken(Path(pki.key_file).read_text(), pki.key_id, pki.team_id, Clock())
    assert token.authorization().startswith("bearer ")
