"""The cluster's detached processes, recorded by pid and start time so that another invocation
(`down`, `status`) finds exactly them: started, awaited and stopped through the harness."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deploy.config import ClusterError, log
from harness import processes


def start_time(pid: int) -> str | None:
    """The kernel's start time of a live process (guards against a reused pid), else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    if fields[0] == "Z":  # a zombie: reap it when it is our child
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return None
    return fields[19]


def alive(entry: dict[str, Any]) -> bool:
    return start_time(int(entry["pid"])) == str(entry["start"])


def spawn(
    name: str, command: list[str], env: dict[str, str], runtime: Path, user: str | None = None
) -> dict[str, Any]:
    """Start a detached process in its own session (its pid is its process group id), logging
    into runtime/<name>.log (as `user` when given); return its record."""
    process = processes.spawn(command, env, runtime / f"{name}.log", append=True, user=user)
    (runtime / f"{name}.pid").write_text(f"{process.pid}\n")
    start = None
    for _ in range(50):
        start = start_time(process.pid)
        if start is not None:
            break
        time.sleep(0.01)
    return {"name": name, "pid": process.pid, "start": start}


def stop(entry: dict[str, Any], runtime: Path, timeout: float = 20.0) -> None:
    """SIGTERM to the process group, SIGKILL when it is still there after `timeout`."""
    if alive(entry):
        log(f"stopping {entry['name']} (pid {entry['pid']})")
        processes.stop_group(
            int(entry["pid"]), lambda: not alive(entry), whole_group=True, timeout=timeout
        )
    (runtime / f"{entry['name']}.pid").unlink(missing_ok=True)


def log_tail(runtime: Path, name: str) -> str:
    path = runtime / f"{name}.log"
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


def answers(url: str) -> Callable[[], bool]:
    """A readiness check: GET `url` answers 200."""
    return lambda: processes.http_status(url) == 200


def wait(
    what: str, ready: Callable[[], bool], entry: dict[str, Any], runtime: Path, timeout: float
) -> None:
    """Until `ready()`; ClusterError with the log's tail if the process exits or time runs out."""
    try:
        processes.wait_ready(
            what, ready, lambda: not alive(entry), lambda: log_tail(runtime, entry["name"]),
            timeout=timeout, interval=0.2,
        )  # fmt: skip
    except processes.NotReady as error:
        raise ClusterError(str(error)) from None
