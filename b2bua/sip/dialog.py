"""Dialogs (RFC 3261 §12): identity, route set, targets and CSeq spaces.

A :class:`Dialog` holds the state §12.1 lists and builds the requests sent
within it (§12.2.1.1); :class:`DialogSet` finds the dialog of an incoming
message, and raises :class:`DialogDoesNotExist` (481) when a request with a To
tag matches none, which the transaction layer turns into the response.

UAC side, the ACK for a 2xx is built by :meth:`Dialog.create_ack` and kept in
``dialog.ack``: a 2xx retransmitted after the INVITE transaction is gone
reaches the TU as a stray response, and the TU sends ``dialog.ack`` again.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Iterable, Iterator

from b2bua.sip.errors import SipError
from b2bua.sip.headers import NameAddr, tag_param
from b2bua.sip.message import Headers, Message, Request, Response
from b2bua.sip.uri import SipUri, Uri

__all__ = [
    "DialogId", "DialogState", "Dialog", "DialogSet", "DialogDoesNotExist", "OutOfOrder",
    "TARGET_REFRESH_METHODS", "tag_param",
]

#: requests whose Contact replaces the remote target (RFC 3261 §12.2, RFC 3311, 6665)
TARGET_REFRESH_METHODS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})


class DialogDoesNotExist(SipError):
    """An in-dialog request (To tag present) that matches no dialog (§12.2.2)."""

    status = 481
    reason = "Call/Transaction Does Not Exist"


class OutOfOrder(SipError):
    """CSeq lower than the remote sequence number (§12.2.2)."""

    status = 500
    reason = "CSeq Out Of Order"


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(frozen=True, slots=True)
class DialogId:
    """§12: Call-ID plus local and remote tag, as seen from our side."""

    call_id: str
    local_tag: str
    remote_tag: str

    @classmethod
    def of_request(cls, request: Request) -> DialogId:
        """The id an incoming request names: we are its To, the peer its From."""
        return cls(request.call_id, request.to.tag or "", request.from_.tag or "")

    @classmethod
    def of_response(cls, response: Response) -> DialogId:
        """The id a response to our request names: we are its From."""
        return cls(response.call_id, response.from_.tag or "", response.to.tag or "")


class Dialog:
    """One dialog, UAC or UAS side.

    ``local``/``remote`` are the From/To values we send (tags included), kept
    as header text (``local_text``/``remote_text``): that is all a request in
    the dialog needs, and a held call keeps two dialogs for its whole life
    (parsed name-addrs cost ~900 bytes each); ``route_set`` is in the order
    requests traverse it.
    """

    __slots__ = (
        "id", "state", "is_uac", "local_text", "remote_text", "local_seq", "remote_seq",
        "remote_target", "route_set", "secure", "local_contact", "ack",
    )

    def __init__(
        self, id: DialogId, *, is_uac: bool, local: NameAddr | str, remote: NameAddr | str,
        local_seq: int, remote_seq: int | None, remote_target: Uri,
        route_set: list[NameAddr], secure: bool, local_contact: str | None,
        state: DialogState,
    ) -> None:
        self.id = id
        self.state = state
        self.is_uac = is_uac
        self.local_text = str(local)
        self.remote_text = str(remote)
        self.local_seq = local_seq
        self.remote_seq = remote_seq
        self.remote_target = remote_target
        self.route_set = route_set
        self.secure = secure
        self.local_contact = local_contact
        """Our Contact value, put on target refresh requests we send."""
        self.ack: Request | None = None
        """UAC: the last ACK built for a 2xx, to resend on its retransmissions."""

    def __repr__(self) -> str:
        return "<Dialog %s %s>" % (self.id, self.state.name)

    @property
    def local(self) -> NameAddr:
        """Our From (UAC) / To (UAS) value, parsed on each access."""
        return NameAddr.parse(self.local_text)

    @property
    def remote(self) -> NameAddr:
        return NameAddr.parse(self.remote_text)

    # -- creation ---------------------------------------------------------------

    @classmethod
    def uac(cls, request: Request, response: Response) -> Dialog:
        """§12.1.2: from our request and a 1xx (with To tag) or 2xx to it."""
        to_tag = response.to.tag
        if to_tag is None or not 100 < response.status < 300:
            raise ValueError("only a 101-299 with a To tag creates a dialog")
        contacts, route = _readable(response, "contacts"), _readable(response, "record_route")
        local = request.headers.get("From") or ""
        return cls(
            DialogId(request.call_id, tag_param(local) or "", to_tag),
            is_uac=True,
            local=local,
            remote=response.headers.get("To") or "",
            local_seq=request.cseq.number,
            remote_seq=None,
            remote_target=contacts[0].uri if contacts else request.uri,
            route_set=list(reversed(route)),
            secure=_is_sips(request.uri),
            local_contact=request.headers.get("Contact"),
            state=DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY,
        )

    @classmethod
    def uas(cls, request: Request, response: Response) -> Dialog:
        """§12.1.1: from a request we received and our 1xx/2xx (with To tag)."""
        local = response.headers.get("To") or ""
        to_tag = tag_param(local)
        if to_tag is None or not 100 < response.status < 300:
            raise ValueError("only a 101-299 with a To tag creates a dialog")
        contacts = request.contacts
        return cls(
            DialogId(request.call_id, to_tag, request.from_.tag or ""),
            is_uac=False,
            local=local,
            remote=request.headers.get("From") or "",
            local_seq=0,
            remote_seq=request.cseq.number,
            remote_target=contacts[0].uri if contacts else request.uri,
            route_set=request.record_route,
            secure=_is_sips(request.uri),
            local_contact=response.headers.get("Contact"),
            state=DialogState.CONFIRMED if response.status >= 200 else DialogState.EARLY,
        )

    # -- updates ----------------------------------------------------------------

    def response_received(self, response: Response) -> None:
        """UAC: a response to a request we sent in this dialog (or its INVITE).

        A 2xx confirms an early dialog and recomputes its route set (§13.2.2.4);
        a 2xx to a target refresh replaces the remote target (§12.2.1.2).
        """
        if not 200 <= response.status < 300:
            return
        method = response.cseq.method
        if self.state is DialogState.EARLY and method == "INVITE":
            self.state = DialogState.CONFIRMED
            self.route_set = list(reversed(response.record_route))
        if method in TARGET_REFRESH_METHODS:
            self._refresh_target(response)

    def response_sent(self, response: Response) -> None:
        """UAS: our 2xx to the INVITE confirms the dialog."""
        if 200 <= response.status < 300 and response.cseq.method == "INVITE":
            if self.state is DialogState.EARLY:
                self.state = DialogState.CONFIRMED

    def request_received(self, request: Request) -> None:
        """§12.2.2: check and record the remote CSeq; refresh the target.

        Raises :class:`OutOfOrder` (500) for a CSeq below the last one. ACK and
        CANCEL carry the INVITE's number and are not checked.
        """
        if request.method in ("ACK", "CANCEL"):
            return
        number = request.cseq.number
        if self.remote_seq is not None and number < self.remote_seq:
            raise OutOfOrder()
        self.remote_seq = number
        if request.method == "BYE":
            self.state = DialogState.TERMINATED
        elif request.method in TARGET_REFRESH_METHODS:
            self._refresh_target(request)

    def terminate(self) -> None:
        self.state = DialogState.TERMINATED

    def _refresh_target(self, message: Message) -> None:
        contacts = message.contacts
        if contacts:
            self.remote_target = contacts[0].uri

    # -- requests within the dialog ------------------------------------------------

    @property
    def next_hop(self) -> Uri:
        """Where an in-dialog request goes first: the top route, else the target."""
        return self.route_set[0].uri if self.route_set else self.remote_target

    def create_request(
        self, method: str, *, body: bytes = b"", content_type: str | None = None,
        extra: Iterable[tuple[str, str]] = (), cseq: int | None = None,
    ) -> Request:
        """§12.2.1.1: a request within this dialog, without Via (the layer adds it).

        Takes the next local CSeq, except ACK, which needs the INVITE's
        (``cseq``; see :meth:`create_ack`). CANCEL is never built here: it
        belongs to the INVITE's transaction (``TransactionLayer.cancel``).
        """
        if method == "CANCEL":
            raise ValueError("CANCEL is built from the INVITE, not the dialog")
        if method == "ACK":
            if cseq is None:
                raise ValueError("ACK needs the CSeq number of its INVITE")
            number = cseq
        else:
            self.local_seq += 1
            number = self.local_seq
        uri, routes = self._request_uri_and_routes()
        fields = [("Route", str(route)) for route in routes]
        fields += [
            ("Max-Forwards", "70"),
            ("From", self.local_text),
            ("To", self.remote_text),
            ("Call-ID", self.id.call_id),
            ("CSeq", "%d %s" % (number, method)),
        ]
        if self.local_contact is not None and method in TARGET_REFRESH_METHODS:
            fields.append(("Contact", self.local_contact))
        fields += extra
        if body and content_type is not None:
            fields.append(("Content-Type", content_type))
        return Request(method, uri, Headers(fields), body)

    def create_ack(
        self, invite_cseq: int, *, body: bytes = b"", content_type: str | None = None,
        extra: Iterable[tuple[str, str]] = (), keep: bool = True,
    ) -> Request:
        """§13.2.2.4: the ACK for a 2xx, kept in ``self.ack`` for resending.

        ``keep=False`` when the INVITE transaction repeats it instead
        (``TransactionLayer.send_ack(..., tx=...)``): a held call then does not
        carry a whole ACK message for its lifetime.
        """
        ack = self.create_request(
            "ACK", body=body, content_type=content_type, extra=extra, cseq=invite_cseq)
        self.ack = ack if keep else None
        return ack

    def _request_uri_and_routes(self) -> tuple[Uri, list[NameAddr]]:
        routes = self.route_set
        if not routes or _loose(routes[0]):
            return self.remote_target, routes
        # strict router (§12.2.1.1): it gets the Request-URI, the target goes last
        first = routes[0].uri
        if isinstance(first, SipUri):
            first = first.with_(params={k: v for k, v in first.params.items()
                                        if k not in ("method", "maddr", "ttl", "transport", "lr")},
                                headers={})
        return first, routes[1:] + [NameAddr(self.remote_target)]

    def matches(self, message: Message) -> bool:
        """True when ``message`` (a request to us or a response to us) names this dialog."""
        if isinstance(message, Request):
            return DialogId.of_request(message) == self.id
        return DialogId.of_response(message) == self.id  # type: ignore[arg-type]


class DialogSet:
    """The live dialogs of one TU, by :class:`DialogId`."""

    __slots__ = ("_dialogs",)

    def __init__(self) -> None:
        self._dialogs: dict[DialogId, Dialog] = {}

    def add(self, dialog: Dialog) -> Dialog:
        self._dialogs[dialog.id] = dialog
        return dialog

    def remove(self, dialog: Dialog | DialogId) -> None:
        key = dialog.id if isinstance(dialog, Dialog) else dialog
        self._dialogs.pop(key, None)

    def get(self, dialog_id: DialogId) -> Dialog | None:
        return self._dialogs.get(dialog_id)

    def __len__(self) -> int:
        return len(self._dialogs)

    def __iter__(self) -> Iterator[Dialog]:
        return iter(list(self._dialogs.values()))

    def __contains__(self, dialog_id: object) -> bool:
        return dialog_id in self._dialogs

    def for_request(self, request: Request) -> Dialog | None:
        """The dialog an incoming request belongs to, if any."""
        if request.to.tag is None:
            return None
        return self._dialogs.get(DialogId.of_request(request))

    def for_response(self, response: Response) -> Dialog | None:
        """The dialog (ours as UAC) a response belongs to, if any."""
        return self._dialogs.get(DialogId.of_response(response))

    def request_received(self, request: Request) -> Dialog:
        """Route an in-dialog request (To tag present) to its dialog, §12.2.2.

        Raises :class:`DialogDoesNotExist` (481) or :class:`OutOfOrder` (500);
        raised inside ``tu.request_received`` the layer answers with it.
        """
        dialog = self.for_request(request)
        if dialog is None or dialog.state is DialogState.TERMINATED:
            raise DialogDoesNotExist()
        dialog.request_received(request)
        return dialog


def _loose(route: NameAddr) -> bool:
    uri = route.uri
    return not isinstance(uri, SipUri) or "lr" in uri.params


def _is_sips(uri: Uri) -> bool:
    return isinstance(uri, SipUri) and uri.scheme == "sips"


def _readable(response: Response, attribute: str) -> list[NameAddr]:
    """A peer's Contact or Record-Route, or none when it cannot be read: the
    dialog then targets the Request-URI we sent to, which reached that peer
    (an exception here ended the whole call with a 500)."""
    try:
        values: list[NameAddr] = getattr(response, attribute)
    except SipError:
        return []
    return values
