"""bench/cpu.py: the CPU seconds of a process group, read from /proc.

A real process tree burns a known amount of CPU (each process spins until its own process_time
says so) between two samples; the group's figure must match it, including a child that exited
and was reaped inside the window. A fake /proc pins the parsing and the tree walk exactly.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench import cpu

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")

BURN = 0.2  # CPU seconds burnt by each of the three processes

BURNER = textwrap.dedent(
    f"""
    import subprocess, sys, time

    def burn():
        end = time.process_time() + {BURN}
        while time.process_time() < end:
            pass

    if sys.argv[1:] == ["exit"]:
        burn()
        sys.exit(0)
    if sys.argv[1:] == ["stay"]:
        burn()
        print("burnt", flush=True)
        sys.stdin.read()  # stays alive, a live member at the second sample
        sys.exit(0)
    print("ready", flush=True)
    sys.stdin.readline()
    stay = subprocess.Popen([sys.executable, __file__, "stay"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    gone = subprocess.Popen([sys.executable, __file__, "exit"])
    burn()
    gone.wait()  # reaped: its CPU moves to this process's cutime
    stay.stdout.readline()
    print("done", flush=True)
    sys.stdin.read()
    stay.stdin.close()
    stay.wait()
    """
)


def test_group_counts_the_cpu_its_processes_burn(tmp_path: Path) -> None:
    script = tmp_path / "burner.py"
    script.write_text(BURNER)
    process = subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        assert process.stdout.readline().strip() == "ready"
        before = cpu.sample(process.pid)
        process.stdin.write("go\n")
        process.stdin.flush()
        assert process.stdout.readline().strip() == "done"
        after = cpu.sample(process.pid)
    finally:
        process.stdin.close()
        process.wait(timeout=30)

    assert before is not None and after is not None
    assert before.processes == 1
    assert after.processes == 2  # the parent and the child that stays; the other was reaped
    burnt = after.cpu_seconds - before.cpu_seconds
    # Three processes burnt BURN each; two Python start-ups (a few tens of ms each) come on top.
    assert 3 * BURN - 0.03 <= burnt <= 3 * BURN + 0.3, burnt
    assert cpu.us_per_request(before, after, 1000) == pytest.approx(burnt * 1000, abs=0.1)


def test_a_root_that_is_gone_gives_no_figure(tmp_path: Path) -> None:
    assert cpu.sample(2**22 + 12345) is None  # above pid_max's default: never a live pid
    assert cpu.us_per_request(None, cpu.Sample(1.0, 1), 10) is None
    assert cpu.us_per_request(cpu.Sample(1.0, 1), cpu.Sample(2.0, 1), 0) is None


def _fake_stat(
    proc: Path, pid: int, ppid: int, comm: str, times: tuple[int, int, int, int]
) -> None:
    (proc / str(pid)).mkdir(parents=True)
    utime, stime, cutime, cstime = times
    # Fields 3–17 of proc(5): state, ppid, pgrp, session, tty, tpgid, flags, minflt, cminflt,
    # majflt, cmajflt, utime, stime, cutime, cstime; the rest does not matter here.
    rest = f"S {ppid} 1 1 0 -1 0 0 0 0 0 {utime} {stime} {cutime} {cstime} 20 0 1 0 0"
    (proc / str(pid) / "stat").write_text(f"{pid} ({comm}) {rest}\n")


def test_group_is_the_root_and_its_descendants_only(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    _fake_stat(proc, 100, 1, "postgres", (10, 5, 100, 50))  # the postmaster, children reaped
    _fake_stat(proc, 101, 100, "postgres: checkpointer ", (1, 1, 0, 0))
    _fake_stat(proc, 102, 100, "postgres: bench (x) idle", (20, 10, 0, 0))
    _fake_stat(proc, 103, 102, "odd ) name", (3, 0, 0, 0))  # a grandchild
    _fake_stat(proc, 200, 1, "postgres", (999, 999, 0, 0))  # another cluster: not counted
    (proc / "self").mkdir()  # non-numeric entries are skipped

    samples = cpu.sample_groups({"pg": 100, "other": 200, "none": None, "gone": 300}, proc)

    expected_ticks = (10 + 5 + 100 + 50) + 2 + 30 + 3
    assert samples["pg"] == cpu.Sample(expected_ticks / cpu.TICKS_PER_SECOND, 4)
    assert samples["other"] == cpu.Sample(1998 / cpu.TICKS_PER_SECOND, 1)
    assert samples["none"] is None and samples["gone"] is None
    assert cpu.parent_pid(103, proc) == 102


def test_listed_processes_count_from_the_first_sample_or_their_start(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    _fake_stat(proc, 10, 1, "postgres: bench", (100, 50, 0, 0))
    _fake_stat(proc, 11, 1, "postgres: bench", (7, 3, 0, 0))
    before = cpu.ticks_of([10, 11, 12], proc)  # 12 does not exist yet
    assert before == {10: 150, 11: 10}

    (proc / "11" / "stat").unlink()  # ended in between: drops out
    (proc / "10" / "stat").write_text("10 (postgres: bench) S 1 1 1 0 -1 0 0 0 0 0 300 100 0 0\n")
    _fake_stat(proc, 12, 1, "postgres: bench", (20, 0, 0, 0))  # started in between: all counts
    after = cpu.ticks_of([10, 11, 12], proc)

    ticks = (400 - 150) + 20
    expected = round(ticks / cpu.TICKS_PER_SECOND * 1e6 / 100, 1)
    assert cpu.us_per_request_of(before, after, 100) == expected
    assert cpu.us_per_request_of(before, {}, 100) is None
