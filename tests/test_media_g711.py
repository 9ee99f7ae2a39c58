"""G.711 against the ITU-T G.191 reference values, exhaustively where it is cheap."""

from __future__ import annotations

import warnings
from array import array

import pytest

from b2bua.media.g711 import PCMA, PCMU, G711Law, alaw_compress, ulaw_compress

ALL_SAMPLES = array("h", range(-32768, 32768))

# (law, linear sample, code) from G.191 g711.c; negative samples in one's complement.
ENCODE_CASES = [
    (PCMU, 0, 0xFF), (PCMU, -1, 0x7F), (PCMU, 1, 0xFF), (PCMU, 4, 0xFE), (PCMU, -5, 0x7E),
    (PCMU, 100, 0xF2), (PCMU, -100, 0x73), (PCMU, 32767, 0x80), (PCMU, -32768, 0x00),
    (PCMU, 32124, 0x80), (PCMU, 1000, 0xCE),
    (PCMA, 0, 0xD5), (PCMA, -1, 0x55), (PCMA, 15, 0xD5), (PCMA, 16, 0xD4), (PCMA, 100, 0xD3),
    (PCMA, -100, 0x53), (PCMA, 32767, 0xAA), (PCMA, -32768, 0x2A), (PCMA, 1000, 0xFA),
]
DECODE_CASES = [
    (PCMU, 0x00, -32124), (PCMU, 0x80, 32124), (PCMU, 0xFF, 0), (PCMU, 0x7F, 0),
    (PCMU, 0x7E, -8), (PCMU, 0xFE, 8), (PCMU, 0x8F, 16764),
    (PCMA, 0xD5, 8), (PCMA, 0x55, -8), (PCMA, 0xAA, 32256), (PCMA, 0x2A, -32256),
]


@pytest.mark.parametrize("law,sample,code", ENCODE_CASES)
def test_encode_known_values(law: G711Law, sample: int, code: int) -> None:
    assert law.encode([sample]) == bytes([code])
    assert law.encode(array("h", [sample, sample])) == bytes([code, code])
    compress = ulaw_compress if law is PCMU else alaw_compress
    assert compress(sample) == code


@pytest.mark.parametrize("law,code,sample", DECODE_CASES)
def test_decode_known_values(law: G711Law, code: int, sample: int) -> None:
    assert law.decode(bytes([code])).tolist() == [sample]


@pytest.mark.parametrize("law", [PCMU, PCMA])
def test_table_matches_scalar_reference(law: G711Law) -> None:
    compress = ulaw_compress if law is PCMU else alaw_compress
    assert law.encode(ALL_SAMPLES) == bytes(compress(x) for x in ALL_SAMPLES)
    assert law.encode(list(ALL_SAMPLES)) == law.encode(ALL_SAMPLES)


@pytest.mark.parametrize("law,full_scale", [(PCMU, 32124), (PCMA, 32256)])
def test_round_trip_error_bound(law: G711Law, full_scale: int) -> None:
    """Quantisation error stays under 8 + |x|/32 (about -30 dB), and clips at full scale."""
    decoded = law.decode(law.encode(ALL_SAMPLES))
    for x, y in zip(ALL_SAMPLES, decoded):
        if abs(x) <= full_scale:
            assert abs(y - x) <= 8 + abs(x) / 32, (x, y)
        else:
            assert y == (full_scale if x > 0 else -full_scale)


@pytest.mark.parametrize("law", [PCMU, PCMA])
def test_codes_survive_decode_encode(law: G711Law) -> None:
    codes = bytes(range(256))
    again = law.encode(law.decode(codes))
    negative_zero = {0x7F} if law is PCMU else set()
    assert [c for c in range(256) if again[c] != c] == sorted(negative_zero)


@pytest.mark.parametrize("law", [PCMU, PCMA])
def test_sign_symmetry_in_ones_complement(law: G711Law) -> None:
    """G.191 treats x and ~x alike, apart from the sign bit."""
    positive = law.encode(array("h", range(0, 32768)))
    negative = law.encode(array("h", (~x for x in range(0, 32768))))
    assert bytes(b ^ 0x80 for b in positive) == negative


def test_silence_frames() -> None:
    assert PCMU.silence_frame() == b"\xff" * 160
    assert PCMA.silence_frame() == b"\xd5" * 160


def test_decode_tables_match_audioop_where_available() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")  # gone in Python 3.13
    codes = bytes(range(256))
    assert PCMU.decode(codes).tobytes() == audioop.ulaw2lin(codes, 2)
    assert PCMA.decode(codes).tobytes() == audioop.alaw2lin(codes, 2)
    # A-law encoding agrees everywhere; audioop's mu-law used sign-magnitude for negatives.
    assert PCMA.encode(ALL_SAMPLES) == audioop.lin2alaw(ALL_SAMPLES.tobytes(), 2)
    positive = array("h", range(0, 32768))
    assert PCMU.encode(positive) == audioop.lin2ulaw(positive.tobytes(), 2)
