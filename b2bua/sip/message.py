"""SIP messages: one import for the header block, the messages, the parser and the builders.

The code lives in :mod:`~b2bua.sip.header_fields` (``Headers``),
:mod:`~b2bua.sip.messages` (``Message``, ``Request``, ``Response``),
:mod:`~b2bua.sip.parser` (``parse_message``) and :mod:`~b2bua.sip.builders`
(``make_response`` and the generators); this module re-exports them.
"""

from __future__ import annotations

from b2bua.sip.builders import (
    error_response, generate_branch, generate_call_id, generate_tag, make_response, stateless_tag,
)
from b2bua.sip.header_fields import Headers
from b2bua.sip.messages import REASON_PHRASES, LingeringRequest, Message, Request, Response
from b2bua.sip.parser import _split_any, _split_crlf, parse_message

__all__ = [
    "Address", "Headers", "LingeringRequest", "Message", "Request", "Response", "parse_message",
    "make_response", "generate_branch", "generate_tag", "generate_call_id", "error_response",
    "REASON_PHRASES", "stateless_tag", "_split_any", "_split_crlf",
]

Address = tuple[str, int]
