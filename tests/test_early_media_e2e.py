"""Early media while a phone is woken, end to end with real peers on 127.0.0.1.

With ``[push] ringback = "183"`` the B2BUA anchors the call's audio: the caller
gets a 183 whose SDP points at our relay and hears the country's ringback tone
over RTP; when the woken phone answers, the 200 carries the same SDP and the
relay joins caller and callee.  The caller here is plain Python sockets (run
off the reactor with ``deferToThread``) so that it can look at every RTP
packet; the phone is SIPp with ``-rtp_echo``, so audio the caller sends
through the relay comes back to it.  The fake APNs lives on the reactor.
"""

from __future__ import annotations

import math
import random
import re
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, threads
from twisted.internet.task import Clock

from b2bua.calls.early_media import EarlyMedia, MediaSettings
from b2bua.media.g711 import PCMU
from b2bua.media.ports import PortAllocator
from b2bua.media.rtp import RtpPacket, pack_header
from b2bua.media.sdp import NotAcceptable, SessionDescription
from b2bua.sip.message import Request, Response, parse_message
from tests.fake_apns import FakeApns, Reply, make_pki
from tests.support import (apns_and_trunk_toml, free_port, recent_cdrs, sipp_args, start_sipp,
                           recv_response, stop_process)

TOKEN = "c-10-ap_Kt0:G7SThkASJx2K4Rm1033iR0mIgzI1cLg5xxpST4cjrd"
SIP_T1 = 0.5
ECHO_SSRC = 0x0EC40EC4


# -- ports and config ------------------------------------------------------------------


def free_window(size: int) -> int:
    """First port of ``size`` consecutive ports (even start) free for UDP on 127.0.0.1.

    Picked below the kernel's ephemeral range, so ``free_port()`` and the OS never hand
    them to someone else while the test runs.
    """
    low_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(21000, low_ephemeral - size) & ~1
        socks: list[socket.socket] = []
        try:
            for port in range(base, base + size):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError("no free port window")


def _config(pki: Any, fake: FakeApns, rtp_low: int, ringback: str | None) -> str:
    push_ringback = f'ringback = "{ringback}"' if ringback else ""
    return f"""
[[users]]
name = "1111"
password = "secret"

[push]
wake_timeout = 10
{push_ringback}

[media]
country = "eu"
rtp_port_min = {rtp_low}
rtp_port_max = {rtp_low + 19}

{apns_and_trunk_toml(pki, fake)}"""


def _sipp(svc: Any, scenario: str, port: int, *extra: str) -> list[str]:
    return sipp_args(svc.port, scenario, port, *extra)


def _register(svc: Any, contact_port: int) -> defer.Deferred:
    """The phone (user 1111, push token TOKEN) registers ``contact_port``, off the reactor."""
    cmd = _sipp(svc, "register_contact.xml", free_port(), "-key", "contact_port",
                str(contact_port), "-key", "expires", "3600", "-key", "provider", "i", "-key", "token", TOKEN)
    return threads.deferToThread(subprocess.run, cmd, capture_output=True, text=True,
                                 timeout=40)


# -- signal analysis ---------------------------------------------------------------------


def goertzel_power(samples: Any, frequency: float, rate: int = 8000) -> float:
    """Power of ``samples`` at one frequency (the Goertzel filter of DTMF detectors)."""
    coeff = 2 * math.cos(2 * math.pi * frequency / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


@dataclass
class Arrival:
    at: float
    packet: RtpPacket
    raw: bytes
    source: tuple[str, int]


# -- the caller: a trunk-side UA on plain sockets ----------------------------------------


@dataclass
class Caller:
    """One outgoing call over UDP with its own RTP socket; every wait is bounded."""

    service_port: int
    sip: socket.socket = field(init=False)
    rtp: socket.socket = field(init=False)
    sip_port: int = field(init=False)
    rtp_port: int = field(init=False)
    call_id: str = field(default_factory=lambda: uuid.uuid4().hex + "@caller")
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    branch: str = field(default_factory=lambda: "z9hG4bK" + uuid.uuid4().hex)
    responses: list[Response] = field(default_factory=list)
    remote_tag: str | None = None
    contact: tuple[str, int] | None = None
    acked: bytes | None = None

    def __post_init__(self) -> None:
        self.sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sip.bind(("127.0.0.1", 0))
        self.rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtp.bind(("127.0.0.1", 0))
        self.sip_port = int(self.sip.getsockname()[1])
        self.rtp_port = int(self.rtp.getsockname()[1])

    def close(self) -> None:
        self.sip.close()
        self.rtp.close()

    @property
    def local(self) -> str:
        return "127.0.0.1:%d" % self.sip_port

    def offer(self) -> bytes:
        return ("v=0\r\no=caller 4242 4242 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
                f"t=0 0\r\nm=audio {self.rtp_port} RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\n"
                "a=rtpmap:8 PCMA/8000\r\na=sendrecv\r\n").encode()

    def _request(self, method: str, cseq: int, uri: str, branch: str, body: bytes = b"",
                 to_tag: str | None = None) -> bytes:
        to = f"<sip:1111@127.0.0.1:{self.service_port}>" + (f";tag={to_tag}" if to_tag else "")
        lines = [f"{method} {uri} SIP/2.0",
                 f"Via: SIP/2.0/UDP {self.local};branch={branch};rport",
                 f'From: "John Smith" <sip:1234@{self.local}>;tag={self.tag}',
                 f"To: {to}", f"Call-ID: {self.call_id}", f"CSeq: {cseq} {method}",
                 f"Contact: <sip:1234@{self.local}>", "Max-Forwards: 70"]
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    @property
    def request_uri(self) -> str:
        return f"sip:1111@127.0.0.1:{self.service_port}"

    def _send_sip(self, data: bytes, dest: tuple[str, int] | None = None) -> None:
        self.sip.sendto(data, dest or ("127.0.0.1", self.service_port))

    def _receive(self, until: float) -> Response | None:
        """The next response (None at ``until``); re-ACKs a retransmitted 2xx on the way."""
        while True:
            message = recv_response(self.sip, until)
            if message is None:
                return None
            if (message.cseq.method == "INVITE" and 200 <= message.status < 300
                    and self.acked is not None):
                self._send_sip(self.acked, self.contact)
                continue
            self.responses.append(message)
            return message

    def _await(self, method: str, wanted: int, retransmit: bytes | None,
               timeout: float) -> Response:
        """Wait for a response to ``method`` with status >= ``wanted``; retransmit until any."""
        until = time.monotonic() + timeout
        heard = False
        while True:
            if retransmit is not None and not heard:
                self._send_sip(retransmit)
            response = self._receive(min(until, time.monotonic() + SIP_T1) if not heard
                                     else until)
            if response is None:
                if time.monotonic() >= until:
                    raise AssertionError(f"no {wanted}+ response to {method} in {timeout}s; "
                                         f"got {[r.status for r in self.responses]}")
                continue
            if response.cseq.method != method:
                continue
            heard = True
            if response.status >= wanted:
                return response

    # -- the call ------------------------------------------------------------------------

    def invite(self, timeout: float = 10) -> Response:
        """Send the INVITE; returns the first response other than 100."""
        invite = self._request("INVITE", 1, self.request_uri, self.branch, self.offer())
        return self._await("INVITE", 101, invite, timeout)

    def final(self, timeout: float = 20) -> Response:
        return self._await("INVITE", 200, None, timeout)

    def ack(self, response: Response) -> None:
        """ACK a 2xx (new branch, to its Contact) and keep it for retransmitted 2xx."""
        self.remote_tag = response.to.tag
        uri = response.contacts[0].uri
        self.contact = (uri.host, uri.port or 5060)
        self.acked = self._request("ACK", 1, str(uri), "z9hG4bK" + uuid.uuid4().hex,
                                   to_tag=self.remote_tag)
        self._send_sip(self.acked, self.contact)

    def bye(self, timeout: float = 10) -> Response:
        assert self.contact is not None
        bye = self._request("BYE", 2, f"sip:b2bua@{self.contact[0]}:{self.contact[1]}",
                            "z9hG4bK" + uuid.uuid4().hex, to_tag=self.remote_tag)
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            self._send_sip(bye, self.contact)
            response = self._receive(min(until, time.monotonic() + SIP_T1))
            if response is not None and response.cseq.method == "BYE" and response.status >= 200:
                return response
        raise AssertionError("no final response to BYE")

    def cancel(self, timeout: float = 10) -> Response:
        """CANCEL the INVITE; returns the INVITE's final response (ACKed, non-2xx)."""
        cancel = self._request("CANCEL", 1, self.request_uri, self.branch)
        self._await("CANCEL", 200, cancel, timeout)
        final = self.final(timeout)
        self._send_sip(self._request("ACK", 1, self.request_uri, self.branch,
                                     to_tag=final.to.tag))
        return final

    # -- RTP -----------------------------------------------------------------------------

    def receive_rtp(self, until: float) -> Iterator[Arrival]:
        while True:
            left = until - time.monotonic()
            if left <= 0:
                return
            self.rtp.settimeout(left)
            try:
                raw, source = self.rtp.recvfrom(2048)
            except TimeoutError:
                return
            yield Arrival(time.monotonic(), RtpPacket.parse(raw), raw, source)

    def drain_rtp(self) -> list[Arrival]:
        """Whatever already waits in the RTP socket."""
        self.rtp.setblocking(False)
        out = []
        try:
            while True:
                raw, source = self.rtp.recvfrom(2048)
                out.append(Arrival(time.monotonic(), RtpPacket.parse(raw), raw, source))
        except BlockingIOError:
            return out
        finally:
            self.rtp.setblocking(True)

    def echo(self, relay: tuple[str, int], count: int = 20, timeout: float = 3.0,
             ) -> tuple[int, list[Arrival]]:
        """Send RTP packets to the relay, each only once the previous one came back.

        Returns (packets that came back byte for byte, other packets seen meanwhile);
        stops at the first packet whose echo does not come within ``timeout``.
        """
        strays: list[Arrival] = []
        for index in range(count):
            payload = bytes((index * 7 + k) & 0xFF for k in range(160))
            packet = pack_header(0, 1000 + index, 160 * index, ECHO_SSRC, index == 0) + payload
            self.rtp.sendto(packet, relay)
            for arrival in self.receive_rtp(time.monotonic() + timeout):
                if arrival.raw == packet and arrival.source == relay:
                    break
                strays.append(arrival)
            else:
                return index, strays
        return count, strays


def _media_port(sdp: SessionDescription) -> tuple[str, int, tuple[str, ...]]:
    media = sdp.media[0]
    address = sdp.media_address(media)
    assert address is not None
    return address[0], address[1], media.formats


# -- fixtures ----------------------------------------------------------------------------


@pytest.fixture
def apns(tmp_path: Path) -> Iterator[tuple[Any, FakeApns]]:
    pki = make_pki(tmp_path / "pki")
    fake = FakeApns(reactor, pki).start()
    yield pki, fake
    pytest_twisted.blockon(fake.stop())


@pytest.fixture
def sleeping_phone() -> Iterator[socket.socket]:
    """The phone's old SIP socket: the contact it registered, now asleep (reads, never answers)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", free_port()))
    yield sock
    sock.close()


# -- the two halves of the call, each run off the reactor --------------------------------


@dataclass
class Ringing:
    """What the caller got before anybody answered."""

    response: Response
    answered_at: float           # when it arrived (time.monotonic)
    b_invite: Request            # what the sleeping phone's old contact received
    arrivals: list[Arrival]


def _ring(caller: Caller, sleeping: socket.socket, listen: float = 1.2) -> Ringing:
    """INVITE, the first answer, then ``listen`` seconds of RTP from its first packet."""
    response = caller.invite()
    answered_at = time.monotonic()
    sleeping.settimeout(5)
    b_invite = parse_message(sleeping.recv(65535))
    assert isinstance(b_invite, Request)
    arrivals: list[Arrival] = []
    for first in caller.receive_rtp(time.monotonic() + 2.0):
        arrivals.append(first)
        arrivals.extend(caller.receive_rtp(first.at + listen))
        break
    return Ringing(response, answered_at, b_invite, arrivals)


@dataclass
class Answered:
    final: Response
    tone_before_answer: int = 0
    echoed: int = 0
    strays: list[Arrival] = field(default_factory=list)
    bye: Response | None = None


def _talk(caller: Caller, relay: tuple[str, int], packets: int) -> Answered:
    """Wait for the 200, ACK it, send audio through the relay and get it echoed, hang up."""
    final = caller.final(timeout=20)
    result = Answered(final)
    if final.status != 200:
        return result
    caller.ack(final)
    # The tone stops before the 200 is sent: all of it is already in the socket.
    result.tone_before_answer = len(caller.drain_rtp())
    result.echoed, result.strays = caller.echo(relay, packets)
    result.bye = caller.bye()
    return result


def _ports_free(low: int, count: int) -> bool:
    """True if nobody (the service's relay, say) holds a port of [low, low + count)."""
    for port in range(low, low + count):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _invite_body_in_log(path: Path) -> bytes:
    """The SDP body of the first INVITE in a SIPp ``-trace_msg`` log."""
    text = path.read_text(errors="replace").replace("\r\n", "\n")
    start = text.index("INVITE sip:")
    message = re.split(r"\n-{10,}", text[start:], maxsplit=1)[0]
    return message.partition("\n\n")[2].strip().encode()


# -- checks ------------------------------------------------------------------------------


def check_early_answer(early: Response, rtp_low: int) -> tuple[str, int]:
    """The 183 answers the caller's offer from our relay, PCMU (the caller's first choice)."""
    assert early.status == 183, early.status
    assert early.content_type == "application/sdp"
    sdp = SessionDescription.parse(early.body)
    host, port, formats = _media_port(sdp)
    assert host == "127.0.0.1" and rtp_low <= port < rtp_low + 20, (host, port)
    assert formats == ("0",)
    assert sdp.media_direction(sdp.media[0]).value == "sendrecv"  # kept for after the 200
    return host, port


def check_callee_offer(invite: Request, rtp_low: int, caller_port: int) -> tuple[int, bytes]:
    """A B-leg INVITE offers the relay's callee port, only the codec the caller got."""
    sdp = SessionDescription.parse(invite.body)
    host, port, formats = _media_port(sdp)
    assert host == "127.0.0.1" and rtp_low <= port < rtp_low + 20, (host, port)
    assert formats == ("0",)
    assert f" {caller_port} " not in invite.body.decode()  # the caller stays hidden
    return port, sdp.to_bytes()


def check_ringback(arrivals: list[Arrival], source: tuple[str, int]) -> dict[float, float]:
    """50 packets/s, seq +1 and timestamp +160 each, 425 Hz for 1 s, then silence.

    Returns the Goertzel power of the first second at a few frequencies.
    """
    assert arrivals, "no RTP after the 183"
    t0 = arrivals[0].at
    first_second = [a for a in arrivals if a.at < t0 + 1.0]
    assert 45 <= len(first_second) <= 55, len(first_second)
    assert all(a.source == source for a in arrivals)           # from the port in the SDP
    assert {a.packet.ssrc for a in arrivals} == {arrivals[0].packet.ssrc}
    assert {a.packet.payload_type for a in arrivals} == {0}
    assert arrivals[0].packet.marker and not any(a.packet.marker for a in arrivals[1:])
    assert {len(a.packet.payload) for a in arrivals} == {160}
    for before, after in zip(arrivals, arrivals[1:]):
        assert after.packet.sequence == (before.packet.sequence + 1) & 0xFFFF
        assert after.packet.timestamp == (before.packet.timestamp + 160) & 0xFFFFFFFF
    samples = PCMU.decode(b"".join(a.packet.payload for a in arrivals[:50]))
    power = {f: goertzel_power(samples, f) for f in (400.0, 425.0, 450.0, 1000.0)}
    assert power[425] > 100 * power[1000], power
    assert power[425] > 100 * max(power[400], power[450]), power   # 425 Hz, not 420 or 440
    off = arrivals[50:]   # "eu": 1 s on, 4 s off
    assert off and all(not any(PCMU.decode(a.packet.payload)) for a in off)
    return power


# -- tests -------------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_183_tone_while_the_phone_wakes_then_audio_through_the_relay(
        start_service, apns, sleeping_phone: socket.socket, tmp_path: Path) -> None:
    pki, fake = apns
    rtp_low = free_window(20)
    svc = yield threads.deferToThread(start_service, _config(pki, fake, rtp_low, "183"))
    reg = yield _register(svc, sleeping_phone.getsockname()[1])   # registers, then sleeps
    assert reg.returncode == 0, reg.stdout + reg.stderr

    new_port, echo_port = free_port(), free_window(4)
    phone_log = tmp_path / "phone_messages.log"
    tone_checked: defer.Deferred = defer.Deferred()
    woken: dict[str, Any] = {}

    def on_push(request: Any) -> Reply:
        woken["phone"] = start_sipp(_sipp(
            svc, "phone_answer.xml", new_port, "-mi", "127.0.0.1", "-mp", str(echo_port),
            "-rtp_echo", "-trace_msg", "-message_file", str(phone_log))[1:])
        # The woken phone registers once the caller has checked its tone, so that
        # nothing can answer while the test listens to the ringback.
        woken["register"] = tone_checked.addCallback(lambda _: _register(svc, new_port))
        return Reply.ok()

    fake.on_request = on_push
    caller = Caller(svc.port)
    try:
        ringing = yield threads.deferToThread(_ring, caller, sleeping_phone)
        relay = check_early_answer(ringing.response, rtp_low)
        b_port, b_offer = check_callee_offer(ringing.b_invite, rtp_low, caller.rtp_port)
        assert b_port != relay[1]
        check_ringback(ringing.arrivals, relay)
        assert ringing.arrivals[0].at - ringing.answered_at < 1.0   # the tone starts at once
        pushes = yield fake.wait_for_requests(1)
        assert [p.token for p in pushes] == [TOKEN]

        tone_checked.callback(None)                  # the phone wakes and registers
        reg2 = yield woken["register"]
        assert reg2.returncode == 0, reg2.stdout + reg2.stderr
        talk = yield threads.deferToThread(_talk, caller, relay, 20)
        assert talk.final.status == 200, (talk.final.status, svc.log()[-4000:])
        assert talk.final.body == ringing.response.body      # the 183's SDP, byte for byte
        assert talk.echoed == 20, (talk.echoed, svc.log()[-3000:])
        assert talk.tone_before_answer > 0, "the tone must play until the answer"
        assert talk.strays == [], "tone (or other RTP) after the answer"
        assert talk.bye is not None and talk.bye.status == 200
        phone = woken["phone"]
        yield threads.deferToThread(phone.wait, 20)
        assert phone.returncode == 0, phone.stdout.read().decode(errors="replace")[-3000:]
    finally:
        caller.close()
        if "phone" in woken:
            stop_process(woken["phone"])

    # The woken phone got the very offer the sleeping contact got: the relay's.
    woken_offer = SessionDescription.parse(_invite_body_in_log(phone_log)).to_bytes()
    assert woken_offer == b_offer
    cdr = recent_cdrs(svc, tail=1)[-1]
    assert cdr["status"] == 200 and cdr["call_id"] == caller.call_id
    # The call ended (its CDR is written after the relay is told to stop): ports are back.
    assert _ports_free(rtp_low, 20)


@pytest_twisted.inlineCallbacks
def test_default_ringback_is_a_plain_180_without_rtp(
        start_service, apns, sleeping_phone: socket.socket) -> None:
    pki, fake = apns
    rtp_low = free_window(20)
    svc = yield threads.deferToThread(start_service, _config(pki, fake, rtp_low, None))
    reg = yield _register(svc, sleeping_phone.getsockname()[1])
    assert reg.returncode == 0, reg.stdout + reg.stderr
    caller = Caller(svc.port)
    try:
        ringing = yield threads.deferToThread(_ring, caller, sleeping_phone, 0)
        assert ringing.response.status == 180, ringing.response.status
        assert ringing.response.body == b""
        assert ringing.arrivals == [], 'RTP from the B2BUA without ringback = "183"'
        assert _ports_free(rtp_low, 20), "an RTP port is bound without a tone or the relay"
        # Not anchored: the callee is offered the caller's own media address.
        offered = _media_port(SessionDescription.parse(ringing.b_invite.body))
        assert offered[:2] == ("127.0.0.1", caller.rtp_port)
        pushes = yield fake.wait_for_requests(1)
        assert len(pushes) == 1
        final = yield threads.deferToThread(caller.cancel)
        assert final.status == 487
    finally:
        caller.close()


# -- the relay's tone when the callee's answer is unusable (fake reactor, no sockets) ----


class _FakeUdpPort:
    def __init__(self, port: int) -> None:
        self.port = port
        self.written: list[tuple[bytes, tuple[str, int]]] = []

    def getHost(self) -> _FakeUdpPort:
        return self

    def write(self, datagram: bytes, addr: tuple[str, int]) -> None:
        self.written.append((datagram, addr))

    def stopListening(self) -> None:
        return None


class _FakeUdpReactor(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.ports: dict[int, _FakeUdpPort] = {}

    def listenUDP(self, port: int, protocol: Any, interface: str = "",
                  maxPacketSize: int = 8192) -> _FakeUdpPort:
        self.ports[port] = _FakeUdpPort(port)
        return self.ports[port]


def test_an_unusable_callee_answer_stops_the_tone() -> None:
    """A callee refusing the anchored stream still answers the call: ringback must end."""
    clock = _FakeUdpReactor()
    settings = MediaSettings(clock, PortAllocator(30000, 30019), "127.0.0.1", "127.0.0.1",
                             country="eu", tone=True)
    offer = (b"v=0\r\no=c 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
             b"m=audio 4000 RTP/AVP 0\r\n")
    media = EarlyMedia.start(settings, offer, "127.0.0.1")
    media.play_tone()
    clock.pump([0.02] * 10)
    caller_side = clock.ports[media.anchored.relay.caller_port]
    sent = len(caller_side.written)
    assert sent >= 10                          # the tone plays
    refusal = offer.replace(b"m=audio 4000", b"m=audio 0")
    with pytest.raises(NotAcceptable):
        media.answered(refusal, "127.0.0.1")
    clock.pump([0.02] * 50)
    assert len(caller_side.written) == sent    # and stops with the answer
