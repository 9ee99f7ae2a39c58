"""The header block of a SIP message: ordered lines, looked up by name.

Lookups ignore case and compact forms (``v`` is ``Via``).  Each line keeps its
raw value; typed values (``b2bua.sip.headers``) are parsed by the message on
first use and cached here until the lines change.
"""

from __future__ import annotations

from typing import Any, Iterable, Iterator

from b2bua.sip.grammar import _CANONICAL, _KEYS, LIST_HEADERS, split_header_values
from b2bua.sip.headers import Via

__all__ = ["Field", "Headers", "name_info"]

Field = tuple[str, str, str]
"""One header line: (lookup key, canonical name, raw value)."""

#: lower-case header name or compact form -> (lookup key, canonical name)
_NAME_INFO: dict[str, tuple[str, str]] = {low: (_KEYS[low], _CANONICAL[low]) for low in _KEYS}


#: the same, also under the usual spellings, to skip lower() when parsing
_EXACT_NAME_INFO: dict[str, tuple[str, str]] = {
    **_NAME_INFO, **{info[1]: info for info in _NAME_INFO.values()},
    **{low.upper(): info for low, info in _NAME_INFO.items() if len(low) == 1}}


def _name_info(name: str) -> tuple[str, str]:
    info = _EXACT_NAME_INFO.get(name)   # the usual spellings: no lower() needed
    if info is not None:
        return info
    low = name.lower()
    info = _NAME_INFO.get(low)
    return info if info is not None else (low, name)


name_info = _name_info


class Headers:
    """Ordered header fields; lookups ignore case and compact forms.

    Each field is stored as one header line (key, canonical name, raw value).

    ``parsed`` holds typed values derived from the lines (a ``Via``, a
    ``CSeq``, the From ``NameAddr`` ...), keyed by the lower-case header name
    (``top_via``, ``contact*`` for lists): messages read and fill it, and
    every change of the lines empties it.  A plain dict rather than a
    method: it is read a dozen times per message (a method call per read
    measured in bench/README.md).
    """

    __slots__ = ("_fields", "parsed")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._fields: list[tuple[str, str, str]] = [
            _name_info(name) + (self._check(value),) for name, value in items]
        self.parsed: dict[str, Any] = {}

    @classmethod
    def from_fields(cls, fields: list[Field], parsed: dict[str, Any] | None = None) -> Headers:
        """Headers over ``fields`` as they are (the parser's and the builders' lines,
        already checked), with values already ``parsed`` from them.  The one
        constructor that skips ``__init__``: it runs for every message."""
        headers = cls.__new__(cls)
        headers._fields = fields
        headers.parsed = {} if parsed is None else parsed
        return headers

    def fields(self) -> list[Field]:
        """The lines as (key, canonical name, raw value), in order: the list itself,
        for the serialiser and the builders to read without a copy; never change it."""
        return self._fields

    def subset(self, keys: frozenset[str], carry: tuple[str, ...]) -> Headers:
        """A copy with only the lines whose key is in ``keys``, and the cached values
        under ``carry`` (parsed from those lines) shared."""
        parsed = self.parsed
        return Headers.from_fields([f for f in self._fields if f[0] in keys],
                                   {key: parsed[key] for key in carry if key in parsed})

    def get(self, name: str) -> str | None:
        """First value (first list element for comma-list headers), or None."""
        key = _name_info(name)[0]
        for k, _, value in self._fields:
            if k == key:
                if key in LIST_HEADERS:
                    values = self.get_all(name)
                    return values[0] if values else None
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        """All values in order; comma-list headers are split into elements."""
        key = _name_info(name)[0]
        if key in LIST_HEADERS:
            out: list[str] = []
            for k, _, value in self._fields:
                if k == key:
                    out += split_header_values(value)
            return out
        return [value for k, _, value in self._fields if k == key]

    def lines(self, name: str) -> list[str]:
        """Raw value of each header line with this name (no comma splitting)."""
        key = _name_info(name)[0]
        return [value for k, _, value in self._fields if k == key]

    @staticmethod
    def _check(value: str) -> str:
        if "\r" in value or "\n" in value:
            raise ValueError("header value contains a line break")
        return value

    def set(self, name: str, value: str) -> None:
        """Replace every line of this header with one line, kept in place."""
        self.set_all(name, [value])

    def set_all(self, name: str, values: Iterable[str]) -> None:
        """Replace every line of this header with one line per value, in place."""
        key, canonical = _name_info(name)
        new = [(key, canonical, self._check(v)) for v in values]
        fields = self._fields
        pos = next((i for i, f in enumerate(fields) if f[0] == key), len(fields))
        self._fields = [f for f in fields[:pos] if f[0] != key] + new + [
            f for f in fields[pos:] if f[0] != key]
        self.parsed.clear()

    def add(self, name: str, value: str, first: bool = False) -> None:
        """Add a line: above the existing lines of that header if ``first``
        (or at the top when there are none), else after the last one."""
        key, canonical = _name_info(name)
        field = (key, canonical, self._check(value))
        fields = self._fields
        indexes = [i for i, f in enumerate(fields) if f[0] == key]
        if first:
            fields.insert(indexes[0] if indexes else 0, field)
        else:
            fields.insert(indexes[-1] + 1 if indexes else len(fields), field)
        self.parsed.clear()

    def replace_first(self, name: str, value: str) -> None:
        """Replace the first value (first list element for lists), e.g. to
        write back a top Via stamped with received/rport."""
        key, canonical = _name_info(name)
        for i, (k, _, line) in enumerate(self._fields):
            if k == key:
                rest = (split_header_values(line)[1:]
                        if key in LIST_HEADERS and "," in line else [])
                self._fields[i] = (k, canonical, ", ".join([self._check(value)] + rest))
                self.parsed.clear()
                return
        self.add(name, value)

    def set_first_via(self, via: Via) -> None:
        """Write back the top Via (stamped with received/rport); it stays
        cached, so ``top_via`` does not parse it again."""
        self.replace_first("Via", str(via))
        self.parsed["top_via"] = via

    def pop_first(self, name: str) -> str | None:
        """Remove and return the first value (first list element for lists)."""
        key = _name_info(name)[0]
        for i, (k, canonical, value) in enumerate(self._fields):
            if k != key:
                continue
            self.parsed.clear()
            if key in LIST_HEADERS:
                values = split_header_values(value)
                if len(values) > 1:
                    self._fields[i] = (k, canonical, ", ".join(values[1:]))
                    return values[0]
            del self._fields[i]
            if key in LIST_HEADERS:
                values = split_header_values(value)
                return values[0] if values else None
            return value
        return None

    def remove(self, name: str) -> None:
        key = _name_info(name)[0]
        self._fields = [f for f in self._fields if f[0] != key]
        self.parsed.clear()

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = _name_info(name)[0]
        return any(f[0] == key for f in self._fields)

    def items(self) -> list[tuple[str, str]]:
        """(canonical name, raw value) per header line, in order."""
        return [(name, value) for _, name, value in self._fields]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items())

    def __len__(self) -> int:
        return len(self._fields)

    def copy(self) -> Headers:
        return Headers.from_fields(list(self._fields))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._fields == other._fields

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return "Headers(%r)" % (self.items(),)
