"""harness/sockets.py: a taken port is seen by address, by name and over IPv6; a host that does
not resolve is not a taken port (run's check then leaves the verdict to the bind); a free port is
chosen below the kernel's ephemeral range, never a taken one, and by the kernel where the range
is unknown."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from harness import sockets
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


def test_a_free_port_lies_below_the_ephemeral_range_where_clients_take_theirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ephemeral = tmp_path / "ip_local_port_range"
    ephemeral.write_text("40000\t60999\n")
    monkeypatch.setattr(sockets, "EPHEMERAL_RANGE", ephemeral)
    ports = [free_port() for _ in range(50)]
    assert all(sockets.LOWEST <= port < 40000 for port in ports)
    assert len(set(ports)) == 50  # never the same port twice


def test_a_taken_port_and_one_handed_out_before_are_passed_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sockets, "_given", {20001})
    with socket.socket() as taken:
        try:
            taken.bind(("127.0.0.1", 20000))
        except OSError:
            pytest.skip("port 20000 is taken here")
        taken.listen()
        tries = iter([20000, 20001, 20000, 20001, 20002])
        monkeypatch.setattr(sockets.random, "randrange", lambda low, high: next(tries))
        assert free_port() == 20002
        assert 20002 in sockets._given


def test_without_the_range_the_kernel_chooses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sockets, "EPHEMERAL_RANGE", tmp_path / "missing")
    port = free_port()
    low, high = (int(p) for p in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    assert low <= port <= high
