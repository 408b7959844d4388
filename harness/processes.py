"""Processes in process groups of their own: started, awaited until ready (failing early when they
exit), stopped (SIGTERM, then SIGKILL of the group); `python -m service run` as ServiceProcess."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from types import TracebackType
from typing import Self

from harness import ROOT
from harness.sockets import free_port

__all__ = [
    "NotReady",
    "ServiceProcess",
    "http_status",
    "service_command",
    "spawn",
    "stop_group",
    "stop_process",
    "wait_ready",
]

SERVICE = (sys.executable, "-m", "service")


def service_command(
    *args: str, settings: Mapping[str, str], timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """Run `python -m service <args>` to completion from the repository root, `settings` over
    this process's environment, its output captured (psqlpy's runtime stays out of ours)."""
    return subprocess.run(
        [*SERVICE, *args], cwd=ROOT, env={**os.environ, **settings},
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip


class NotReady(RuntimeError):
    """A process exited, or did not become ready in time; the message ends with its log."""


def spawn(
    command: Sequence[str],
    env: Mapping[str, str],
    log_path: Path,
    *,
    append: bool = False,
    cwd: Path = ROOT,
    user: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start `command` from the repository root (or `cwd`: another checkout's `python -m
    service` runs that checkout's code) in a session of its own (its pid is its process group
    id), stdin closed, stdout and stderr into `log_path`; as `user` when given (root only:
    PostgreSQL refuses to run as root)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab" if append else "wb") as log:
        return subprocess.Popen(
            list(command), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True, user=user,
            group=None if user is None else pwd.getpwnam(user).pw_gid,
        )  # fmt: skip


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The status of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:  # URLError, refused, reset, timed out
        return None


def wait_ready(
    what: str,
    ready: Callable[[], bool],
    exited: Callable[[], bool],
    log_tail: Callable[[], str],
    *,
    timeout: float,
    interval: float = 0.1,
) -> None:
    """Poll `ready` until it holds; NotReady as soon as `exited`, or after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if exited():
            raise NotReady(f"{what} exited early:\n{log_tail()}")
        if ready():
            return
        time.sleep(interval)
    raise NotReady(f"{what} not ready within {timeout:g}s:\n{log_tail()}")


def stop_group(
    pid: int,
    exited: Callable[[], bool],
    *,
    sig: int = signal.SIGTERM,
    whole_group: bool = False,
    timeout: float = 30.0,
) -> None:
    """Stop the leader `pid` of a process group: `sig` to it (to every member with
    `whole_group`), up to `timeout` seconds for it to exit, then SIGKILL to the group. Members
    that outlive their leader (a worker mid-shutdown) get SIGKILL too."""
    if not exited():
        with suppress(ProcessLookupError, PermissionError):
            if whole_group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        for wait in (timeout, 5.0):
            deadline = time.monotonic() + wait
            while not exited() and time.monotonic() < deadline:
                time.sleep(0.05)
            if exited():
                break
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def stop_process(
    process: subprocess.Popen[bytes], timeout: float = 30.0, sig: int = signal.SIGTERM
) -> int | None:
    """stop_group for a process started here; its exit code (None if even SIGKILL did not end
    it within 5 s)."""
    stop_group(process.pid, lambda: process.poll() is not None, sig=sig, timeout=timeout)
    return process.returncode


class ServiceProcess:
    """`python -m service run` on a free loopback port, `settings` as its environment (over this
    process's). Not started until `start()`; as a context manager it starts, waits until ready
    (`ready_timeout`) and stops on the way out."""

    ready_timeout = 30.0

    def __init__(self, settings: Mapping[str, str], log_path: Path | None = None) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(self.port), **settings}
        self.log_path = log_path or ROOT / ".data" / "logs" / f"service-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = spawn((*SERVICE, "run"), self.env, self.log_path)

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def exited(self) -> bool:
        return self.process is None or self.process.poll() is not None

    def wait_ready(self, timeout: float | None = None, path: str = "/readyz") -> None:
        """Until GET `path` answers 200; NotReady (with the log's tail) if it exits first."""
        wait_ready(
            "service", lambda: http_status(f"{self.base_url}{path}", timeout=1) == 200,
            self.exited, self.log, timeout=timeout or self.ready_timeout,
        )  # fmt: skip

    def log(self, chars: int = 4000) -> str:
        """The end of its log (stdout and stderr)."""
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def worker_pids(self) -> list[int]:
        """The pids of its children (granian's workers)."""
        out = subprocess.run(
            ["pgrep", "-P", str(self.pid)], capture_output=True, text=True, check=False
        ).stdout
        return [int(pid) for pid in out.split()]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """`sig` (SIGKILL of its group after `timeout` s); its exit code."""
        return None if self.process is None else stop_process(self.process, timeout, sig)

    def __enter__(self) -> Self:
        try:
            if self.process is None:
                self.start()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
