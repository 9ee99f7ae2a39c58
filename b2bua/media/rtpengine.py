"""rtpengine as the media engine: one call's offers and answers go through its ng protocol.

The same job as ``MediaSession`` (every SDP of a relayed call points at the relay, ports
kept for the call's life, dead calls noticed), done by an rtpengine daemon so that RTP
leaves the Python process.  Each side of the call is one rtpengine tag ("caller",
"callee"): an offer is sent with the offerer's tag as from-tag, its answer with the
answerer's as to-tag, whichever leg offers.  rtpengine learns each side's real address from
its RTP (it latches like our relay); ``received-from`` tells it the signalling source.

The methods return Deferreds (an ng round trip); the dead-call watchdog polls ``query`` for
the call's RTP packet count.
"""

from __future__ import annotations

from typing import Callable, Iterable, cast

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed

from b2bua.logs import Logger
from b2bua.media.bencode import Decoded, Value
from b2bua.media.ng import NgClient, NgError
from b2bua.clock import DelayedCall
from b2bua.media.ports import ReactorClock
from b2bua.media.relay import Side
from b2bua.media.sdp import SessionDescription
from b2bua.media.session import StreamView, read_streams
from b2bua.media.stats import MediaStats
from b2bua.media.quiet import QuietWatch

TAGS = {Side.CALLER: "caller", Side.CALLEE: "callee"}
_FIXED: dict[str, Value] = {"ICE": "remove", "replace": ["origin", "session-connection"]}


def _packets(reply: dict[str, Decoded]) -> int:
    totals = reply.get("totals")
    if not isinstance(totals, dict):
        return 0
    rtp = totals.get("RTP")
    packets = rtp.get("packets") if isinstance(rtp, dict) else None
    return packets if isinstance(packets, int) else 0


class RtpengineSession:
    """One relayed call in rtpengine; see the module docstring."""

    log = Logger()
    asynchronous = True

    def __init__(self, client: NgClient, clock: ReactorClock, call_id: str, *,
                 hosts: dict[Side, Iterable[str]] | None = None,
                 stats: MediaStats | None = None, rtp_timeout: float = 0.0,
                 on_timeout: Callable[[], object] | None = None) -> None:
        self.client = client
        self.clock = clock
        self.call_id = call_id
        self.hosts = {side: frozenset((hosts or {}).get(side, ())) for side in Side}
        self.stats = stats
        self.rtp_timeout = rtp_timeout
        self.on_timeout = on_timeout
        self.views: dict[Side, list[StreamView]] = {side: [] for side in Side}
        self._pending: dict[Side, list[StreamView]] = {}
        self._answered = False
        self._watch: DelayedCall | None = None
        self._quiet = QuietWatch(rtp_timeout, stats, on_timeout)
        self.stopped = False

    def _received_from(self, side: Side) -> dict[str, Value]:
        host = next(iter(sorted(self.hosts[side])), None)
        if host is None:
            return {}
        return {"received-from": ["IP6" if ":" in host else "IP4", host]}

    def offer(self, side: Side, body: bytes) -> Deferred[bytes]:
        """``side`` offers: rtpengine's rewritten offer for the other side."""
        self._pending[side] = read_streams(SessionDescription.parse(body))
        arguments: dict[str, Value] = {"call-id": self.call_id, "from-tag": TAGS[side],
                                       "sdp": body, **_FIXED, **self._received_from(side)}
        if self._answered:
            arguments["to-tag"] = TAGS[side.other]
        return self.client.command("offer", **_python(arguments)).addCallback(_sdp)

    def answer(self, side: Side, body: bytes) -> Deferred[bytes]:
        """``side`` answers the other's offer: rtpengine's rewritten answer for the offerer."""
        views = read_streams(SessionDescription.parse(body))
        offerer = side.other
        arguments: dict[str, Value] = {"call-id": self.call_id, "from-tag": TAGS[offerer],
                                       "to-tag": TAGS[side], "sdp": body, **_FIXED,
                                       **self._received_from(side)}

        def answered(sdp: bytes) -> bytes:
            offered = self._pending.pop(offerer, None)
            if offered is not None:
                self.views[offerer] = offered
            self.views[side] = views
            if not self._answered and self.stats is not None:
                self.stats.streams_total += sum(1 for v in views if not v.rejected)
            self._answered = True
            self._start_watchdog()
            return sdp

        d = self.client.command("answer", **_python(arguments)).addCallback(_sdp)
        return d.addCallback(answered)

    def rejected(self, side: Side) -> None:
        self._pending.pop(side, None)

    @property
    def held(self) -> bool:
        return any(view.held for side in Side for view in self.views[side])

    # -- the dead-call watchdog: rtpengine counts the packets -----------------------------

    def _start_watchdog(self) -> None:
        if self.rtp_timeout <= 0 or self._watch is not None or self.stopped:
            return
        self._quiet.start(self.clock.seconds())
        self._watch = self.clock.callLater(self._quiet.period, self._poll)

    def _poll(self) -> None:
        self._watch = None
        if self.stopped:
            return
        d = self.client.command("query", call_id=self.call_id)
        d.addCallbacks(self._check, self._query_failed)

    def _query_failed(self, failure: object) -> None:
        self.log.warn("rtpengine query for {call_id} failed: {error}", call_id=self.call_id,
                      error=getattr(failure, "value", failure))
        if not self.stopped:
            self._watch = self.clock.callLater(self._quiet.period, self._poll)

    def _check(self, reply: dict[str, Decoded]) -> None:
        if self.stopped:
            return
        if not self._quiet.dead(_packets(reply), self.held, self.clock.seconds()):
            self._watch = self.clock.callLater(self._quiet.period, self._poll)

    # -- the end -------------------------------------------------------------------------

    def stop(self) -> Deferred[None]:
        """Delete the call in rtpengine (its ports are freed there); safe to call twice."""
        if self.stopped:
            return succeed(None)
        self.stopped = True
        if self._watch is not None and self._watch.active():
            self._watch.cancel()
        self._watch = None
        d = self.client.command("delete", call_id=self.call_id, from_tag=TAGS[Side.CALLER])
        d.addErrback(lambda f: self.log.info("rtpengine delete of {call_id}: {error}",
                                             call_id=self.call_id, error=f.value))
        return d.addCallback(lambda _: None)


def _python(arguments: dict[str, Value]) -> dict[str, Value]:
    """ng keys as ``command()`` keyword names (it turns ``_`` back into ``-``)."""
    return {key.replace("-", "_"): value for key, value in arguments.items()}


def _sdp(reply: dict[str, Decoded]) -> bytes:
    sdp = reply.get("sdp")
    if not isinstance(sdp, bytes):
        raise NgError("rtpengine answered without SDP")
    return sdp


class NgClientService(Service):
    """Binds the ng client's UDP socket while the service runs."""

    def __init__(self, reactor: object, client: NgClient, interface: str = "") -> None:
        self.reactor = reactor
        self.client = client
        self.interface = interface
        self.port: object = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        host = self.client.server[0]
        interface = self.interface or ("::1" if ":" in host else "")
        self.port = self.reactor.listenUDP(0, self.client,  # type: ignore[attr-defined]
                                           interface=interface)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()  # type: ignore[no-untyped-call]
        self.client.stop()
        port, self.port = self.port, None
        if port is not None:
            return cast(Deferred[None] | None, port.stopListening())  # type: ignore[attr-defined]
        return None
