"""The client side of digest authentication: answering a carrier's 401/407
(RFC 3261 §22.2, RFC 7616, RFC 8760) for trunk calls and registrations."""

from __future__ import annotations

from collections.abc import Sequence

from b2bua.sip.digest import (
    _STRENGTH,
    MalformedCredentials,
    _canonical_algorithm,
    _h,
    _quote,
    parse_auth_header,
)

__all__ = ["build_authorization", "choose_challenge"]


def choose_challenge(values: Sequence[str]) -> str | None:
    """The strongest Digest challenge we can answer among 401/407 values."""
    best: tuple[int, str] | None = None
    for value in values:
        try:
            scheme, params = parse_auth_header(value)
            base, _ = _canonical_algorithm(params.get("algorithm", "MD5"))
        except (MalformedCredentials, KeyError):
            continue
        if scheme.lower() != "digest":
            continue
        rank = _STRENGTH.index(base)
        if best is None or rank < best[0]:
            best = (rank, value)
    return best[1] if best else None


def build_authorization(
    challenge_value: str,
    method: str,
    uri: str,
    username: str,
    password: str,
    cnonce: str,
    nc: int = 1,
) -> str:
    """The ``Authorization``/``Proxy-Authorization`` value answering a challenge.

    Uses ``qop=auth`` when offered, else the RFC 2069 form; MD5, SHA-256 and
    SHA-512-256, plain or ``-sess``.  ``cnonce`` is the caller's (random) choice.
    """
    scheme, params = parse_auth_header(challenge_value)
    if scheme.lower() != "digest" or "realm" not in params or "nonce" not in params:
        raise MalformedCredentials("not a Digest challenge with realm and nonce")
    try:
        base, sess = _canonical_algorithm(params.get("algorithm", "MD5"))
    except KeyError:
        raise MalformedCredentials(f"unsupported algorithm {params['algorithm']!r}") from None
    realm, nonce = params["realm"], params["nonce"]
    offered = [q.strip().lower() for q in params.get("qop", "").split(",") if q.strip()]
    if offered and "auth" not in offered:
        raise MalformedCredentials(f"unsupported qop {params['qop']!r}")
    ha1 = _h(base, f"{username}:{realm}:{password}")
    if sess:
        ha1 = _h(base, f"{ha1}:{nonce}:{cnonce}")
    ha2 = _h(base, f"{method}:{uri}")
    nc_text = f"{nc:08x}"
    if offered:
        response = _h(base, f"{ha1}:{nonce}:{nc_text}:{cnonce}:auth:{ha2}")
    else:
        response = _h(base, f"{ha1}:{nonce}:{ha2}")
    parts = [
        f"username={_quote(username)}",
        f"realm={_quote(realm)}",
        f"nonce={_quote(nonce)}",
        f"uri={_quote(uri)}",
        f"response={_quote(response)}",
    ]
    if "algorithm" in params:
        parts.append(f"algorithm={params['algorithm']}")
    if offered or sess:
        parts.append(f"cnonce={_quote(cnonce)}")
    if "opaque" in params:
        parts.append(f"opaque={_quote(params['opaque'])}")
    if offered:
        parts += ["qop=auth", f"nc={nc_text}"]
    return "Digest " + ", ".join(parts)
