"""Push wake-up: pushes to sleeping phones (APNs and FCM, both over HTTP/2).

The call layer holds an :class:`IPushNotifier` (a :class:`PushNotifierRegistry`) and reads a
:class:`PushOutcome` for every push; nothing here raises towards a call.
"""

from b2bua.push.apns_client import ApnsClient, ApnsStats
from b2bua.push.apns_endpoint import ApnsEndpoint, ApnsTimings
from b2bua.push.apns_connection import ConnectionState
from b2bua.push.jwt_token import ProviderToken
from b2bua.push.h2_push import H2PushClient, PushStats
from b2bua.push.notifier import (
    ApnsNotifier,
    IPushNotifier,
    PushNotifierRegistry,
    PushTarget,
    apns_client_from_settings,
    canonical_provider,
    diagnostic_call_facts,
)
from b2bua.push.outcome import OutcomeKind, PushConfigError, PushOutcome, redact_token
from b2bua.push.payload import MAX_VOIP_PAYLOAD, CallFacts, PushKind, apns_voip_topic, build_voip_push
from b2bua.push.fcm_client import FcmClient
from b2bua.push.fcm_notifier import FcmNotifier, fcm_call_data, fcm_client_from_settings

__all__ = [
    "ApnsClient", "ApnsEndpoint", "ApnsNotifier", "ApnsStats", "ApnsTimings", "CallFacts",
    "ConnectionState", "FcmClient", "FcmNotifier", "H2PushClient", "IPushNotifier", "PushStats",
    "MAX_VOIP_PAYLOAD", "OutcomeKind", "ProviderToken",
    "PushConfigError", "PushKind", "PushNotifierRegistry", "PushOutcome", "PushTarget",
    "apns_client_from_settings", "apns_voip_topic", "build_voip_push", "canonical_provider",
    "diagnostic_call_facts", "fcm_call_data", "fcm_client_from_settings", "redact_token",
]
