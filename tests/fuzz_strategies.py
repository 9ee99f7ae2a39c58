"""Hypothesis strategies that build whole SIP requests, header by header, and
then spoil them: each header value is either right, right with a few
characters changed, or junk (any text, bytes that are not UTF-8); a header may
be missing or repeated; finally bytes of the message may be flipped, cut,
inserted or whole lines dropped or doubled.
"""

from __future__ import annotations

from hypothesis import strategies as st

ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
SPECIAL = ';:@<>"\\,=/?&%[]() \t*+.-_~!\'`'
# any character, lone surrogates only as the parser makes them (bytes 0x80-0xff not UTF-8)
ANY_CHAR = st.one_of(
    st.characters(blacklist_categories=("Cs",)),
    st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF),
    st.sampled_from(list(SPECIAL)))
JUNK = st.text(ANY_CHAR, max_size=40)
TOKEN = st.text(ALNUM + "-.!%*_+`'~", min_size=1, max_size=12)


def encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


@st.composite
def spoiled(draw: st.DrawFn, good: str) -> str:
    """``good``, or ``good`` with a few characters changed, or junk."""
    kind = draw(st.sampled_from(["good", "good", "good", "edit", "junk"]))
    if kind == "good":
        return good
    if kind == "junk":
        return draw(JUNK)
    text = list(good)
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "replace", "delete"]))
        char = draw(ANY_CHAR)
        if op == "insert" or not text:
            text.insert(pos, char)
        elif op == "replace":
            text[min(pos, len(text) - 1)] = char
        else:
            del text[min(pos, len(text) - 1)]
    return "".join(text)


def host_port(draw: st.DrawFn) -> str:
    return draw(st.sampled_from(["192.0.2.7:5062", "192.0.2.7", "[2001:db8::7]:5062",
                                 "phone.example.com", "10.0.0.1:1"]))


@st.composite
def contact_value(draw: st.DrawFn, user: str) -> str:
    params = draw(st.lists(st.sampled_from([
        "expires=%d" % draw(st.sampled_from([0, 1, 59, 60, 3600, 2**31, 10**12])),
        "q=%s" % draw(st.sampled_from(["0.5", "1", "1.0000", "2", "-1", "x"])),
        '+sip.instance="<urn:uuid:%s>"' % draw(TOKEN),
        "reg-id=%s" % draw(st.sampled_from(["1", "0", "x", "99999999999999999999"])),
        "+sip.pnsreg",
    ]), max_size=3, unique=True))
    uri_params = draw(st.lists(st.sampled_from([
        "transport=%s" % draw(st.sampled_from(["udp", "tcp", "tls", "sctp", "x"])),
        "pn-provider=%s" % draw(st.sampled_from(["apns", "fcm", "webpush", "", "APNS"])),
        "pn-param=%s" % draw(st.sampled_from(["ABCDE.com.example.app", "project-1", "x", ""])),
        "pn-prid=%s" % draw(st.sampled_from(["00fc13adff78512", "tok%3Aen", "null", ""])),
        "ob", "lr", "rinstance=%s" % draw(TOKEN),
    ]), max_size=4, unique=True))
    uri = "sip:%s@%s" % (user, host_port(draw)) + "".join(";" + p for p in uri_params)
    star = draw(st.integers(0, 20)) == 0
    return "*" if star else "<%s>" % uri + "".join(";" + p for p in params)


@st.composite
def digest_value(draw: st.DrawFn, user: str, nonce: str, response: str, uri: str) -> str:
    params = {
        "username": '"%s"' % draw(spoiled(user)),
        "realm": '"%s"' % draw(spoiled("sip.example.com")),
        "nonce": '"%s"' % draw(spoiled(nonce)),
        "uri": '"%s"' % draw(spoiled(uri)),
        "response": '"%s"' % draw(spoiled(response)),
        "algorithm": draw(spoiled("MD5")),
        "cnonce": '"%s"' % draw(spoiled("0a4f113b")),
        "qop": draw(spoiled("auth")),
        "nc": draw(spoiled("00000001")),
        "opaque": '"%s"' % draw(spoiled("")),
    }
    names = draw(st.lists(st.sampled_from(sorted(params)), unique=True,
                          min_size=max(0, len(params) - draw(st.integers(0, 3)))))
    if draw(st.booleans()):
        names = sorted(params)   # often complete, so the checks past parsing are reached
    scheme = draw(spoiled("Digest"))
    return scheme + " " + ", ".join("%s=%s" % (n, params[n]) for n in names)


SDP = ("v=0\r\no=- 1 1 IN IP4 198.51.100.10\r\ns=-\r\nc=IN IP4 198.51.100.10\r\nt=0 0\r\n"
       "m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 "
       "telephone-event/8000\r\na=sendrecv\r\n")


@st.composite
def sdp_body(draw: st.DrawFn) -> bytes:
    lines = SDP.split("\r\n")[:-1]
    lines = [draw(spoiled(line)) for line in lines]
    if draw(st.booleans()):
        lines = draw(st.permutations(lines))
    extra = draw(st.lists(st.sampled_from([
        "m=video 0 RTP/AVP 31", "a=rtcp:4001", "c=IN IP6 ::1", "m=audio 99999 RTP/AVP 0",
        "m=audio 4000 RTP/SAVP 0", "a=inactive", "b=AS:64", "m=", "a=rtpmap:8 PCMA/8000",
    ]), max_size=3))
    return encode("\r\n".join([*lines, *extra]) + "\r\n")


@st.composite
def request_lines(draw: st.DrawFn, method: str, ruri: str, user: str, *,
                  call_id: str, cseq: int, branch: str, from_tag: str,
                  to_tag: str | None = None,
                  authorization: tuple[str, str] | None = None) -> list[tuple[str, str]]:
    """The headers of a request, each maybe spoiled, missing or doubled."""
    to = "<sip:%s@sip.example.com>" % user + (";tag=" + to_tag if to_tag else "")
    headers = [
        ("Via", "SIP/2.0/UDP 192.0.2.7:5062;branch=%s;rport" % branch),
        ("From", "<sip:%s@sip.example.com>;tag=%s" % (user, from_tag)),
        ("To", to),
        ("Call-ID", call_id),
        ("CSeq", "%d %s" % (cseq, method)),
        ("Max-Forwards", draw(st.sampled_from(["70", "0", "1", "256", "-1"]))),
        ("Contact", draw(contact_value(user))),
        ("User-Agent", "FuzzPhone/1.0"),
    ]
    optional = [
        ("Expires", draw(st.sampled_from(["3600", "0", "59", "4294967296", "x", ""]))),
        ("X-MPUSH", draw(st.sampled_from([
            "i:com.example.app:c-10-ap_Kt0:G7SThkASJx2K4Rm1033iR0mIgzI1cLg5xxpST4cjrd",
            "a:com.example.app:fcm-token-1", "i:com.example.app:null", "z:pkg:tok", "i::",
            "i", ""]))),
        ("Path", "<sip:edge.example.com;lr>"),
        ("Supported", draw(st.sampled_from(["path", "outbound, gruu", "100rel, timer"]))),
        ("Require", draw(st.sampled_from(["path", "100rel", "foo"]))),
        ("Route", "<sip:127.0.0.1;lr>"),
        ("Record-Route", "<sip:proxy.example.com;lr>"),
        ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS"),
        ("P-Asserted-Identity", "<sip:+4930123@198.51.100.10>"),
        ("Subject", "hi"),
        ("Timestamp", "54"),
        ("Session-Expires", "1800;refresher=uac"),
        ("Accept", "application/sdp"),
    ]
    headers += draw(st.lists(st.sampled_from(optional), max_size=5, unique_by=lambda h: h[0]))
    if authorization is not None:
        headers.append(authorization)
    out: list[tuple[str, str]] = []
    for name, value in headers:
        fate = draw(st.integers(0, 40))
        if fate == 0:
            continue                                    # missing
        value = draw(spoiled(value))
        out.append((draw(spoiled(name)) if fate == 1 else name, value))
        if fate == 2:
            out.append((name, draw(spoiled(value))))    # doubled
    if draw(st.booleans()):
        out = draw(st.permutations(out))
    return out


def render(start: str, headers: list[tuple[str, str]], body: bytes = b"",
           content_type: str | None = None) -> bytes:
    lines = [start, *("%s: %s" % (name, value) for name, value in headers)]
    if body and content_type:
        lines.append("Content-Type: " + content_type)
    lines.append("Content-Length: %d" % len(body))
    return encode("\r\n".join(lines) + "\r\n\r\n") + body


@st.composite
def damaged(draw: st.DrawFn, data: bytes) -> bytes:
    """``data``, mostly as it is, else with bytes or lines changed."""
    if draw(st.integers(0, 3)) != 0:
        return data
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "line", "lf"]))
        pos = draw(st.integers(0, max(0, len(out) - 1)))
        if op == "flip" and out:
            out[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            out[pos:pos] = draw(st.binary(min_size=1, max_size=6))
        elif op == "delete":
            del out[pos:pos + draw(st.integers(1, 12))]
        elif op == "truncate":
            del out[pos:]
        elif op == "line":
            lines = bytes(out).split(b"\r\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines[i:i + 1] = [] if draw(st.booleans()) else [lines[i], lines[i]]
            out = bytearray(b"\r\n".join(lines))
        else:
            out = bytearray(bytes(out).replace(b"\r\n", b"\n", draw(st.integers(1, 5))))
    return bytes(out)
