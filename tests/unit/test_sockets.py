"""harness/sockets.py: a taken port is seen by address, by name and over IPv6; a host that does
not resolve is not a taken port (run's check then leaves the verdict to the bind)."""

from __future__ import annotations

import socket

import pytest

from harness.sockets import free_port, port_in_use


@pytest.mark.parametrize(
    ("family", "bound", "asked"),
    [
        (socket.AF_INET, "127.0.0.1", "127.0.0.1"),
        (socket.AF_INET, "127.0.0.1", "localhost"),
        (socket.AF_INET6, "::1", "::1"),
    ],
)
def test_a_listening_port_is_in_use_and_a_closed_one_is_not(
    family: socket.AddressFamily, bound: str, asked: str
) -> None:
    if family == socket.AF_INET6 and not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    with socket.socket(family) as listener:
        try:
            listener.bind((bound, 0))
        except OSError:
            pytest.skip(f"cannot bind {bound} here")
        listener.listen()
        port = listener.getsockname()[1]
        assert port_in_use(asked, port)
    assert not port_in_use(asked, port)


def test_a_host_that_does_not_resolve_is_not_a_taken_port() -> None:
    assert not port_in_use("no-such-host.invalid", free_port())
