"""Ringback tones per country, rendered once per cadence into encoded 20 ms frames.

The cadences are those of ITU-T E.180 Supplement 2 (as also used by Asterisk's
``indications.conf``).  A whole cadence period is synthesised and G.711-encoded on first use
and cached, so a running sender only prefixes RTP headers to ready-made payloads.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from functools import cache

from b2bua.media.g711 import CODECS, G711Law
from b2bua.media.rtp import MediaError

SAMPLE_RATE = 8000
FRAME_SECONDS = 0.02
FRAME_SAMPLES = 160
# Peak of a 0 dBm0 sine in 16-bit linear: G.711 overloads at +3.14 dBm0 (peak ~32124).
ZERO_DBM0_PEAK = 32124 * 10 ** (-3.14 / 20)
_RAMP_SAMPLES = 32  # 4 ms raised-cosine edges, so bursts start and stop without clicks


class UnknownCountry(MediaError, ValueError):
    """A tone country the table does not have; a configuration error, named at start-up."""


@dataclass(frozen=True)
class RingbackTone:
    """Frequencies played together, an on/off cadence in seconds, and a level per frequency."""

    frequencies: tuple[float, ...]
    cadence: tuple[float, ...]
    level_dbm0: float = -16.0

    def __post_init__(self) -> None:
        if not self.frequencies or not self.cadence or len(self.cadence) % 2:
            raise ValueError("a tone needs frequencies and on/off pairs")
        for seconds in self.cadence:
            frames = seconds / FRAME_SECONDS
            if seconds <= 0 or abs(frames - round(frames)) > 1e-9:
                raise ValueError("cadence steps must be positive multiples of 20 ms")

    @property
    def segment_frames(self) -> tuple[int, ...]:
        return tuple(round(s / FRAME_SECONDS) for s in self.cadence)

    @property
    def period_frames(self) -> int:
        return sum(self.segment_frames)

    def sounding(self) -> tuple[bool, ...]:
        """Per frame of one period: is the tone on?"""
        flags: list[bool] = []
        for index, frames in enumerate(self.segment_frames):
            flags.extend([index % 2 == 0] * frames)
        return tuple(flags)

    def pcm(self) -> array[int]:
        """One whole period of 16-bit linear samples at 8 kHz."""
        amplitude = ZERO_DBM0_PEAK * 10 ** (self.level_dbm0 / 20)
        omegas = [2 * math.pi * f / SAMPLE_RATE for f in self.frequencies]
        samples = array("h", bytes(2 * self.period_frames * FRAME_SAMPLES))
        start = 0
        for index, frames in enumerate(self.segment_frames):
            length = frames * FRAME_SAMPLES
            if index % 2 == 0:
                for n in range(length):
                    edge = min(n, length - 1 - n)
                    gain = amplitude
                    if edge < _RAMP_SAMPLES:
                        gain *= 0.5 - 0.5 * math.cos(math.pi * edge / _RAMP_SAMPLES)
                    value = sum(math.sin(w * n) for w in omegas) * gain
                    samples[start + n] = max(-32768, min(32767, round(value)))
            start += length
        return samples


# Levels: -19 dBm0 per frequency for the dual tones (the North American precise tone plan's
# audible ring level); -16 dBm0 for the single tones, a middle level rather than any one
# national plan's figure.
TONES: dict[str, RingbackTone] = {
    "us": RingbackTone((440.0, 480.0), (2.0, 4.0), -19.0),
    "ca": RingbackTone((440.0, 480.0), (2.0, 4.0), -19.0),
    "uk": RingbackTone((400.0, 450.0), (0.4, 0.2, 0.4, 2.0), -19.0),
    "nz": RingbackTone((400.0, 450.0), (0.4, 0.2, 0.4, 2.0), -19.0),
    "au": RingbackTone((413.0, 438.0), (0.4, 0.2, 0.4, 2.0), -19.0),
    "eu": RingbackTone((425.0,), (1.0, 4.0)),
    "at": RingbackTone((420.0,), (1.0, 5.0)),
    "be": RingbackTone((425.0,), (1.0, 3.0)),
    "fi": RingbackTone((425.0,), (1.0, 4.0)),
    "pl": RingbackTone((425.0,), (1.0, 4.0)),
    "pt": RingbackTone((425.0,), (1.0, 5.0)),
    "de": RingbackTone((425.0,), (1.0, 4.0)),
    "nl": RingbackTone((425.0,), (1.0, 4.0)),
    "it": RingbackTone((425.0,), (1.0, 4.0)),
    "ch": RingbackTone((425.0,), (1.0, 4.0)),
    "dk": RingbackTone((425.0,), (1.0, 4.0)),
    "no": RingbackTone((425.0,), (1.0, 4.0)),
    "se": RingbackTone((425.0,), (1.0, 5.0)),
    "es": RingbackTone((425.0,), (1.5, 3.0)),
    "fr": RingbackTone((440.0,), (1.5, 3.5)),
}
TONES["gb"] = TONES["uk"]


def tone_for(country: str) -> RingbackTone:
    """The tone of ``country`` (ISO 3166 alpha-2, lower case, or "eu" for CEPT)."""
    try:
        return TONES[country.lower()]
    except KeyError:
        raise UnknownCountry("unknown ringback country %r; known: %s"
                             % (country, ", ".join(sorted(TONES)))) from None


@dataclass(frozen=True)
class EncodedCadence:
    """One period of ready RTP payloads; ``burst_start`` marks frames that open a talkspurt."""

    codec: G711Law
    payloads: tuple[bytes, ...]
    sounding: tuple[bool, ...]
    burst_start: tuple[bool, ...]

    def __len__(self) -> int:
        return len(self.payloads)


@cache
def _encoded(country: str, codec_name: str) -> EncodedCadence:
    tone = tone_for(country)
    codec = CODECS[codec_name]
    pcm = tone.pcm()
    silence = codec.silence_frame(FRAME_SAMPLES)
    sounding = tone.sounding()
    payloads = tuple(
        codec.encode(pcm[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES]) if on else silence
        for i, on in enumerate(sounding))
    starts = tuple(on and not sounding[i - 1] for i, on in enumerate(sounding))
    return EncodedCadence(codec, payloads, sounding, starts)


def encoded_cadence(country: str, codec: G711Law) -> EncodedCadence:
    """The cached period of ``country``'s tone in ``codec`` (built on first use)."""
    return _encoded(country.lower(), codec.name)
