"""bench/run.py's `--only` stages without a database: dataset D loaded at once, BENCH_CAPS's caps
switched on, then the one stage asked for and nothing else (tests/system/test_bench_quick.py runs
the whole quick protocol, capacity stage included; test_bench_jmeter.py runs `--only jmeter`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import run


@pytest.mark.parametrize("stage", run.STAGES)
def test_only_loads_dataset_d_switches_the_caps_on_and_runs_that_stage_alone(
    stage: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    steps: list[str] = []
    monkeypatch.setattr(run.dataset, "load", lambda url, shape: steps.append("load") or {"x": 1.0})
    monkeypatch.setattr(run.caps, "switch_on", lambda url, users: steps.append("caps") or "act")
    monkeypatch.setattr(run.jmeter, "stage", lambda bench: steps.append("jmeter"))
    monkeypatch.setattr(run.Bench, "capacity", lambda self: steps.append("capacity"))
    for other in ("seed_scenario", "rush", "metrics_overhead", "pgbench", "growth_point"):
        monkeypatch.setattr(run.Bench, other, lambda self, *a, name=other: steps.append(name))

    bench = run.Bench(run.QUICK, "postgresql://nowhere/bench_quick", tmp_path, 2, 50)
    bench.run_only(stage)

    assert steps == ["load", "caps", stage]
    assert bench.caps == "act"
    assert bench.results["dataset"]["d_load_seconds"] == 1.0
    assert bench.results["scenarios"] == {}
