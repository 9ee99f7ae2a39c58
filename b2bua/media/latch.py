"""Latching with roaming: where to send one side's RTP, and when to follow it elsewhere.

A phone behind NAT is reached at the address its own RTP comes from (symmetric RTP,
RFC 4961), so the relay latches on its first packet from an expected host.  A phone that
moves from Wi-Fi to LTE keeps its stream (same SSRC, sequence numbers going on) but sends
from a new address: after ``confirm`` consecutive packets that continue the latched stream
the latch moves there.  A stranger cannot take the stream over: it would have to guess the
SSRC and the sequence numbers and keep ahead of the real sender, whose every packet resets
the count.  Sans-IO: addresses and bytes in, decisions out.
"""

from __future__ import annotations

import struct

from b2bua.media.rtp import Address, SourceAddress, SymmetricPeer

_SEQ_TS_SSRC = struct.Struct("!HII")
MAX_SEQ_JUMP = 100          # packets a roaming stream may have lost on the way (2 s at 20 ms)
MAX_TS_JUMP = 48000 * 5     # 5 s at 48 kHz: any codec's clock moves less in that gap
CONFIRM = 3                 # consecutive continuing packets before the latch moves


def rtp_fields(datagram: bytes) -> tuple[int, int, int]:
    """(sequence, timestamp, SSRC) of an RTP packet that ``looks_like_rtp``."""
    return _SEQ_TS_SSRC.unpack_from(datagram, 2)


def _continues(seq: int, ts: int, last_seq: int, last_ts: int) -> bool:
    seq_gap = (seq - last_seq) & 0xFFFF
    ts_gap = (ts - last_ts) & 0xFFFFFFFF
    return 1 <= seq_gap <= MAX_SEQ_JUMP and ts_gap <= MAX_TS_JUMP


class RoamingPeer(SymmetricPeer):
    """A ``SymmetricPeer`` whose latch follows its own stream to a new source address."""

    def __init__(self, advertised: Address | None, hosts: tuple[str, ...] | frozenset[str] = (),
                 confirm: int = CONFIRM) -> None:
        super().__init__(advertised, hosts)
        self.confirm = confirm
        self.ssrc: int | None = None
        self.seq = 0
        self.ts = 0
        self.moves = 0                 # times the latch moved (roaming)
        self.latches = 0               # first latches
        self._candidate: Address | None = None
        self._candidate_count = 0
        self._candidate_seq = 0
        self._candidate_ts = 0

    def accept_rtp(self, source: SourceAddress, datagram: bytes) -> bool:
        """True if this RTP packet from ``source`` is the peer's; latches or moves the latch."""
        latched = self.latched
        if latched is not None and source[0] == latched[0] and source[1] == latched[1]:
            self.seq, self.ts, self.ssrc = rtp_fields(datagram)
            self._candidate = None  # the old path still works: no roaming
            return True
        if latched is None:
            if source[0] not in self.hosts:
                return False
            self.latched = (source[0], source[1])
            self.latches += 1
            self.seq, self.ts, self.ssrc = rtp_fields(datagram)
            return True
        return self._roam(source, datagram)

    def _roam(self, source: SourceAddress, datagram: bytes) -> bool:
        seq, ts, ssrc = rtp_fields(datagram)
        if ssrc != self.ssrc:
            return False
        address = (source[0], source[1])
        if address == self._candidate:
            ok = _continues(seq, ts, self._candidate_seq, self._candidate_ts)
        else:
            ok = _continues(seq, ts, self.seq, self.ts)
            if ok:
                self._candidate, self._candidate_count = address, 0
        if not ok:
            if address == self._candidate:
                self._candidate = None
            return False
        self._candidate_seq, self._candidate_ts = seq, ts
        self._candidate_count += 1
        if self._candidate_count < self.confirm:
            return False
        self.latched, self._candidate = address, None
        self.seq, self.ts = seq, ts
        self.moves += 1
        return True

    def accept_other(self, source: SourceAddress) -> bool:
        """RTCP (muxed) or DTLS on the RTP port: only from the latched address.

        DTLS may come first (a DTLS-SRTP handshake precedes any RTP): it may latch.
        """
        latched = self.latched
        if latched is not None:
            return source[0] == latched[0] and source[1] == latched[1]
        if self.accept(source):
            self.latches += 1
            return True
        return False
