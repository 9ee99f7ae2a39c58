"""b2bua.reload.Reloader without a process: all or nothing, running calls keep theirs."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from twisted.logger import capturedLogs

from b2bua.calls.context import CallServices, CallSettings
from b2bua.config import load_config
from b2bua.reload import Reloader, ReloadParts

OLD = '[[trunk]]\nname = "a"\nuri = "sip:192.0.2.1"\nregister = true\nusername = "u"\n'


class Holder:
    def __init__(self) -> None:
        self.chain: Any = "old chain"

    def swap(self, chain: Any) -> None:
        self.chain = chain


class Registration:
    def __init__(self, trunk: Any) -> None:
        self.trunk = trunk
        self.stopped = False

    def disownServiceParent(self) -> None:
        self.stopped = True


def setup(tmp_path: Path, fail: str | None = None) -> tuple[Any, Holder, Path]:
    path = tmp_path / "b2bua.toml"
    path.write_text(OLD)
    config = load_config(path, environ={})
    services = CallServices(layer=None, clock=None, reactor=None, events=None,  # type: ignore[arg-type]
                            list_bindings=lambda aor: [], aor_for=str, flow_for=lambda b: None,
                            contact_for=str, settings=CallSettings(ring_timeout=120))
    calls = SimpleNamespace(trunks=list(config.trunks), _trunk_of={"192.0.2.1": "a"},
                            caller_id="old policy", services=services)
    status = SimpleNamespace(trunks={}, registrations={"a": Registration(config.trunks[0])})
    root = SimpleNamespace(config=config, calls=calls, network=SimpleNamespace(
        client_tls_options="old tls"), trunk_status=status)

    def build(name: str, value: Any) -> Any:
        def make(new: Any) -> Any:
            if name == fail:
                raise ValueError(f"router[0]: {name} is broken")
            return value(new) if callable(value) else value
        return make
    holder = Holder()
    root.reloader = Reloader(root, holder, ReloadParts(
        chain=build("chain", "new chain"), client_tls=build("tls", "new tls"),
        caller_id=build("caller_id", "new policy"),
        call_settings=lambda new: CallSettings(ring_timeout=new.calls.ring_timeout),
        trunk_credentials=lambda new: {"b": "creds"}, create_users=lambda new: None,
        registration=Registration))
    return root, holder, path


def test_everything_swaps_and_a_running_call_keeps_its_services(tmp_path: Path) -> None:
    root, holder, path = setup(tmp_path)
    running_call_services = root.calls.services
    old_registration = root.trunk_status.registrations["a"]
    path.write_text(OLD.replace('name = "a"', 'name = "a2"')
                    + '[[trunk]]\nname = "b"\nuri = "sip:192.0.2.2"\n[calls]\nring_timeout = 30\n')
    with capturedLogs():
        assert root.reloader.reload() is True
    assert holder.chain == "new chain" and root.network.client_tls_options == "new tls"
    assert [t.name for t in root.calls.trunks] == ["a2", "b"] and root.calls._trunk_of == {}
    assert root.calls.caller_id == "new policy"
    assert root.calls.services.settings.ring_timeout == 30
    assert root.calls.services.trunk_credentials == {"b": "creds"}
    assert running_call_services.settings.ring_timeout == 120        # the old call's own
    assert set(root.trunk_status.registrations) == {"a2"}            # a removed, a2 started
    assert old_registration.stopped
    assert root.config.trunks[1].name == "b"


def test_a_fault_anywhere_changes_nothing(tmp_path: Path) -> None:
    root, holder, path = setup(tmp_path, fail="tls")
    before = (root.config, root.calls.trunks, root.calls.services)
    path.write_text(OLD + '[[trunk]]\nname = "b"\nuri = "sip:192.0.2.2"\n')
    with capturedLogs() as events:
        assert root.reloader.reload() is False
    assert "router[0]: tls is broken" in str([e.get("error") for e in events])
    assert holder.chain == "old chain" and root.network.client_tls_options == "old tls"
    assert (root.config, root.calls.trunks, root.calls.services) == before
    assert not root.trunk_status.registrations["a"].stopped


def test_a_bad_key_is_named_and_refused(tmp_path: Path) -> None:
    root, holder, path = setup(tmp_path)
    path.write_text(OLD + "[push]\nringback = \"999\"\n")
    with capturedLogs() as events:
        assert root.reloader.reload() is False
    assert any("push.ringback" in str(e.get("error")) for e in events)
    assert holder.chain == "old chain"
