"""Digest authentication: RFC vectors, challenges, verification, replay, throttling."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from b2bua.sip.digest import (
    AuthResult,
    AuthStatus,
    DigestAuthenticator,
    _PARAMS_FULL_RE,
    _SCHEME_RE,
    MalformedCredentials,
    _parse_params_stepwise,
    parse_auth_header,
    parse_credentials,
)
from b2bua.sip.auth_throttle import FailureThrottle
from b2bua.sip.digest_client import build_authorization, choose_challenge

REALM = "sip.mydomain.com"
PASSWORD = "s3cret"
USERS = {"1111": PASSWORD}


def ha1(name: str, algorithm: str) -> str:
    hash_name = {"MD5": "md5", "SHA-256": "sha256"}[algorithm]
    return hashlib.new(hash_name, f"{name}:{REALM}:{USERS[name]}".encode()).hexdigest()


class Lookup:
    """lookup_ha1 that records what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, name: str, algorithm: str) -> str | None:
        self.calls.append((name, algorithm))
        return ha1(name, algorithm) if name in USERS else None


def make_auth(
    clock: Clock | None = None, secret: bytes = b"k" * 32, **kwargs: object
) -> DigestAuthenticator:
    if clock is None:
        clock = Clock()
        clock.advance(1_700_000_000)
    return DigestAuthenticator(REALM, clock, secret, **kwargs)  # type: ignore[arg-type]


def answer(
    challenge: str,
    *,
    user: str = "1111",
    password: str = PASSWORD,
    method: str = "REGISTER",
    uri: str = "sip:sip.mydomain.com",
    nc: int = 1,
    cnonce: str = "0a4f113b",
) -> str:
    return build_authorization(challenge, method, uri, user, password, cnonce, nc)


# -- RFC test vectors (client side) -------------------------------------------


def test_rfc2617_md5_vector() -> None:
    challenge = (
        'Digest realm="testrealm@host.com", qop="auth,auth-int", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    value = build_authorization(
        challenge, "GET", "/dir/index.html", "Mufasa", "Circle Of Life", "0a4f113b", 1
    )
    params = parse_credentials(value)
    assert params["response"] == "6629fae49393a05397450978507c4ef1"
    assert (params["qop"], params["nc"], params["opaque"]) == (
        "auth",
        "00000001",
        "5ccc069c403ebaf9f0171e9517f40e41",
    )


@pytest.mark.parametrize(
    ("algorithm", "response"),
    [
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ],
)
def test_rfc7616_vectors(algorithm: str, response: str) -> None:
    challenge = (
        f'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm={algorithm}, '
        'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
        'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
    )
    value = build_authorization(
        challenge,
        "GET",
        "/dir/index.html",
        "Mufasa",
        "Circle of Life",
        "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        1,
    )
    assert parse_credentials(value)["response"] == response
    assert parse_credentials(value)["algorithm"] == algorithm


def test_client_answers_rfc2069_challenge_without_qop() -> None:
    challenge = 'Digest realm="r", nonce="n"'
    value = build_authorization(challenge, "INVITE", "sip:a@b", "u", "p", "c", 5)
    params = parse_credentials(value)
    assert "qop" not in params and "nc" not in params and "cnonce" not in params
    ha1_ = hashlib.md5(b"u:r:p").hexdigest()
    ha2 = hashlib.md5(b"INVITE:sip:a@b").hexdigest()
    assert params["response"] == hashlib.md5(f"{ha1_}:n:{ha2}".encode()).hexdigest()


def test_client_refuses_auth_int_only_and_non_digest() -> None:
    for challenge in (
        'Digest realm="r", nonce="n", qop="auth-int"',
        'Basic realm="r"',
        'Digest realm="r", nonce="n", algorithm=SHA-1',
    ):
        with pytest.raises(MalformedCredentials):
            build_authorization(challenge, "INVITE", "u", "a", "b", "c")


def test_choose_challenge_prefers_the_strongest() -> None:
    md5 = 'Digest realm="r", nonce="n", algorithm=MD5'
    sha = 'Digest realm="r", nonce="n", algorithm=SHA-256'
    assert choose_challenge([md5, sha]) == sha
    assert choose_challenge(['Basic realm="r"', 'Digest realm="r", nonce="n"']) == (
        'Digest realm="r", nonce="n"'
    )
    assert choose_challenge(['Digest realm="r", algorithm=SHA-1', "garbage ="]) is None


# -- parsing ------------------------------------------------------------------


def test_parse_credentials_is_robust_to_spacing_and_quoting() -> None:
    value = (
        'Digest  username = "11\\"11",realm="a, b",nonce=xyz ,  uri="sip:gw.mydomain.com" ,'
        "NC=00000001,qop=auth , response=\"ABC\""
    )
    assert parse_credentials(value) == {
        "username": '11"11',
        "realm": "a, b",
        "nonce": "xyz",
        "uri": "sip:gw.mydomain.com",
        "nc": "00000001",
        "qop": "auth",
        "response": "ABC",
    }
    assert parse_auth_header("digest realm=x")[0] == "digest"


@pytest.mark.parametrize(
    "value",
    [
        "",
        'Basic dXNlcjpwYXNz',
        'Digest username="unterminated',
        "Digest username",
        'Digest username="a", username="b"',
        'username="a"',
    ],
)
def test_parse_credentials_rejects(value: str) -> None:
    with pytest.raises(MalformedCredentials):
        parse_credentials(value)


@given(st.text())
def test_parse_never_fails_otherwise(text: str) -> None:
    try:
        parse_credentials(text)
    except MalformedCredentials:
        pass


NAMES = st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True)


@given(st.dictionaries(NAMES, st.text(), min_size=1))
def test_quoted_values_round_trip(params: dict[str, str]) -> None:
    quoted = ", ".join(
        f'{k}="' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for k, v in params.items()
    )
    assert parse_credentials("Digest " + quoted) == params


# -- challenges -----------------------------------------------------------------


def test_challenges_sha256_first_then_md5() -> None:
    auth = make_auth()
    values = auth.challenges()
    assert len(values) == 2
    first, second = (parse_auth_header(v) for v in values)
    assert first[0] == second[0] == "Digest"
    assert first[1]["algorithm"] == "SHA-256" and second[1]["algorithm"] == "MD5"
    for _, params in (first, second):
        assert params["realm"] == REALM and params["qop"] == "auth"
        assert params["opaque"] == auth.opaque and "stale" not in params
    assert first[1]["nonce"] == second[1]["nonce"]
    assert parse_auth_header(auth.challenges()[0])[1]["nonce"] != first[1]["nonce"]
    assert parse_auth_header(auth.challenges(stale=True)[1])[1]["stale"] == "true"


# -- verification -----------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1])
def test_round_trip_ok_for_each_offered_algorithm(index: int) -> None:
    auth = make_auth()
    lookup = Lookup()
    result = auth.verify(answer(auth.challenges()[index]), "REGISTER", lookup)
    algorithm = ("SHA-256", "MD5")[index]
    assert result == AuthResult(AuthStatus.OK, "", "1111", algorithm)
    assert result.ok and lookup.calls == [("1111", algorithm)]


@pytest.mark.parametrize("algorithm", ["SHA-256-sess", "md5-SESS", "sha-256"])
def test_sess_and_lowercase_algorithm_names(algorithm: str) -> None:
    auth = make_auth()
    nonce = parse_auth_header(auth.challenges()[0])[1]["nonce"]
    challenge = f'Digest realm="{REALM}", nonce="{nonce}", qop="auth", algorithm={algorithm}'
    assert auth.verify(answer(challenge), "REGISTER", Lookup()).ok


def test_the_example_phone_without_qop_and_with_another_uri_host() -> None:
    """push-facts.md: no qop/algorithm, uri="sip:gw.mydomain.com" != Request-URI."""
    auth = make_auth()
    nonce = parse_auth_header(auth.challenges()[1])[1]["nonce"]
    ha2 = hashlib.md5(b"REGISTER:sip:gw.mydomain.com").hexdigest()
    response = hashlib.md5(f"{ha1('1111', 'MD5')}:{nonce}:{ha2}".encode()).hexdigest()
    value = (
        f'Digest realm="sip.mydomain.com", nonce="{nonce}", username="1111", '
        f'uri="sip:gw.mydomain.com", response="{response}"'
    )
    assert auth.verify(value, "REGISTER", Lookup()).ok
    # Reused within the nonce lifetime, as such phones do on refresh.
    assert auth.verify(value, "REGISTER", Lookup()).ok
    assert auth.verify(value.replace(response, response.upper()), "REGISTER", Lookup()).ok


def test_unknown_user_and_wrong_password_are_indistinguishable() -> None:
    auth = make_auth()
    challenge = auth.challenges()[0]
    lookup = Lookup()
    wrong = auth.verify(answer(challenge, password="nope"), "REGISTER", lookup)
    unknown = auth.verify(answer(challenge, user="9999"), "REGISTER", lookup)
    assert wrong.status is unknown.status is AuthStatus.FAILED
    assert wrong.reason == unknown.reason == "bad credentials"
    assert wrong.algorithm == unknown.algorithm
    assert [c[0] for c in lookup.calls] == ["1111", "9999"]  # both looked up, same path


def test_digest_covers_the_method() -> None:
    auth = make_auth()
    value = answer(auth.challenges()[0], method="REGISTER")
    assert auth.verify(value, "INVITE", Lookup()).status is AuthStatus.FAILED


def test_realm_must_match() -> None:
    auth = make_auth()
    nonce = parse_auth_header(auth.challenges()[0])[1]["nonce"]
    value = answer(f'Digest realm="evil.example", nonce="{nonce}", qop="auth"')
    result = auth.verify(value, "REGISTER", Lookup())
    assert result.status is AuthStatus.FAILED and result.reason == "realm mismatch"


def test_expired_nonce_is_stale_whatever_the_password() -> None:
    """The nonce is checked before the password: a guess with a dead nonce
    learns nothing from stale=true (issue 21)."""
    clock = Clock()
    auth = make_auth(clock, nonce_ttl=300)
    challenge = auth.challenges()[0]
    clock.advance(299.9)
    assert auth.verify(answer(challenge), "REGISTER", Lookup()).ok
    clock.advance(0.2)
    assert auth.verify(answer(challenge, nc=2), "REGISTER", Lookup()).status is AuthStatus.STALE
    wrong = auth.verify(answer(challenge, nc=3, password="x"), "REGISTER", Lookup())
    assert wrong.status is AuthStatus.STALE


def test_nonce_of_another_secret_is_stale() -> None:
    before_restart = make_auth(secret=b"a" * 32)
    after_restart = make_auth(secret=b"b" * 32)
    value = answer(before_restart.challenges()[0])
    result = after_restart.verify(value, "REGISTER", Lookup())
    assert result.status is AuthStatus.STALE and result.stale


def test_forged_nonce_is_never_ok() -> None:
    auth = make_auth()
    ours = auth._new_nonce()
    for forged in ("a" * 64,              # the length of our nonces, without our MAC
                   ours[:-2] + ("00" if ours[-2:] != "00" else "11"),   # MAC changed
                   ours[:32] + " " + ours[32:],   # fromhex skips the space: our bytes, another text
                   ours[:-1],            # too short
                   "not hex !" * 7):
        value = answer(f'Digest realm="{REALM}", nonce="{forged}", qop="auth"')
        assert auth.verify(value, "REGISTER", Lookup()).status is AuthStatus.STALE, forged
    assert auth.verify(answer(f'Digest realm="{REALM}", nonce="{ours}", qop="auth"'),
                       "REGISTER", Lookup()).status is AuthStatus.OK


def test_opaque_must_be_ours_when_sent() -> None:
    auth = make_auth()
    challenge = auth.challenges()[0].replace(auth.opaque, "someone-elses")
    assert auth.verify(answer(challenge), "REGISTER", Lookup()).status is AuthStatus.STALE


def test_nonce_count_must_increase() -> None:
    auth = make_auth()
    challenge = auth.challenges()[0]
    assert auth.verify(answer(challenge, nc=1), "REGISTER", Lookup()).ok
    replay = auth.verify(answer(challenge, nc=1), "REGISTER", Lookup())
    assert replay.status is AuthStatus.STALE and replay.reason == "nonce count replayed"
    assert auth.verify(answer(challenge, nc=3), "REGISTER", Lookup()).ok
    assert auth.verify(answer(challenge, nc=2), "REGISTER", Lookup()).stale
    assert auth.verify(answer(challenge, nc=0), "REGISTER", Lookup()).stale


def test_failed_attempts_do_not_advance_the_count() -> None:
    auth = make_auth()
    challenge = auth.challenges()[0]
    attack = auth.verify(answer(challenge, nc=0xFFFF, password="guess"), "REGISTER", Lookup())
    assert attack.status is AuthStatus.FAILED
    assert auth.verify(answer(challenge, nc=1), "REGISTER", Lookup()).ok


def test_nonce_table_is_bounded_and_eviction_is_safe() -> None:
    clock = Clock()
    clock.advance(1000)
    auth = make_auth(clock, max_tracked_nonces=3)
    challenges = []
    for _ in range(5):
        challenges.append(auth.challenges()[0])
        clock.advance(1)
    unused = auth.challenges()[0]
    for challenge in challenges:
        assert auth.verify(answer(challenge), "REGISTER", Lookup()).ok
    assert auth.tracked_nonces == 3
    # Evicted nonces cannot be replayed, even with a higher count: re-challenge.
    assert auth.verify(answer(challenges[0], nc=1), "REGISTER", Lookup()).stale
    assert auth.verify(answer(challenges[1], nc=9), "REGISTER", Lookup()).stale
    # Tracked ones keep counting; a nonce newer than every evicted one is fine.
    assert auth.verify(answer(challenges[4], nc=2), "REGISTER", Lookup()).ok
    assert auth.verify(answer(unused), "REGISTER", Lookup()).ok
    assert auth.tracked_nonces == 3


def test_expired_nonces_leave_the_table() -> None:
    clock = Clock()
    auth = make_auth(clock, nonce_ttl=10)
    assert auth.verify(answer(auth.challenges()[0]), "REGISTER", Lookup()).ok
    clock.advance(11)
    assert auth.verify(answer(auth.challenges()[0]), "REGISTER", Lookup()).ok
    assert auth.tracked_nonces == 1


BASE = ('Digest username="1111", realm="sip.mydomain.com", nonce="%s", uri="u"'
        % make_auth()._new_nonce())   # a nonce of ours: the checks after it are reached


@pytest.mark.parametrize(
    ("value", "status"),
    [
        ("Basic dXNlcjpwYXNz", AuthStatus.MALFORMED),
        (BASE, AuthStatus.MALFORMED),
        (BASE + ', response="r", qop=auth', AuthStatus.MALFORMED),
        (BASE + ', response="r", qop=auth, nc=1, cnonce="c"', AuthStatus.MALFORMED),
        (BASE + ', response="r", algorithm=MD5-sess', AuthStatus.MALFORMED),
        (BASE + ', response="r", qop=auth-int, nc=00000001, cnonce="c"', AuthStatus.FAILED),
        (BASE + ', response="r", algorithm=SHA-512-256', AuthStatus.FAILED),
        (BASE + ', response="r", algorithm=FOO', AuthStatus.FAILED),
        (BASE.replace('"1111"', '"x"') + ', response="r", userhash=true', AuthStatus.FAILED),
        (BASE.replace('nonce="', 'nonce="0') + ', response="0"', AuthStatus.STALE),
    ],
)
def test_bad_authorization_values(value: str, status: AuthStatus) -> None:
    assert make_auth().verify(value, "REGISTER", Lookup()).status is status


@given(st.text())
def test_verify_never_raises(text: str) -> None:
    assert isinstance(make_auth().verify(text, "REGISTER", Lookup()), AuthResult)


def test_constructor_checks() -> None:
    with pytest.raises(ValueError):
        make_auth(secret=b"")
    with pytest.raises(KeyError):
        make_auth(algorithms=("SHA-1",))


def test_digest_module_is_sans_io() -> None:
    code = "import sys, b2bua.sip.digest; print('twisted.internet.reactor' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- throttling ---------------------------------------------------------------------


def test_throttle_blocks_after_max_failures_within_window() -> None:
    clock = Clock()
    throttle = FailureThrottle(clock, max_failures=5, window=60)
    for _ in range(4):
        assert not throttle.record_failure("203.0.113.7", "1111")
        clock.advance(10)
    assert not throttle.is_blocked("203.0.113.7", "1111")
    assert throttle.record_failure("203.0.113.7", "1111")
    assert throttle.is_blocked("203.0.113.7", "1111")
    assert not throttle.is_blocked("203.0.113.8", "1111")
    assert not throttle.is_blocked("203.0.113.7", "2222")
    clock.advance(59.9)
    assert throttle.is_blocked("203.0.113.7", "1111")
    clock.advance(0.2)
    assert not throttle.is_blocked("203.0.113.7", "1111")


def test_throttle_window_slides() -> None:
    clock = Clock()
    throttle = FailureThrottle(clock, max_failures=3, window=60)
    for _ in range(10):
        assert not throttle.record_failure("ip", "u")
        clock.advance(31)


def test_throttle_block_time_and_success_reset() -> None:
    clock = Clock()
    throttle = FailureThrottle(clock, max_failures=2, window=60, block_time=300)
    throttle.record_failure("ip", "u")
    assert throttle.record_failure("ip", "u")
    clock.advance(299)
    assert throttle.is_blocked("ip", "u")
    throttle.record_success("ip", "u")
    assert not throttle.is_blocked("ip", "u")
    assert not throttle.record_failure("ip", "u")


def test_throttle_memory_is_bounded() -> None:
    clock = Clock()
    throttle = FailureThrottle(clock, max_failures=1, window=60, max_entries=10)
    for i in range(100):
        assert throttle.record_failure(f"ip{i}", "u")
    assert throttle.is_blocked("ip99", "u")
    assert not throttle.is_blocked("ip0", "u")  # forgotten, oldest first


def _stepwise(value: str) -> tuple[str, dict[str, str]]:
    """parse_auth_header with its one-pass fast path turned off."""
    match = _SCHEME_RE.match(value)
    assert match is not None
    return match.group(1), _parse_params_stepwise(value, match.end())


@example("\\= \\=")   # an empty value then another name, or one value "\\=": the latter
@given(st.text(alphabet='ab=, \t"\\', max_size=40))
def test_fast_path_reads_every_value_as_the_stepwise_parser_does(text: str) -> None:
    value = "Digest " + text
    try:
        expected: object = _stepwise(value)
    except MalformedCredentials as error:
        expected = type(error)
    try:
        got: object = parse_auth_header(value)
    except MalformedCredentials as error:
        got = type(error)
    assert got == expected


def test_usual_credentials_take_the_fast_path_and_odd_ones_still_parse() -> None:
    usual = ('Digest username="1111", realm="example.com", nonce="abc", uri="sip:example.com",'
             ' response="0123", algorithm=MD5, qop=auth, nc=00000001, cnonce="x\\"y"')
    assert _PARAMS_FULL_RE.match(usual, len("Digest "))
    assert parse_auth_header(usual)[1]["cnonce"] == 'x"y'
    odd = 'Digest a=b=c,d="e"f=g'   # "=" in a value, no separator after a quoted one
    assert not _PARAMS_FULL_RE.match(odd, len("Digest "))
    assert parse_auth_header(odd) == ("Digest", {"a": "b=c", "d": "e", "f": "g"})
    with pytest.raises(MalformedCredentials, match="repeated"):
        parse_auth_header('Digest a=1, A=2')
    long_value = "Digest " + "a= " * 3000 + '"'   # no quadratic or worse backtracking
    with pytest.raises(MalformedCredentials):
        parse_auth_header(long_value)


# -- values no client should send: never an exception ---------------------------------

GOOD_PARAMS = {"username": "1111", "realm": REALM, "nonce": "00" * 32, "uri": "sip:x",
               "response": "0" * 32, "qop": "auth", "nc": "00000001", "cnonce": "c",
               "opaque": "o", "algorithm": "MD5"}


@pytest.mark.parametrize("response", ["\u00e9" * 32, "0" * 31 + "\u0660", "\udcff" * 32,
                                      "ab\u00a0cd", "\uff10" * 32, ""])
def test_a_response_that_is_not_lower_hex_is_malformed(response: str) -> None:
    """hmac.compare_digest raised TypeError on non-ASCII text (issue 21)."""
    auth = make_auth()
    challenge = auth.challenges()[-1]
    good = parse_credentials(answer(challenge))
    assert auth.verify(good, "REGISTER", Lookup()).ok
    result = auth.verify({**good, "response": response}, "REGISTER", Lookup())
    assert result.status is AuthStatus.MALFORMED


@pytest.mark.parametrize("name", sorted(GOOD_PARAMS))
def test_bytes_that_are_not_utf8_in_any_parameter_are_malformed(name: str) -> None:
    """The parser keeps such bytes as lone surrogates; hashing them raised
    UnicodeEncodeError (issue 21: cnonce), looking the user up would too."""
    auth = make_auth()
    challenge = auth.challenges()[-1]
    good = parse_credentials(answer(challenge))
    good.update({k: v for k, v in GOOD_PARAMS.items() if k not in good})
    lookup = Lookup()
    result = auth.verify({**good, name: good[name] + "\udcff"}, "REGISTER", lookup)
    assert result.status is AuthStatus.MALFORMED
    assert lookup.calls == []


def test_a_wire_value_with_a_latin1_cnonce_is_malformed() -> None:
    from b2bua.sip.message import Request, parse_message
    auth = make_auth()
    value = answer(auth.challenges()[-1], cnonce="0a4f113b")
    raw = ("REGISTER sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1"
           "\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nAuthorization: %s\r\n"
           "Content-Length: 0\r\n\r\n" % value).encode().replace(b"0a4f113b", b"0a4f\xe9113b")
    request = parse_message(raw)
    assert isinstance(request, Request)
    header = request.headers.get("Authorization")
    assert header is not None
    assert auth.verify(header, "REGISTER", Lookup()).status is AuthStatus.MALFORMED


ANY_TEXT = st.text(st.characters(blacklist_categories=()), max_size=12)


@given(st.dictionaries(st.sampled_from(sorted(GOOD_PARAMS)), ANY_TEXT))
def test_verify_never_raises_whatever_the_parameters(changed: dict[str, str]) -> None:
    auth = make_auth()
    params = {**GOOD_PARAMS, "nonce": auth.challenges()[0].split('nonce="')[1][:64], **changed}
    assert isinstance(auth.verify(params, "REGISTER", Lookup()), AuthResult)


# -- nonces are bound to the address they were sent to ----------------------------------


def test_a_nonce_is_good_only_from_the_address_it_was_sent_to() -> None:
    auth = make_auth()
    challenge = auth.challenges(client="192.0.2.1")[0]
    assert auth.verify(answer(challenge), "REGISTER", Lookup(), "192.0.2.1").ok
    elsewhere = auth.verify(answer(challenge, nc=2), "REGISTER", Lookup(), "192.0.2.2")
    assert (elsewhere.status, elsewhere.reason) == (AuthStatus.STALE, "nonce not ours")


def test_failed_needs_a_nonce_sent_to_that_address_and_then_no_password_is_checked() -> None:
    """FAILED is what a throttle counts: a forged source address can never earn it."""
    auth = make_auth()
    challenge = auth.challenges(client="203.0.113.66")[0]   # the attacker's own address
    lookup = Lookup()
    for source, status in [("192.0.2.1", AuthStatus.STALE),      # forged: the victim's
                           ("203.0.113.66", AuthStatus.FAILED)]:
        bad = answer(challenge, password="guess")
        assert auth.verify(bad, "REGISTER", lookup, source).status is status
    assert len(lookup.calls) == 1   # the stale one checked no password
    for value in ("Digest nonce=x, realm=r",           # malformed and
                  answer(challenge.replace('realm="', 'realm="x'), password="guess")):
        result = auth.verify(value, "REGISTER", Lookup(), "192.0.2.1")
        assert result.status is not AuthStatus.FAILED
