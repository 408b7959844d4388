"""Loopback ports: a free one to give a server, and whether something already listens on one
(`python -m service run` checks PORT and EMBEDDED_PG_PORT with it before starting anything)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

# Where free_port() looks: below the kernel's ephemeral range, which the local ports of outgoing
# connections are taken from. A port from that range (the kernel's choice for bind(0)) can be
# taken by any client's connection between the choice and the server's bind - a cluster comes
# up over seconds while Patroni, etcd and psql connect - and the server then fails with "Address
# already in use". Below it only another server choosing the same port can race, which the
# random choice and the bind check make unlikely.
LOWEST = 10_000
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# The ports this process has handed out: a cluster asks for a dozen before any of its servers
# binds one, and a random choice must not give two of them the same port.
_given: set[int] = set()


def _ephemeral_low() -> int | None:
    """The first port of the kernel's ephemeral range (Linux), None where it cannot be read."""
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing uses now and this process has not handed out before, outside the kernel's
    ephemeral range where that is known (so no client connection takes it meanwhile); else the
    kernel's choice. Another process's server may still take it first, so a server given it may
    still find it taken."""
    low = _ephemeral_low()
    if low is not None and low - LOWEST >= 1_000:
        for _ in range(100):
            port = random.randrange(LOWEST, low)
            if port not in _given and _bindable(host, port):
                _given.add(port)
                return port
    with socket.socket() as sock:
        sock.bind((host, 0))
        chosen: int = sock.getsockname()[1]
    _given.add(chosen)
    return chosen


def port_in_use(host: str, port: int, timeout: float = 0.2) -> bool:
    """Something accepts TCP connections on host:port (a name, an IPv4 or an IPv6 address); a
    host that does not resolve or answer counts as free: binding it then says what is wrong."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
