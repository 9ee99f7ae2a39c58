"""REGISTER end to end: SIPp as the phone, the service started as users start it.

SIPp answers the 401 itself (``[authentication ...]``) and sends ``X-MPUSH`` on
every REGISTER; ``b2bua-admin bindings`` is what an operator would look at.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fake_apns import make_pki
from tests.support import SCENARIOS, RunningService, free_port, require_sipp, run_sipp

TOKEN = "c-10-ap_Kt0:G7SThkASJx2K4Rm1033iR0mIgzI1cLg5xxpST4cjrd"
USERS = """
[[users]]
name = "1111"
password = "secret"

[[users]]
name = "2222"
password = "other-secret"
"""

Start = Callable[..., RunningService]


@pytest.fixture
def with_apns(tmp_path: Path) -> str:
    """USERS plus an enabled [apns]: X-MPUSH "i" tokens are bound only for an enabled provider.
    No push is sent here; the endpoint is a closed port."""
    pki = make_pki(tmp_path / "pki")
    return USERS + (f'\n[apns]\nenabled = true\nkey_file = "{pki.key_file}"\nkey_id = "{pki.key_id}"\n'
                    f'team_id = "{pki.team_id}"\nendpoint = "https://127.0.0.1:{free_port()}"\n'
                    f'ca_file = "{pki.ca_file}"\n')


@pytest.fixture(autouse=True)
def _sipp() -> None:
    require_sipp()


def sipp(svc: RunningService, scenario: str, *args: str, transport: str = "u1",
         port: int | None = None) -> subprocess.CompletedProcess:
    """Run one call of ``scenario`` against ``svc`` from ``port``; bounded in time."""
    port = port or free_port()
    return run_sipp(["-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", "-p", str(port),
                     "-t", transport, "-m", "1", "-nostdin", "-timeout", "20",
                     "-timeout_error", "-recv_timeout", "10000", *args,
                     f"127.0.0.1:{svc.port}"], timeout=60, cwd=svc.workdir)


def assert_passed(result: subprocess.CompletedProcess, svc: RunningService) -> None:
    assert result.returncode == 0, (
        f"sipp exited {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}\n"
        f"--- service log ---\n{svc.log()[-5000:]}")


def bindings(svc: RunningService, user: str | None = "1111") -> list[dict[str, Any]]:
    """``b2bua-admin bindings [USER] --json``, flattened."""
    result = svc.admin("bindings", *([user] if user else []), "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert isinstance(document, list), document
    return [flatten(item) for item in document]


def flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"push": {"token": x}}`` -> ``{"push_token": x, "token": x}``: lenient on layout."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = (prefix + key).lower().replace("-", "_")
        if isinstance(value, dict):
            out.update(flatten(value, name + "_"))
            out.update(flatten(value))
        else:
            out[name] = value
            out.setdefault(key.lower().replace("-", "_"), value)
    return out


def field(binding: dict[str, Any], *names: str) -> Any:
    for name in names:
        if name in binding:
            return binding[name]
    raise AssertionError(f"none of {names} in {sorted(binding)}")


def pushed(binding: dict[str, Any]) -> tuple[Any, Any, Any]:
    return (field(binding, "push_provider", "provider"),
            field(binding, "push_package", "package"),
            field(binding, "push_token", "token"))


def test_register_survives_sigkill_and_unregister_removes_it(start_service: Start, with_apns: str) -> None:
    svc = start_service(with_apns)
    phone = free_port()
    assert_passed(sipp(svc, "register_auth.xml", "-key", "expires", "3600", port=phone), svc)
    [binding] = bindings(svc)
    assert pushed(binding) == ("i", "com.example.softphone", TOKEN)

    svc.kill()
    svc.start()
    [binding] = bindings(svc)
    assert pushed(binding) == ("i", "com.example.softphone", TOKEN)

    assert_passed(sipp(svc, "register_auth.xml", "-key", "expires", "0", port=phone), svc)
    assert bindings(svc) == []


def test_register_over_tcp(start_service: Start, with_apns: str) -> None:
    svc = start_service(with_apns)
    assert_passed(sipp(svc, "register_auth.xml", "-key", "expires", "3600", transport="t1"), svc)
    [binding] = bindings(svc)
    assert pushed(binding) == ("i", "com.example.softphone", TOKEN)
    assert "transport=tcp" in str(field(binding, "contact")).lower()


def test_wrong_password_binds_nothing(start_service: Start) -> None:
    svc = start_service(USERS)
    result = sipp(svc, "register_rejected.xml", "-key", "aor", "1111", "-au", "1111",
                  "-ap", "not-the-password")
    assert_passed(result, svc)
    assert bindings(svc) == []


def test_unknown_user_binds_nothing(start_service: Start) -> None:
    svc = start_service(USERS)
    result = sipp(svc, "register_rejected.xml", "-key", "aor", "7777", "-au", "7777",
                  "-ap", "secret")
    assert_passed(result, svc)
    assert bindings(svc, None) == []


def test_another_users_aor_is_forbidden(start_service: Start) -> None:
    svc = start_service(USERS)
    assert_passed(sipp(svc, "register_forbidden.xml", "-key", "aor", "2222"), svc)
    assert bindings(svc, "2222") == []
    assert bindings(svc, "1111") == []
