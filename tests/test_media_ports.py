"""Even-port allocation, release order, exhaustion and busy ports."""

from __future__ import annotations

import pytest
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol

from b2bua.media.ports import PortAllocator, PortsExhausted


def test_even_ports_with_room_for_rtcp() -> None:
    ports = PortAllocator(20001, 20010)
    taken = [ports.allocate() for _ in range(ports.capacity)]
    assert taken == [20002, 20004, 20006, 20008]  # 20010 would need 20011 for RTCP
    with pytest.raises(PortsExhausted) as info:
        ports.allocate()
    assert info.value.status == 503


def test_released_ports_come_back_last() -> None:
    ports = PortAllocator(20000, 20007)
    first = ports.allocate()
    ports.release(first)
    assert [ports.allocate() for _ in range(4)] == [20002, 20004, 20006, 20000]
    assert ports.available == 0


def test_releasing_an_unallocated_port_is_a_bug() -> None:
    ports = PortAllocator(20000, 20007)
    with pytest.raises(ValueError):
        ports.release(20000)


@pytest.mark.parametrize("low,high", [(20000, 20000), (80, 200), (60000, 70000), (5, 3)])
def test_bad_ranges(low: int, high: int) -> None:
    with pytest.raises(ValueError):
        PortAllocator(low, high)


class BusyReactor:
    """listenUDP fails for ports another program holds."""

    def __init__(self, busy: set[int]) -> None:
        self.busy = busy
        self.bound: list[int] = []

    def listenUDP(self, port: int, protocol: DatagramProtocol, interface: str = "",
                  maxPacketSize: int = 8192) -> object:
        if port in self.busy:
            error = OSError("in use")
            raise CannotListenError(interface, port, error)  # type: ignore[no-untyped-call]
        self.bound.append(port)
        return object()


def test_listen_skips_busy_ports() -> None:
    ports = PortAllocator(20000, 20007)
    reactor = BusyReactor({20000, 20002})
    ports.listen(reactor, DatagramProtocol())  # type: ignore[arg-type]
    assert reactor.bound == [20004]
    assert ports.available == 3  # busy ones went back to the queue


def test_listen_when_everything_is_busy() -> None:
    ports = PortAllocator(20000, 20003)
    with pytest.raises(PortsExhausted):
        ports.listen(BusyReactor({20000, 20002}), DatagramProtocol())  # type: ignore[arg-type]
    assert ports.available == 2
