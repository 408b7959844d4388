"""Loopback ports: a free one to give a server, and whether something already listens on one
(`python -m service run` checks PORT and EMBEDDED_PG_PORT with it before starting anything)."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (the kernel's choice); a race with other processes remains,
    so a server given it may still find it taken."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_in_use(host: str, port: int, timeout: float = 0.2) -> bool:
    """Something accepts TCP connections on host:port (a name, an IPv4 or an IPv6 address); a
    host that does not resolve or answer counts as free: binding it then says what is wrong."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
