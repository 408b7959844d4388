"""CPU seconds of a process group from /proc: a root process and all its descendants.

A group's figure is utime + stime + cutime + cstime summed over its live members: a member that
exits during a window (a worker restarted, a backend closed) still counts once its parent has
reaped it, as the kernel adds a reaped child's times to the parent's cutime and cstime. Two
samples around a load window, divided by the requests served, give the CPU cost per request.
Linux only; a root that cannot be read gives None, never a made-up figure.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class Stat:
    """The fields of /proc/<pid>/stat the sampler needs, times in clock ticks."""

    pid: int
    ppid: int
    utime: int
    stime: int
    cutime: int
    cstime: int


@dataclass(frozen=True)
class Sample:
    """One group at one moment: CPU seconds so far and the processes counted."""

    cpu_seconds: float
    processes: int


def read_stat(pid: int, proc: Path = PROC) -> Stat | None:
    try:
        text = (proc / str(pid) / "stat").read_text()
    except OSError:  # gone, or not visible from here
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = text[text.rindex(")") + 2 :].split()
    ppid, utime, stime, cutime, cstime = (int(fields[i]) for i in (1, 11, 12, 13, 14))
    return Stat(pid, ppid, utime, stime, cutime, cstime)


def all_stats(proc: Path = PROC) -> dict[int, Stat]:
    stats = {}
    for entry in proc.iterdir():
        if entry.name.isdigit() and (stat := read_stat(int(entry.name), proc)) is not None:
            stats[stat.pid] = stat
    return stats


def group(root: int, stats: Mapping[int, Stat]) -> list[Stat]:
    """The root and every descendant of it among `stats` (empty when the root is not there)."""
    if root not in stats:
        return []
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    members, pending = [], [root]
    while pending:
        pid = pending.pop()
        members.append(stats[pid])
        pending.extend(children.get(pid, ()))
    return members


def sample(root: int, proc: Path = PROC) -> Sample | None:
    """CPU seconds of the group under `root` so far, or None when the root cannot be read."""
    return sample_groups({"group": root}, proc)["group"]


def sample_groups(roots: Mapping[str, int | None], proc: Path = PROC) -> dict[str, Sample | None]:
    """Several groups from one scan of /proc, so their samples are taken at the same moment."""
    stats = all_stats(proc)
    samples: dict[str, Sample | None] = {}
    for name, root in roots.items():
        members = group(root, stats) if root is not None else []
        if not members:
            samples[name] = None
            continue
        ticks = sum(m.utime + m.stime + m.cutime + m.cstime for m in members)
        samples[name] = Sample(ticks / TICKS_PER_SECOND, len(members))
    return samples


def ticks_of(pids: Iterable[int], proc: Path = PROC) -> dict[int, int]:
    """CPU ticks so far of each listed process still alive (a set of pids, not a tree)."""
    stats = (read_stat(pid, proc) for pid in pids)
    return {s.pid: s.utime + s.stime + s.cutime + s.cstime for s in stats if s is not None}


def us_per_request_of(
    before: Mapping[int, int], after: Mapping[int, int], requests: int | None
) -> float | None:
    """CPU µs per request of listed processes between two ticks_of(): those alive at the end,
    counted from the first sample or from their start (a process that ended in between drops
    out; fine for a pool's long-lived connections)."""
    if not after or not requests:
        return None
    ticks = sum(now - before.get(pid, 0) for pid, now in after.items())
    return round(ticks / TICKS_PER_SECOND * 1e6 / requests, 1)


def us_per_request(
    before: Sample | None, after: Sample | None, requests: int | None
) -> float | None:
    """The group's CPU between two samples, in microseconds per request."""
    if before is None or after is None or not requests:
        return None
    return round((after.cpu_seconds - before.cpu_seconds) * 1e6 / requests, 1)


def parent_pid(pid: int, proc: Path = PROC) -> int | None:
    stat = read_stat(pid, proc)
    return stat.ppid if stat is not None else None
