"""G.711 mu-law (PCMU) and A-law (PCMA), written here because ``audioop`` left Python in 3.13.

The compression rules are those of the ITU-T G.191 reference ``g711.c``: negative samples are
taken in one's complement, so 0 -> 0xFF and -1 -> 0x7F in mu-law, 0 -> 0xD5 and -1 -> 0x55
in A-law.  (``audioop`` used sign-magnitude for mu-law and gave 0x7E for -1.)

All tables are built once at import: encoding looks each 16-bit sample up in a 65536-byte table,
decoding uses two 256-byte ``bytes.translate`` tables (low and high byte) and interleaves them.
A 160-sample frame encodes in about 12 us and decodes in about 3 us; ringback frames are
encoded once per cadence anyway (see ``tone.py``) and the relay never transcodes.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Callable, Iterable


def ulaw_compress(sample: int) -> int:
    """One 16-bit linear sample to a mu-law byte (G.191 ``ulaw_compress``)."""
    absno = ((~sample if sample < 0 else sample) >> 2) + 33
    absno = min(absno, 0x1FFF)
    segno = (absno >> 6).bit_length() + 1
    low_nibble = 0x0F - ((absno >> segno) & 0x0F)
    code = ((0x08 - segno) << 4) | low_nibble
    return code | 0x80 if sample >= 0 else code


def ulaw_expand(code: int) -> int:
    """One mu-law byte to a 16-bit linear sample (G.191 ``ulaw_expand``)."""
    mantissa = ~code
    exponent = (mantissa >> 4) & 0x07
    step = 4 << (exponent + 1)
    magnitude = (0x80 << exponent) + step * (mantissa & 0x0F) + step // 2 - 4 * 33
    return magnitude if code >= 0x80 else -magnitude


def alaw_compress(sample: int) -> int:
    """One 16-bit linear sample to an A-law byte (G.191 ``alaw_compress``)."""
    ix = (~sample if sample < 0 else sample) >> 4
    if ix > 15:
        iexp = 1
        while ix > 16 + 15:
            ix >>= 1
            iexp += 1
        ix = ix - 16 + (iexp << 4)
    if sample >= 0:
        ix |= 0x80
    return ix ^ 0x55


def alaw_expand(code: int) -> int:
    """One A-law byte to a 16-bit linear sample (G.191 ``alaw_expand``)."""
    ix = (code ^ 0x55) & 0x7F
    iexp = ix >> 4
    mant = ix & 0x0F
    if iexp > 0:
        mant += 16
    mant = (mant << 4) + 0x08
    if iexp > 1:
        mant <<= iexp - 1
    return mant if code > 127 else -mant


def _encode_table(compress: Callable[[int], int], shift: int) -> bytes:
    """65536-entry table indexed by the unsigned 16-bit sample.

    The code depends only on ``sample >> shift`` (shifts commute with one's complement), so
    compute 2**(16 - shift) codes and repeat each one ``2**shift`` times.
    """
    width = 1 << (16 - shift)
    half = width >> 1
    small = bytes(compress((i - width if i >= half else i) << shift)
                  for i in range(width))
    table = bytearray(65536)
    for k in range(1 << shift):
        table[k::1 << shift] = small
    return bytes(table)


def _decode_tables(expand: Callable[[int], int]) -> tuple[bytes, bytes]:
    """Low-byte and high-byte translate tables of the native-endian 16-bit output."""
    values = array("h", (expand(c) for c in range(256)))
    raw = values.tobytes()
    return raw[0::2], raw[1::2]


@dataclass(frozen=True)
class G711Law:
    """One companding law: the SDP name, its static payload type and the lookup tables."""

    name: str
    payload_type: int
    silence: int
    encode_table: bytes = field(repr=False)
    decode_low: bytes = field(repr=False)
    decode_high: bytes = field(repr=False)

    def encode(self, samples: array[int] | Iterable[int]) -> bytes:
        """16-bit linear samples (``array('h')`` or any ints) to G.711 bytes."""
        table = self.encode_table
        if isinstance(samples, array) and samples.typecode == "h":
            indices = memoryview(samples).cast("B").cast("H").tolist()
        else:
            indices = [s & 0xFFFF for s in samples]
        if len(indices) < 2:  # itemgetter of one index returns a bare item, not a tuple
            return bytes(table[i] for i in indices)
        return bytes(itemgetter(*indices)(table))

    def decode(self, data: bytes) -> array[int]:
        """G.711 bytes to 16-bit linear samples (native byte order ``array('h')``)."""
        out = bytearray(2 * len(data))
        out[0::2] = data.translate(self.decode_low)
        out[1::2] = data.translate(self.decode_high)
        return array("h", bytes(out))

    def silence_frame(self, samples: int = 160) -> bytes:
        return bytes((self.silence,)) * samples


def _law(name: str, payload_type: int, compress: Callable[[int], int],
         expand: Callable[[int], int], shift: int) -> G711Law:
    low, high = _decode_tables(expand)
    encode_table = _encode_table(compress, shift)
    return G711Law(name, payload_type, encode_table[0], encode_table, low, high)


PCMU = _law("PCMU", 0, ulaw_compress, ulaw_expand, 2)
PCMA = _law("PCMA", 8, alaw_compress, alaw_expand, 4)
CODECS: dict[str, G711Law] = {"PCMU": PCMU, "PCMA": PCMA}
