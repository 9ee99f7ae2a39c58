"""Figures of the media relay for /metrics, read at scrape time.

The relay's data path only bumps plain integers on its own streams; the totals are summed
here when Prometheus asks (live streams) or when a stream ends (the ones it leaves behind),
so a packet costs no metrics call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from b2bua.media.relay import RtpRelay


@dataclass
class MediaTotals:
    packets: int = 0     # datagrams relayed (RTP, RTCP, DTLS)
    bytes: int = 0
    latches: int = 0     # a side's first latch onto a source address
    moves: int = 0       # a latch that followed its stream to a new address (roaming)
    dropped: int = 0     # from strangers, junk, or with nowhere to go


def _add(totals: MediaTotals, relay: RtpRelay) -> None:
    for counters in relay.counters.values():
        totals.packets += counters.forwarded
        totals.bytes += counters.bytes_forwarded
        totals.dropped += (counters.dropped_source + counters.dropped_junk
                           + counters.dropped_unbridged)
    for peer in relay.peers.values():
        totals.latches += peer.latches
        totals.moves += peer.moves


class MediaStats:
    """Live relay streams plus what ended ones left; ``timeouts``: calls ended for no RTP."""

    def __init__(self) -> None:
        self.live: set[RtpRelay] = set()
        self.ended = MediaTotals()
        self.streams_total = 0
        self.timeouts = 0

    def add(self, relay: RtpRelay) -> None:
        self.live.add(relay)
        self.streams_total += 1

    def remove(self, relay: RtpRelay) -> None:
        if relay in self.live:
            self.live.remove(relay)
            _add(self.ended, relay)

    def totals(self) -> MediaTotals:
        totals = MediaTotals(**vars(self.ended))
        for relay in self.live:
            _add(totals, relay)
        return totals
