"""service/memory.py: once settled, a process's objects are out of the cyclic collector's reach
and its young generation is collected every YOUNG_THRESHOLD allocations, not CPython's 700."""

from __future__ import annotations

import subprocess
import sys

from service import memory


def test_settle_freezes_what_was_built_and_raises_the_young_threshold() -> None:
    # In a process of its own: this one's collector stays as pytest left it.
    probe = (
        "import gc; from service import memory\n"
        "before = (gc.get_freeze_count(), gc.get_threshold())\n"
        "memory.settle()\n"
        "print(before[0], before[1][0], gc.get_freeze_count(), *gc.get_threshold())"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    frozen_before, young_before, frozen_after, young, middle, old = map(int, out)
    assert (frozen_before, young_before) == (0, 700)
    assert frozen_after > 1000  # the interpreter's and the imports' objects
    assert (young, middle, old) == (memory.YOUNG_THRESHOLD, 10, 10)
