"""The media relay in the field, end to end: ``[media] relay = true``, the service started as
users start it, a caller on Python sockets (it sees every RTP packet) and SIPp as the callee
with ``-rtp_echo`` (what reaches it through the relay comes back the same way).

Hold and resume with re-INVITEs, a new media address mid-call, Opus with PT 96 byte for
byte, RTCP on port + 1 and muxed, roaming without a re-INVITE, a stray sender, and
``rtp_timeout`` ending a dead call with BYEs and CDR reason ``rtp-timeout``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from b2bua.media.bencode import decode, encode
from b2bua.media.rtp import RtpPacket, pack_header
from b2bua.media.sdp import SessionDescription
from b2bua.sip.message import Request, Response, parse_message
from tests.support import (free_port, http_get, metric_value, recent_cdrs, require_sipp,
                           recv_response, sipp_args, start_sipp, stop_process)
from tests.test_early_media_e2e import SIP_T1, Caller, _ports_free, free_window

SSRC = 0x0B05C0DE


@pytest.fixture(autouse=True)
def _sipp() -> None:
    require_sipp()


def ng_ping(port: int, timeout: float = 0.5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        cookie = os.urandom(6).hex().encode()
        sock.sendto(cookie + b" " + encode({"command": "ping"}), ("127.0.0.1", port))
        try:
            reply = sock.recv(65535)
        except OSError:
            return False
    return reply.startswith(cookie + b" ") and decode(reply.split(b" ", 1)[1]) == {
        "result": b"pong"}


@pytest.fixture
def rtpengine(tmp_path: Path) -> Iterator[tuple[int, int]]:
    """A real rtpengine in user space on free loopback ports: (ng port, first media port)."""
    binary = shutil.which("rtpengine")
    if binary is None:
        pytest.skip("rtpengine is not installed (apt-get install -y rtpengine-daemon)")
    ng_port, media_low = free_port(), free_window(100)
    log = tmp_path / "rtpengine.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "--config-file=none", "--interface=127.0.0.1",
             f"--listen-ng=127.0.0.1:{ng_port}",
             f"--listen-cli=127.0.0.1:{free_port(socket.SOCK_STREAM)}", "--foreground",
             "--log-stderr", "--log-level=5", "--table=-1", f"--port-min={media_low}",
             f"--port-max={media_low + 99}"], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while not ng_ping(ng_port):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"rtpengine did not start: {log.read_text()[-2000:]}")
        yield ng_port, media_low
    finally:
        stop_process(process)


@pytest.fixture(params=["builtin", "rtpengine"])
def engine(request: Any) -> tuple[str, int, int]:
    """(the [media] lines choosing the engine, first port, count) of where RTP goes."""
    if request.param == "builtin":
        low = free_window(40)
        return f"rtp_port_min = {low}\nrtp_port_max = {low + 39}\n", low, 40
    ng_port, low = request.getfixturevalue("rtpengine")
    return f'engine = "rtpengine"\nrtpengine = "udp:127.0.0.1:{ng_port}"\n', low, 100


def relay_config(media: str, callee_port: int, metrics_port: int,
                 rtp_timeout: float = 0) -> tuple[str, str]:
    extra = f"""
[media]
relay = true
{media}rtp_timeout = {rtp_timeout}

[metrics]
listen = "tcp:{metrics_port}:interface=127.0.0.1"

[[trunk]]
name = "carrier"
uri = "sip:127.0.0.1:5999"
accept_from = ["127.0.0.1/32"]
"""
    routers = f'[[router]]\nplugin = "static"\ntarget = "sip:1111@127.0.0.1:{callee_port}"\n'
    return extra, routers


class MediaCaller(Caller):
    """A caller with its own SDP, re-INVITEs, and BYEs from the far side."""

    def __init__(self, service_port: int, sdp: str) -> None:
        super().__init__(service_port)
        self.sdp = sdp
        self.cseq = 1
        self.seq = 0

    def offer(self) -> bytes:
        return self.body(self.rtp_port)

    def body(self, port: int, direction: str = "sendrecv", version: int = 1) -> bytes:
        return (self.sdp.format(port=port, direction=direction, version=version)
                .replace("\n", "\r\n").encode())

    def _receive(self, until: float) -> Response | None:
        """The next response; a retransmitted 2xx of the first INVITE is re-ACKed."""
        while True:
            message = recv_response(self.sip, until)
            if message is None:
                return None
            if (message.cseq.method == "INVITE" and message.cseq.number == 1
                    and 200 <= message.status < 300 and self.acked is not None):
                self._send_sip(self.acked, self.contact)
                continue
            self.responses.append(message)
            return message

    def reinvite(self, body: bytes, timeout: float = 10) -> Response:
        """A re-INVITE with ``body``; returns its 2xx (ACKed)."""
        assert self.contact is not None
        self.cseq += 1
        uri = f"sip:b2bua@{self.contact[0]}:{self.contact[1]}"
        request = self._request("INVITE", self.cseq, uri, "z9hG4bK" + uuid.uuid4().hex, body,
                                to_tag=self.remote_tag)
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            self._send_sip(request, self.contact)
            response = self._receive(min(until, time.monotonic() + SIP_T1))
            if (response is not None and response.cseq.number == self.cseq
                    and response.status >= 200):
                ack = self._request("ACK", self.cseq, uri, "z9hG4bK" + uuid.uuid4().hex,
                                    to_tag=self.remote_tag)
                self._send_sip(ack, self.contact)
                return response
        raise AssertionError("no final response to the re-INVITE")

    def bye(self, timeout: float = 10) -> Response:
        """BYE with the dialog's next CSeq (after our re-INVITEs)."""
        assert self.contact is not None
        self.cseq += 1
        bye = self._request("BYE", self.cseq, f"sip:b2bua@{self.contact[0]}:{self.contact[1]}",
                            "z9hG4bK" + uuid.uuid4().hex, to_tag=self.remote_tag)
        until = time.monotonic() + timeout
        while time.monotonic() < until:
            self._send_sip(bye, self.contact)
            response = self._receive(min(until, time.monotonic() + SIP_T1))
            if response is not None and response.cseq.method == "BYE" and response.status >= 200:
                return response
        raise AssertionError("no final response to BYE")

    def wait_bye(self, timeout: float) -> Request:
        """The far side's BYE (answered 200)."""
        until = time.monotonic() + timeout
        while (left := until - time.monotonic()) > 0:
            self.sip.settimeout(left)
            try:
                data, source = self.sip.recvfrom(65535)
            except TimeoutError:
                break
            message = parse_message(data)
            if isinstance(message, Request) and message.method == "BYE":
                lines = ["SIP/2.0 200 OK"] + [f"{name}: {value}" for name, value
                                                in message.headers.items()
                                                if name.lower() in ("via", "from", "to",
                                                                    "call-id", "cseq")]
                self.sip.sendto(("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n")
                                .encode(), source)
                return message
        raise AssertionError("no BYE")

    def packet(self, pt: int = 96) -> bytes:
        self.seq += 1
        return pack_header(pt, self.seq, 960 * self.seq, SSRC) + bytes(
            (self.seq * 3 + k) & 0xFF for k in range(80))

    def echo_from(self, sock: socket.socket, relay: tuple[str, int], count: int,
                  timeout: float = 3.0) -> tuple[int, list[bytes]]:
        """Send ``count`` packets from ``sock``; each must come back byte for byte."""
        strays: list[bytes] = []
        for index in range(count):
            packet = self.packet()
            sock.sendto(packet, relay)
            sock.settimeout(timeout)
            try:
                while True:
                    data, source = sock.recvfrom(2048)
                    if data == packet and source == relay:
                        break
                    strays.append(data)
            except TimeoutError:
                return index, strays
        return count, strays


OPUS_SDP = """v=0
o=caller 4242 {version} IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio {port} RTP/AVP 0 96 101
a=rtpmap:0 PCMU/8000
a=rtpmap:96 opus/48000/2
a=fmtp:96 useinbandfec=1
a=rtpmap:101 telephone-event/8000
a=rtcp-mux
a={direction}
"""

PCMU_SDP = """v=0
o=caller 4242 {version} IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio {port} RTP/AVP 0
a=rtpmap:0 PCMU/8000
a={direction}
"""


def relay_address(response: Response) -> tuple[str, int]:
    sdp = SessionDescription.parse(response.body)
    address = sdp.media_address(sdp.media[0])
    assert address is not None
    return address


def udp_socket(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    return sock


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def test_hold_resume_new_address_roaming_opus_and_rtcp_mux(
        start_service: Any, tmp_path: Path, sockets: list[socket.socket],
        engine: tuple[str, int, int]) -> None:
    media, rtp_low, rtp_count = engine
    builtin = "rtpengine" not in media
    echo_port, callee_port, metrics_port = free_window(4), free_port(), free_port()
    extra, routers = relay_config(media, callee_port, metrics_port)
    svc = start_service(extra, routers=routers)
    log = tmp_path / "callee.log"
    callee = start_sipp(sipp_args(svc.port, "media_uas_hold.xml", callee_port, "-mi",
                                  "127.0.0.1", "-mp", str(echo_port), "-rtp_echo",
                                  "-trace_msg", "-message_file", str(log))[1:])
    caller = MediaCaller(svc.port, OPUS_SDP)
    try:
        first = caller.invite()
        final = first if first.status >= 200 else caller.final()
        assert final.status == 200, svc.log()[-3000:]
        caller.ack(final)
        relay = relay_address(final)
        assert relay[0] == "127.0.0.1" and rtp_low <= relay[1] < rtp_low + rtp_count
        answer = final.body.decode()
        assert "m=audio %d RTP/AVP 96 101" % relay[1] in answer and "opus/48000/2" in answer
        assert "a=rtcp-mux" in answer and str(echo_port) not in answer

        # Opus, PT 96, byte for byte both ways; RTCP muxed on the same port
        assert caller.echo_from(caller.rtp, relay, 10) == (10, [])
        sr = bytes((0x80, 200, 0, 6)) + SSRC.to_bytes(4, "big") + bytes(20)
        caller.rtp.sendto(sr, relay)
        caller.rtp.settimeout(3)
        assert caller.rtp.recvfrom(2048) == (sr, relay)

        # hold: sendonly out, recvonly back, through the relay's same port
        held = caller.reinvite(caller.body(caller.rtp_port, "sendonly", 2))
        assert held.status == 200 and "a=recvonly" in held.body.decode()
        assert relay_address(held) == relay

        # resume from a new RTP socket (a new media address mid-call): audio follows it
        moved = udp_socket()
        sockets.append(moved)
        resumed = caller.reinvite(caller.body(moved.getsockname()[1], "sendrecv", 3))
        assert resumed.status == 200 and "a=sendrecv" in resumed.body.decode()
        assert relay_address(resumed) == relay
        assert caller.echo_from(moved, relay, 10) == (10, [])

        if builtin:   # rtpengine follows its own latching policy
            check_roaming_and_strays(caller, relay, sockets, metrics_port)
        assert caller.bye().status == 200
        callee.wait(20)
        assert callee.returncode == 0, callee.stdout.read().decode(errors="replace")[-2000:]
    finally:
        caller.close()
        stop_process(callee)
    offer = log.read_text(errors="replace")
    invite = offer[offer.index("INVITE sip:"):]
    assert "RTP/AVP 0 96 101" in invite and "a=rtpmap:96 opus/48000/2" in invite
    assert str(caller.rtp_port) not in invite.split("\n\n", 1)[0]
    assert recent_cdrs(svc, tail=1)[-1]["ended_by"] == "caller"
    if builtin:
        assert _ports_free(rtp_low, rtp_count)


def check_roaming_and_strays(caller: MediaCaller, relay: tuple[str, int],
                             sockets: list[socket.socket], metrics_port: int) -> None:
    """The built-in relay follows the stream to a new address, never a stray sender."""
    # roaming without a re-INVITE: the same stream from a third address
    roamed = udp_socket()
    sockets.append(roamed)
    for _ in range(3):
        roamed.sendto(caller.packet(), relay)
    assert caller.echo_from(roamed, relay, 10)[0] == 10

    # a stray sender with another SSRC reaches nobody
    stray = udp_socket()
    sockets.append(stray)
    for seq in range(5):
        stray.sendto(pack_header(0, seq, seq * 160, 0xBAD) + bytes(160), relay)
    count, strays = caller.echo_from(roamed, relay, 5)
    assert count == 5 and not any(RtpPacket.parse(d).ssrc == 0xBAD for d in strays)
    stray.settimeout(0.3)
    with pytest.raises(socket.timeout):
        stray.recvfrom(2048)

    metrics = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert metric_value(metrics, "b2bua_media_streams_active") == 1
    assert metric_value(metrics, "b2bua_media_packets_total") >= 2 * 36
    assert metric_value(metrics, "b2bua_media_relatches_total") == 1   # the roaming
    assert metric_value(metrics, "b2bua_media_latches_total") >= 3


def test_rtp_timeout_ends_a_dead_call_and_rtcp_crosses_on_port_plus_one(
        start_service: Any, sockets: list[socket.socket], engine: tuple[str, int, int]) -> None:
    media, rtp_low, rtp_count = engine
    echo_port, callee_port, metrics_port = free_window(4), free_port(), free_port()
    extra, routers = relay_config(media, callee_port, metrics_port, rtp_timeout=1.5)
    svc = start_service(extra, routers=routers)
    callee_rtcp = udp_socket(echo_port + 1)   # the callee's RTCP port (SDP port + 1)
    sockets.append(callee_rtcp)
    callee = start_sipp(sipp_args(svc.port, "phone_answer.xml", callee_port, "-mi",
                                  "127.0.0.1", "-mp", str(echo_port), "-rtp_echo")[1:])
    caller = MediaCaller(svc.port, PCMU_SDP)
    caller_rtcp = udp_socket(0)
    sockets.append(caller_rtcp)
    try:
        first = caller.invite()
        final = first if first.status >= 200 else caller.final()
        assert final.status == 200, svc.log()[-3000:]
        caller.ack(final)
        answered = time.monotonic()
        relay = relay_address(final)
        assert caller.echo_from(caller.rtp, relay, 3) == (3, [])
        # RTCP (not RTP: the watchdog is not fed) crosses on port + 1
        sr = bytes((0x80, 200, 0, 6)) + SSRC.to_bytes(4, "big") + bytes(20)
        caller_rtcp.sendto(sr, (relay[0], relay[1] + 1))
        callee_rtcp.settimeout(3)
        data, source = callee_rtcp.recvfrom(2048)
        assert data == sr and rtp_low <= source[1] < rtp_low + rtp_count
        # then silence: the service hangs up both legs
        bye = caller.wait_bye(timeout=10)
        assert bye.method == "BYE" and time.monotonic() - answered >= 1.5
        callee.wait(20)
        assert callee.returncode == 0, callee.stdout.read().decode(errors="replace")[-2000:]
    finally:
        caller.close()
        stop_process(callee)
    cdr = recent_cdrs(svc, tail=1)[-1]
    assert cdr["status"] == 200 and cdr["ended_by"] == "rtp-timeout", cdr
    metrics = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
    assert metric_value(metrics, "b2bua_media_timeouts_total") == 1
    if "rtpengine" not in media:
        assert _ports_free(rtp_low, rtp_count)
