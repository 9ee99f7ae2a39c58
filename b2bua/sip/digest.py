"""HTTP Digest authentication for SIP (RFC 3261 22, RFC 2617, RFC 7616, RFC 8760).

Sans-IO: time comes from an injected clock, users from a ``lookup_ha1``
callable, and nothing is sent anywhere.

Server side, ``DigestAuthenticator``:

* Nonces are stateless: hex(issue time ms | 8 random bytes | HMAC).  Any
  nonce we minted within ``nonce_ttl`` verifies without a table, so memory
  does not grow with the number of challenges sent.  A restart with a new
  secret turns old nonces into "stale", which a client answers silently.
* Replay protection: with ``qop=auth`` the nonce count must grow for each
  nonce.  The table of counts is bounded (LRU); a nonce pushed out of it, or
  issued before the newest one pushed out, is answered "stale" (a fresh
  challenge) rather than trusted, so eviction never opens a replay window.
* ``stale`` is only reported when the digest itself was right (RFC 7616 3.3):
  the client knows the password, just not a nonce we accept.
* An unknown user is verified against a random HA1, through the same code as
  a wrong password, and both give the same ``AuthResult``.
* The digest is computed over the ``uri`` parameter the client sent, which
  phones in the field set to another host than the Request-URI.

Client side (``digest_client.py``): ``choose_challenge`` and ``build_authorization``
answer a trunk's 401/407. The guessing protection is ``auth_throttle.FailureThrottle``.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import re
import struct
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from b2bua.clock import Clock

__all__ = [
    "AuthResult",
    "AuthStatus",
    "DigestAuthenticator",
    "MalformedCredentials",
    "parse_auth_header",
    "parse_credentials",
]

_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda data: hashlib.md5(data).hexdigest(),
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
    "SHA-512-256": lambda data: hashlib.new("sha512_256", data).hexdigest(),
}
_STRENGTH = ("SHA-512-256", "SHA-256", "MD5")
_NC = re.compile(r"[0-9a-fA-F]{8}")
_LHEX = re.compile(r"[0-9a-f]+")
_TOKEN_END = re.compile(r"[\s,]")


class MalformedCredentials(ValueError):
    """An Authorization/WWW-Authenticate value that cannot be parsed."""


class AuthStatus(enum.Enum):
    OK = "ok"
    STALE = "stale"  # right password, nonce not acceptable: re-challenge with stale=true
    FAILED = "failed"  # wrong credentials (or unknown user: same answer)
    MALFORMED = "malformed"  # unparseable or missing parameters


class AuthResult(NamedTuple):
    """Outcome of ``DigestAuthenticator.verify``; ``reason`` is for logs.
    (A named tuple: one is built for every authenticated request.)"""

    status: AuthStatus
    reason: str = ""
    username: str | None = None
    algorithm: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is AuthStatus.OK

    @property
    def stale(self) -> bool:
        return self.status is AuthStatus.STALE


def _h(algorithm: str, text: str) -> str:
    return _HASHES[algorithm](text.encode("utf-8"))


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _canonical_algorithm(name: str) -> tuple[str, bool]:
    """'sha-256-SESS' -> ('SHA-256', True); unknown names raise KeyError."""
    upper = name.strip().upper()
    base = upper.removesuffix("-SESS")
    if base not in _HASHES:
        raise KeyError(name)
    return base, upper != base


_SCHEME_RE = re.compile(r"\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)\s*")
_PARAM_RE = re.compile(
    r'[\s,]*([^\s=,"]+)\s*=\s*(?:"([^"\\]*(?:\\.[^"\\]*)*)"|([^\s,"]*))', re.S)
_SEPARATORS_RE = re.compile(r"[\s,]*")
_QUOTED_PAIR_RE = re.compile(r"\\(.)", re.S)
# The usual, unambiguous form in one pass: separators between parameters, and
# unquoted values that are not empty and hold no "=" (so the whole-value check
# and the extraction cannot split the text differently); anything else takes
# the step-by-step path below.
_QUOTED = r'"([^"\\]*(?:\\.[^"\\]*)*)"'   # unrolled: no per-character alternation
_PARAM_PAIR_RE = re.compile(r'([^\s=,"]+)\s*=\s*(?:%s|([^\s,"=]+))' % _QUOTED, re.S)
_PARAM_SHAPE = r'[^\s=,"]+\s*=\s*(?:%s|[^\s,"=]+)' % _QUOTED.replace("(", "(?:", 1)
_PARAMS_FULL_RE = re.compile(
    r"[\s,]*(?:%s(?:[\s,]+%s)*)?[\s,]*\Z" % (_PARAM_SHAPE, _PARAM_SHAPE), re.S)


def parse_auth_header(value: str) -> tuple[str, dict[str, str]]:
    """Split ``Scheme k=v, k="quoted \\" value"`` into (scheme, {k lower: v}).

    Tolerates spaces around ``=`` and commas and a missing space after a
    comma; rejects unterminated quotes, missing ``=`` and repeated names.
    This runs for every REGISTER: the usual form is checked and split by two
    regular expressions; anything else goes parameter by parameter.
    """
    match = _SCHEME_RE.match(value)
    if match is None:
        raise MalformedCredentials("no authentication scheme")
    scheme, pos, params = match.group(1), match.end(), {}
    if _PARAMS_FULL_RE.match(value, pos):
        pairs = _PARAM_PAIR_RE.findall(value, pos)
        for name, quoted, plain in pairs:
            params[name.lower()] = plain if not quoted else (
                _QUOTED_PAIR_RE.sub(r"\1", quoted) if "\\" in quoted else quoted)
        if len(params) == len(pairs):
            return scheme, params
    return scheme, _parse_params_stepwise(value, pos)   # odd spacing, or an error to name


def _parse_params_stepwise(value: str, pos: int) -> dict[str, str]:
    end = len(value)
    params: dict[str, str] = {}
    while True:
        pos = _SEPARATORS_RE.match(value, pos).end()  # type: ignore[union-attr]
        if pos >= end:
            return params
        match = _PARAM_RE.match(value, pos)
        if match is None or (match.group(2) is None and value[match.end():match.end() + 1] == '"'):
            rest = value[pos:pos + 20]
            if match is not None or '"' in rest:
                raise MalformedCredentials(f"unterminated quoted value at {rest!r}")
            raise MalformedCredentials(f"expected name=value at {rest!r}")
        name = match.group(1).lower()
        quoted = match.group(2)
        item = match.group(3) if quoted is None else (
            _QUOTED_PAIR_RE.sub(r"\1", quoted) if "\\" in quoted else quoted)
        if name in params:
            raise MalformedCredentials(f"parameter {name!r} repeated")
        params[name] = item
        pos = match.end()


def parse_credentials(value: str) -> dict[str, str]:
    """Parameters of a ``Digest`` Authorization value (names lower-cased)."""
    scheme, params = parse_auth_header(value)
    if scheme.lower() != "digest":
        raise MalformedCredentials(f"scheme {scheme!r} is not Digest")
    return params


class _NonceCounts:
    """Highest nonce count seen per nonce, bounded; see the module docstring."""

    def __init__(self, max_entries: int) -> None:
        self._max = max_entries
        self._seen: OrderedDict[str, tuple[int, int]] = OrderedDict()  # nonce -> (issued, nc)
        self._floor = -1  # newest issue time (ms) among evicted nonces

    def __len__(self) -> int:
        return len(self._seen)

    def accept(self, nonce: str, issued_ms: int, nc: int, oldest_valid_ms: int) -> bool:
        entry = self._seen.get(nonce)
        if entry is None and issued_ms <= self._floor:
            return False  # it may have been used and forgotten
        if entry is not None and nc <= entry[1]:
            return False
        self._seen[nonce] = (issued_ms, nc)
        self._seen.move_to_end(nonce)
        while self._seen:
            oldest, (issued, _) = next(iter(self._seen.items()))
            if issued < oldest_valid_ms:  # expired anyway: the age check rejects it
                del self._seen[oldest]
            elif len(self._seen) > self._max:
                del self._seen[oldest]
                self._floor = max(self._floor, issued)
            else:
                break
        return True


class DigestAuthenticator:
    """Issues challenges and checks credentials for one realm."""

    def __init__(
        self,
        realm: str,
        clock: Clock,
        secret: bytes,
        nonce_ttl: float = 300,
        *,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        max_tracked_nonces: int = 10000,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        if not secret:
            raise ValueError("the nonce secret must not be empty")
        for name in algorithms:
            _canonical_algorithm(name)
        self.realm = realm
        self._realm_bytes = realm.encode()
        self.algorithms = tuple(name.upper() for name in algorithms)
        self._clock = clock
        self._secret = secret
        self._ttl_ms = int(nonce_ttl * 1000)
        self._random = random_bytes
        self._counts = _NonceCounts(max_tracked_nonces)
        self.opaque = hmac.new(secret, b"opaque:" + realm.encode(), "sha256").hexdigest()[:32]
        self._dummy_ha1 = {name: _h(name, random_bytes(16).hex()) for name in _HASHES}
        # Each challenge is these around a fresh nonce (hex: no quoting needed).
        self._challenge_parts = [
            (f"Digest realm={_quote(realm)}, nonce=\"",
             f'", opaque={_quote(self.opaque)}, algorithm={name}, qop="auth"')
            for name in self.algorithms]

    def challenges(self, stale: bool = False, client: str = "") -> list[str]:
        """``WWW-Authenticate``/``Proxy-Authenticate`` values, strongest first,
        with a nonce only ``client`` (the source IP the answer goes to) can use."""
        nonce = self._new_nonce(client)
        suffix = ", stale=true" if stale else ""
        return [before + nonce + after + suffix for before, after in self._challenge_parts]

    def verify(
        self,
        credentials: str | Mapping[str, str],
        method: str,
        lookup_ha1: Callable[[str, str], str | None],
        client: str = "",
    ) -> AuthResult:
        """Check one Authorization value (or its :func:`parse_credentials`
        parameters) for a request of ``method`` from source IP ``client``.

        ``lookup_ha1(username, algorithm)`` gets "MD5" or "SHA-256" (never a
        ``-sess`` name) and returns the hex HA1, or None for an unknown or
        disabled user.

        The nonce is checked first: one we did not issue to ``client`` within
        ``nonce_ttl`` gets STALE (a fresh challenge, which only reaches the
        real ``client``) without the password being checked.  So FAILED, the
        only result worth counting against a source, always follows a round
        trip to that source: a forged source address cannot earn it, and a
        guess with a made-up nonce learns nothing (checking the digest first,
        as RFC 7616 suggests for ``stale``, told a guesser "right password"
        through stale=true, uncounted).
        """
        params: Mapping[str, str]
        if isinstance(credentials, str):
            try:
                params = parse_credentials(credentials)
            except MalformedCredentials as error:
                return AuthResult(AuthStatus.MALFORMED, str(error))
        else:
            params = credentials
        missing = [k for k in ("username", "realm", "nonce", "uri", "response") if k not in params]
        if missing:
            return AuthResult(AuthStatus.MALFORMED, "missing " + ", ".join(missing))
        unreadable = _not_utf8(params)
        if unreadable is not None:   # bytes that are not UTF-8 cannot be hashed or looked up
            return AuthResult(AuthStatus.MALFORMED, unreadable + " is not UTF-8")
        username, nonce = params["username"], params["nonce"]
        issued_ms = self._nonce_issued_ms(nonce, client)
        now_ms = int(self._clock.seconds() * 1000)
        if issued_ms is None:
            return AuthResult(AuthStatus.STALE, "nonce not ours", username)
        if now_ms - issued_ms > self._ttl_ms:
            return AuthResult(AuthStatus.STALE, "nonce expired", username)
        try:
            base, sess = _canonical_algorithm(params.get("algorithm", "MD5"))
        except KeyError:
            base, sess = "", False
        algorithm = base + ("-sess" if sess else "")
        if base not in self.algorithms:
            return AuthResult(AuthStatus.FAILED, "unsupported algorithm", username)
        if params.get("userhash", "false").lower() == "true":
            return AuthResult(AuthStatus.FAILED, "userhash not supported", username, algorithm)
        if params["realm"] != self.realm:
            return AuthResult(AuthStatus.FAILED, "realm mismatch", username, algorithm)
        qop = params.get("qop")
        cnonce = params.get("cnonce")
        nc_text = params.get("nc")
        if qop is not None:
            if qop.lower() != "auth":
                return AuthResult(AuthStatus.FAILED, "unsupported qop", username, algorithm)
            if cnonce is None or nc_text is None or not _NC.fullmatch(nc_text):
                return AuthResult(AuthStatus.MALFORMED, "qop needs cnonce and 8-hex nc", username)
        if sess and cnonce is None:
            return AuthResult(AuthStatus.MALFORMED, "-sess needs cnonce", username)
        response = params["response"].strip().lower()
        if not _LHEX.fullmatch(response):   # RFC 2617: request-digest is lower hex
            return AuthResult(AuthStatus.MALFORMED, "response is not hex", username)

        stored = lookup_ha1(username, base)
        ha1 = stored if stored is not None else self._dummy_ha1[base]
        if sess:
            ha1 = _h(base, f"{ha1}:{nonce}:{cnonce}")
        ha2 = _h(base, f"{method}:{params['uri']}")
        if qop is None:
            expected = _h(base, f"{ha1}:{nonce}:{ha2}")
        else:
            expected = _h(base, f"{ha1}:{nonce}:{nc_text}:{cnonce}:auth:{ha2}")
        right = hmac.compare_digest(expected, response)
        if stored is None or not right:
            return AuthResult(AuthStatus.FAILED, "bad credentials", username, algorithm)

        if "opaque" in params and params["opaque"] != self.opaque:
            return AuthResult(AuthStatus.STALE, "opaque mismatch", username, algorithm)
        if qop is not None and nc_text is not None:
            nc = int(nc_text, 16)
            if nc == 0 or not self._counts.accept(nonce, issued_ms, nc, now_ms - self._ttl_ms):
                return AuthResult(AuthStatus.STALE, "nonce count replayed", username, algorithm)
        return AuthResult(AuthStatus.OK, "", username, algorithm)

    @property
    def tracked_nonces(self) -> int:
        """Size of the nonce-count table (bounded by ``max_tracked_nonces``)."""
        return len(self._counts)

    def _mac(self, body: bytes, client: str) -> bytes:
        message = b"nonce:" + body + self._realm_bytes + b"\0" + client.encode()
        return hmac.digest(self._secret, message, "sha256")[:16]   # one-shot, in C

    def _new_nonce(self, client: str = "") -> str:
        now_ms = int(self._clock.seconds() * 1000)
        body = struct.pack(">Q", max(now_ms, 0)) + self._random(8)
        return (body + self._mac(body, client)).hex()   # hex: decoded by one C call, no padding

    def _nonce_issued_ms(self, nonce: str, client: str = "") -> int | None:
        if len(nonce) != 64:
            return None
        try:
            raw = bytes.fromhex(nonce)
        except ValueError:
            return None
        if len(raw) != 32 or not hmac.compare_digest(raw[16:], self._mac(raw[:16], client)):
            return None
        issued: int = struct.unpack(">Q", raw[:8])[0]
        return issued


def _not_utf8(params: Mapping[str, str]) -> str | None:
    """The name of a parameter holding bytes that were not UTF-8 (the parser
    keeps them as lone surrogates), else None.  Almost every value is ASCII,
    which costs one C call to tell."""
    for name, value in params.items():
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return name
    return None
