"""RFC 3261 timer values (§17.1.1.1, Table 4), passed in rather than global.

Every derived timer is a property so a test that shrinks T1 shrinks them all.
Reliable transports zero the "wait for retransmissions" timers (D, I, J, K)
because nothing is retransmitted over a stream.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Timers:
    """T1 (RTT estimate), T2 (max non-INVITE retransmit), T4 (max network life)."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    trying: float = 0.2
    """Send 100 Trying if the TU has not answered an INVITE within this (§17.2.1)."""
    timer_c: float | None = 180.0
    """§16.6 Timer C (3 min), re-armed by each provisional, guarding Proceeding:
    a client INVITE CANCELs itself, a server INVITE the TU left silent answers
    408. None turns both off (the TU then owns every INVITE's lifetime)."""

    @property
    def timeout(self) -> float:
        """64*T1: Timers B, F, H, J (unreliable), L and M."""
        return 64 * self.t1

    def timer_d(self, reliable: bool) -> float:
        """Wait for response retransmissions after a non-2xx to INVITE: > 32 s."""
        return 0.0 if reliable else max(32.0, self.timeout)

    def timer_i(self, reliable: bool) -> float:
        """Wait for ACK retransmissions in Confirmed: T4."""
        return 0.0 if reliable else self.t4

    def timer_j(self, reliable: bool) -> float:
        """Wait for non-INVITE request retransmissions: 64*T1."""
        return 0.0 if reliable else self.timeout

    def timer_k(self, reliable: bool) -> float:
        """Wait for non-INVITE response retransmissions: T4."""
        return 0.0 if reliable else self.t4
