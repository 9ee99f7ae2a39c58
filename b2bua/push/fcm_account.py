"""The Google service-account JSON key that authorises FCM pushes, read and checked.

Errors name the config key (`[fcm] service_account`) and the field of the file that is wrong,
never the private key.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from b2bua.push.outcome import PushConfigError

__all__ = ["ServiceAccount", "load_service_account", "read_service_account"]

_PROJECT_ID = re.compile(r"^[a-z][a-z0-9-]{4,61}[a-z0-9]$")
_KEY = "[fcm] service_account"


@dataclass(frozen=True)
class ServiceAccount:
    project_id: str
    client_email: str
    token_uri: str
    private_key_id: str
    private_key: rsa.RSAPrivateKey = field(repr=False)


def read_service_account(where: Path, value: str) -> ServiceAccount:
    """The key of `value`: a file path (relative to `where`) or the JSON text itself (e.g.
    from `${ENV}`)."""
    if not value.strip():
        raise PushConfigError("%s is required when [fcm] is enabled" % _KEY)
    if value.lstrip().startswith("{"):
        return load_service_account(value.encode("utf-8"), "the JSON given inline")
    path = where / value
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PushConfigError("%s: cannot read %s (%s)" % (_KEY, path, exc.strerror)) from None
    return load_service_account(data, str(path))


def load_service_account(data: bytes, name: str) -> ServiceAccount:
    """Check the fields FCM needs; raise PushConfigError naming the first bad one."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise PushConfigError("%s: %s is not JSON (download the key from the Firebase console)"
                              % (_KEY, name)) from None
    if not isinstance(document, dict):
        raise PushConfigError("%s: %s is not a JSON object" % (_KEY, name))

    def text(field_name: str) -> str:
        item = document.get(field_name)
        if not isinstance(item, str) or not item.strip():
            raise PushConfigError("%s: %s: field %r is missing or empty" % (_KEY, name, field_name))
        return item.strip()

    if document.get("type", "service_account") != "service_account":
        raise PushConfigError("%s: %s: field 'type' must be \"service_account\"" % (_KEY, name))
    project_id = text("project_id")
    if not _PROJECT_ID.match(project_id):
        raise PushConfigError("%s: %s: field 'project_id' is not a Firebase project id" % (_KEY, name))
    client_email = text("client_email")
    if "@" not in client_email:
        raise PushConfigError("%s: %s: field 'client_email' is not an e-mail address" % (_KEY, name))
    token_uri = text("token_uri")
    url = urlsplit(token_uri)
    if url.scheme != "https" or not url.hostname:
        raise PushConfigError("%s: %s: field 'token_uri' must be an https URL" % (_KEY, name))
    try:
        key = load_pem_private_key(text("private_key").encode("ascii", "replace"), password=None)
    except (ValueError, TypeError):
        raise PushConfigError("%s: %s: field 'private_key' is not a readable unencrypted PEM private key"
                              % (_KEY, name)) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise PushConfigError("%s: %s: field 'private_key' must be an RSA key (RS256)" % (_KEY, name))
    key_id = document.get("private_key_id", "")
    return ServiceAccount(project_id, client_email, token_uri, key_id if isinstance(key_id, str) else "", key)
