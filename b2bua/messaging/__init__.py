"""Text messages (RFC 3428 MESSAGE): relayed to phones, kept for sleeping ones."""

from b2bua.messaging.legs import MessageLeg, MessageText
from b2bua.messaging.mailbox import Mailbox, MailboxFull, MailboxLimits
from b2bua.messaging.relay import MessageRelay

__all__ = ["Mailbox", "MailboxFull", "MailboxLimits", "MessageLeg", "MessageRelay", "MessageText"]
