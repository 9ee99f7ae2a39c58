"""Bencode (BEP 3), the encoding of rtpengine's ng control protocol.

Integers, byte strings, lists and dictionaries.  ``str`` encodes as UTF-8 and dictionary
keys are sorted as the format says, while decoding accepts keys in any order (rtpengine
does not sort its own) and returns them as ``str``.  Sans-IO; peer input that breaks the
grammar raises ``BencodeError``, never an assertion.
"""

from __future__ import annotations

from typing import Union

# Union, not X | Y: the recursive alias names itself in quotes, which | cannot join at run time.
Value = Union[int, bytes, str, list["Value"], dict[str, "Value"]]  # noqa: UP007
Decoded = Union[int, bytes, list["Decoded"], dict[str, "Decoded"]]  # noqa: UP007

MAX_DEPTH = 32


class BencodeError(ValueError):
    """Bytes that are not bencode."""


def encode(value: Value) -> bytes:
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Value, out: list[bytes]) -> None:
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, (bytes, str)):
        data = value.encode() if isinstance(value, str) else value
        out.append(b"%d:" % len(data))
        out.append(data)
    elif isinstance(value, list):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, dict):
        out.append(b"d")
        for key in sorted(value, key=lambda k: k.encode()):
            _encode(key, out)
            _encode(value[key], out)
        out.append(b"e")
    else:
        raise TypeError("cannot bencode %s" % type(value).__name__)


def decode(data: bytes) -> Decoded:
    """One whole value; trailing bytes are an error."""
    value, end = _decode(data, 0, 0)
    if end != len(data):
        raise BencodeError("trailing bytes after the value")
    return value


def _decode(data: bytes, at: int, depth: int) -> tuple[Decoded, int]:
    if depth > MAX_DEPTH:
        raise BencodeError("nested too deep")
    if at >= len(data):
        raise BencodeError("truncated")
    kind = data[at:at + 1]
    if kind == b"i":
        end = data.find(b"e", at)
        if end < 0:
            raise BencodeError("unterminated integer")
        text = data[at + 1:end]
        if not text or text in (b"-", b"-0") or (text[:1] == b"0" and len(text) > 1) or (
                text[:2] == b"-0"):
            raise BencodeError("bad integer %r" % text[:20])
        try:
            return int(text), end + 1
        except ValueError:
            raise BencodeError("bad integer %r" % text[:20]) from None
    if kind == b"l":
        items: list[Decoded] = []
        at += 1
        while data[at:at + 1] != b"e":
            item, at = _decode(data, at, depth + 1)
            items.append(item)
        return items, at + 1
    if kind == b"d":
        result: dict[str, Decoded] = {}
        at += 1
        while data[at:at + 1] != b"e":
            if at >= len(data):
                raise BencodeError("truncated dictionary")
            key, at = _string(data, at)
            result[key.decode("utf-8", "replace")], at = _decode(data, at, depth + 1)
        return result, at + 1
    if kind.isdigit():
        return _string(data, at)
    raise BencodeError("unexpected byte %r at %d" % (kind, at))


def _string(data: bytes, at: int) -> tuple[bytes, int]:
    colon = data.find(b":", at)
    if colon < 0 or not data[at:colon].isdigit():
        raise BencodeError("bad string length")
    length = int(data[at:colon])
    start = colon + 1
    if start + length > len(data):
        raise BencodeError("string runs past the end")
    return data[start:start + length], start + length
