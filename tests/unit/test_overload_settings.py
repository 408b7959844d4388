"""The overload budgets: granian's backpressure admits what the queues admit (within the
open-files limit), and the list loads leave the pool's other connections to invests and pages."""

from __future__ import annotations

import subprocess
import sys

import pytest

from service.settings import CHORE_CONNECTIONS, CONNECTION_HEADROOM, SettingsError, load_settings
from tests.support import ROOT


def test_backpressure_admits_every_request_the_queues_admit() -> None:
    settings = load_settings({"INVEST_QUEUE_MAX": "3000", "INVEST_BATCH_MAX": "100",
                              "READ_BATCH_MAX": "50", "READ_CALLS_IN_FLIGHT": "2"})  # fmt: skip
    # invests waiting and in their calls (shared and held products'), pages waiting and in
    # theirs, and the headroom
    calls = settings.invest_calls_in_flight + settings.invest_wait_calls
    assert settings.connections_per_worker() == (
        3000 + calls * 100 + 3000 + 2 * 50 + CONNECTION_HEADROOM
    )
    defaults = load_settings({})
    assert defaults.connections_per_worker() > 2 * defaults.invest_queue_max


def test_server_backpressure_overrides_the_derived_value() -> None:
    assert load_settings({"SERVER_BACKPRESSURE": "777"}).connections_per_worker() == 777
    settings = load_settings({"SERVER_BACKPRESSURE": "777", "LIST_LOADS_MAX": "3"})
    assert load_settings(settings.as_env()) == settings


def test_list_loads_leave_the_connections_invests_pages_and_chores_need() -> None:
    settings = load_settings({"WORKERS": "2", "DB_POOL_SIZE": "20"})  # 10 per worker
    taken = (
        settings.invest_calls_in_flight + settings.invest_wait_calls
        + settings.cancel_calls_in_flight + settings.read_calls_in_flight + CHORE_CONNECTIONS
    )  # fmt: skip
    assert settings.list_loads() == 10 - taken
    assert settings.list_loads() + taken <= settings.pool_share()
    # a small pool share still lets one list load run (the classes then share connections)
    assert load_settings({"WORKERS": "4", "DB_POOL_SIZE": "8"}).list_loads() == 1
    assert (
        load_settings({"DB_POOL_SIZE": "20", "WORKERS": "1", "LIST_LOADS_MAX": "4"}).list_loads()
        == 4
    )


@pytest.mark.parametrize(
    "values",
    [{"LIST_LOADS_MAX": "-1"}, {"LIST_LOADS_MAX": "many"}, {"SERVER_BACKPRESSURE": "-5"},
     {"SERVER_BACKPRESSURE": "2000000"},
     # 10 connections per worker, 3 for invests and pages: at most 7 list loads
     {"WORKERS": "1", "DB_POOL_SIZE": "10", "LIST_LOADS_MAX": "8"}],
)  # fmt: skip
def test_invalid_overload_setting_names_itself(values: dict[str, str]) -> None:
    name = next(key for key in values if key not in {"WORKERS", "DB_POOL_SIZE"})
    with pytest.raises(SettingsError, match=name):
        load_settings(values)


def _backpressure_under(limit: int, environ: str) -> tuple[int, str]:
    """service.door.backpressure in a child whose open-files limit (soft and hard) is `limit`."""
    code = (
        "import resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({limit}, {limit}))\n"
        "from service.door import backpressure\n"
        "from service.settings import load_settings\n"
        f"print(backpressure(load_settings({environ})))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return int(done.stdout), done.stderr


def test_backpressure_stays_within_the_open_files_limit() -> None:
    # Past the limit granian's accept() fails (EMFILE) while the connection waits unanswered.
    asked = "{'SERVER_BACKPRESSURE': '5000', 'WORKERS': '1', 'DB_POOL_SIZE': '10'}"
    held, _ = _backpressure_under(4096, asked)
    assert held == 4096 - 10 - 256  # the pool and the worker's other files stay possible
    held, _ = _backpressure_under(8192, asked)
    assert held == 5000
