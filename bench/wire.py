"""Latency as the wire saw it: tcpdump on the loopback interface during a JMeter run, each
request's time from its first byte sent to the server to the first byte of its answer sent back
(`BENCH_JMETER_WIRE=1`, bench/jmeter.py).

JMeter's elapsed time runs from before its thread writes a request to after the thread has read
the answer, so it also holds the time a thread waits for a core on either side. On 2 cores shared
by 500 JMeter threads, the service and PostgreSQL, that wait can be the larger part of a slow
sample (docs/performance.md, twentieth set). A packet's time stamp is taken when it is sent, so the
time between a request's first packet and its answer's first packet is the server's share: the
kernel's delivery, granian, the handler, the database; nothing of the client's.

On Linux, loopback captures each packet once, when it is sent. JMeter keeps one connection per
thread and sends a request only once the last one is answered, so per client port the requests
come one at a time, and a thread's first requests (the warm-up) are its connection's first ones.
tcpdump reads the capture back (`-q`: one line a packet); only packets that carry data are
captured (the filter below), so pure ACKs cost the capture nothing.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

# TCP segments that carry data: IP total length minus the IP and TCP headers, not 0. IPv4: the
# bench's servers listen on 127.0.0.1.
WITH_DATA = "(((ip[2:2] - ((ip[0]&0xf)<<2)) - ((tcp[12]&0xf0)>>2)) != 0)"
OVER_MS = 100.0  # the figures count requests slower than this
HANDOVER_SECONDS = 1.5


def _found() -> str | None:
    return shutil.which("tcpdump", path="/usr/bin:/usr/sbin:/bin:/sbin")


def missing() -> bool:
    """tcpdump is not installed (`just bench-jmeter` installs it when BENCH_JMETER_WIRE=1)."""
    return _found() is None


def _tcpdump() -> str:
    found = _found()
    if found is None:
        raise RuntimeError("BENCH_JMETER_WIRE=1 needs tcpdump: `just bench-jmeter` installs it")
    return found


class Capture:
    """tcpdump on `lo` for one server port, writing `path` until the block ends; `dropped`: the
    packets the kernel dropped (then the pairing below may be wrong, and the figures say so)."""

    def __init__(self, path: Path, port: int, interface: str = "lo") -> None:
        self.path = path
        self.port = port
        self.interface = interface
        self.dropped: int | None = None
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> Capture:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # As root, tcpdump would write the file as the user `tcpdump` (Debian), who may not
        # write here: it keeps root's rights instead.
        keep = ["-Z", "root"] if os.geteuid() == 0 else []
        # 96 bytes a packet: its Ethernet, IP and TCP headers; the data is not kept.
        self._process = subprocess.Popen(
            [_tcpdump(), "-i", self.interface, "-n", "-s", "96", "-B", "65536", *keep, "-w",
             str(self.path), f"tcp port {self.port} and {WITH_DATA}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self._process.stderr is not None
        first = self._process.stderr.readline()  # "listening on lo, ...": capturing from now on
        if "listening" not in first:
            self._process.kill()
            raise RuntimeError(f"tcpdump did not start: {first.strip()}")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._process is not None
        # The kernel hands packets to tcpdump in blocks, a block at the latest a second after
        # its first packet (libpcap's timeout); what it still holds when tcpdump stops is lost.
        time.sleep(HANDOVER_SECONDS)
        self._process.send_signal(signal.SIGINT)  # flushes the file, prints its counts
        _, err = self._process.communicate(timeout=30)
        found = re.search(r"(\d+) packets dropped by kernel", err)
        self.dropped = int(found.group(1)) if found else None

    def lines(self) -> list[str]:
        done = subprocess.run(
            [_tcpdump(), "-r", str(self.path), "-n", "-tt", "-q"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        return done.stdout.splitlines()


def residences(lines: Iterable[str], port: int) -> dict[int, list[float]]:
    """Per client port, in order, each request's time (ms) from its first packet to the first
    packet of the answer, from tcpdump's `-n -tt -q` lines of a capture of packets with data
    (`<epoch> IP <client>.<port> > <server>.<port>: tcp <length>`). A request's later packets and
    an answer's later packets are not a request of their own."""
    sent: dict[int, float] = {}  # client port -> when its unanswered request's first byte went
    found: dict[int, list[float]] = {}
    for line in lines:
        parts = line.split()
        if len(parts) < 7 or parts[1] not in ("IP", "IP6") or parts[5] != "tcp":
            continue
        if int(parts[6]) == 0:
            continue
        at = float(parts[0])
        source = int(parts[2].rsplit(".", 1)[1])
        target = int(parts[4].rstrip(":").rsplit(".", 1)[1])
        if target == port:
            sent.setdefault(source, at)
        elif source == port and target in sent:
            found.setdefault(target, []).append((at - sent.pop(target)) * 1000)
    return found


def figures(values_ms: Sequence[float]) -> dict[str, Any]:
    """Requests, p50, p99, p99.9, max (ms, nearest rank) and how many took over OVER_MS."""
    ordered = sorted(values_ms)
    if not ordered:
        return {"requests": 0}

    def rank(fraction: float) -> float:
        return round(ordered[max(0, math.ceil(fraction * len(ordered)) - 1)], 1)

    return {
        "requests": len(ordered),
        "p50_ms": rank(0.50),
        "p99_ms": rank(0.99),
        "p999_ms": rank(0.999),
        "max_ms": round(ordered[-1], 1),
        "over_100ms": sum(1 for value in ordered if value > OVER_MS),
    }


def measured(per_port: dict[int, list[float]], warmup_loops: int) -> list[float]:
    """The requests after each connection's first `warmup_loops` (each JMeter thread keeps one
    connection: its warm-up is its connection's first requests)."""
    return [value for values in per_port.values() for value in values[warmup_loops:]]
