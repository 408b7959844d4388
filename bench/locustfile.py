"""Locust users for the bench scenarios: closed loop, no think time, one class per scenario.

Run by bench/run.py (headless, --processes, CSV). Parameters come from the environment so that
forked worker processes inherit them:
BENCH_USERS (user ids 1..N), BENCH_RECRUITING (goods 1..N), BENCH_HOT_GOODS, BENCH_HOT_AMOUNT,
BENCH_WINDOW_START / BENCH_WINDOW_END, BENCH_WARMUP (seconds before the stats are reset on the
master and every worker), BENCH_QUIT_WHEN_IDLE=1 (stop once every user left: scenario H),
BENCH_SIDE_FILE (JSON the master writes at the end: whether locust warned about its own CPU).
"""

from __future__ import annotations

import json
import os
import random
from typing import Any
from urllib.parse import urlencode

import gevent
from locust import FastHttpUser, constant, events, task
from locust.env import Environment
from locust.exception import StopUser
from locust.runners import LocalRunner, WorkerRunner

USERS = int(os.environ.get("BENCH_USERS", "100000"))
RECRUITING = int(os.environ.get("BENCH_RECRUITING", "100"))
HOT_GOODS = int(os.environ.get("BENCH_HOT_GOODS", "0"))
HOT_AMOUNT = int(os.environ.get("BENCH_HOT_AMOUNT", "10000"))
WARMUP = float(os.environ.get("BENCH_WARMUP", "0"))
SIDE_FILE = os.environ.get("BENCH_SIDE_FILE", "")
QUIT_WHEN_IDLE = os.environ.get("BENCH_QUIT_WHEN_IDLE") == "1"
WINDOW = {
    "started_at": os.environ.get("BENCH_WINDOW_START", "2020-01-01 00:00:00"),
    "finished_at": os.environ.get("BENCH_WINDOW_END", "2099-12-31 00:00:00"),
}

LIST_PATH = "/v1/api/investment/goods?" + urlencode(WINDOW)
INVEST_PATH = "/v1/api/investment/user/goods"
MY_PATH = "/v1/api/investment/user/goods"


def user_header() -> dict[str, str]:
    return {"X-USER-ID": str(random.randint(1, USERS))}


class BenchUser(FastHttpUser):
    abstract = True
    wait_time = constant(0)

    def list_goods(self) -> None:
        self.client.get(LIST_PATH, name="list")

    def invest(self) -> None:
        goods_id = random.randint(1, RECRUITING)
        body = {"goodsId": goods_id, "investmentAmount": random.randint(1_000, 100_000)}
        self.client.post(INVEST_PATH, json=body, headers=user_header(), name="invest")

    def my_investments(self) -> None:
        with self.client.get(
            MY_PATH, headers=user_header(), name="my-investments", catch_response=True
        ) as response:
            if response.status_code == 404:  # INVESTMENTS_NOT_FOUND is an answer, not a failure
                response.success()


class HealthUser(BenchUser):
    """The generator floor: the cheapest request the service answers."""

    @task
    def healthz(self) -> None:
        self.client.get("/healthz", name="healthz")


class ListUser(BenchUser):
    @task
    def list_task(self) -> None:
        self.list_goods()


class InvestUser(BenchUser):
    @task
    def invest_task(self) -> None:
        self.invest()


class MyInvestmentsUser(BenchUser):
    @task
    def my_task(self) -> None:
        self.my_investments()


class MixedUser(BenchUser):
    """Scenario M: the shape of real traffic."""

    @task(80)
    def list_task(self) -> None:
        self.list_goods()

    @task(15)
    def my_task(self) -> None:
        self.my_investments()

    @task(5)
    def invest_task(self) -> None:
        self.invest()


class HotInvestUser(BenchUser):
    """Scenario H: everybody invests in one product; a user leaves once it is sold out."""

    @task
    def invest_hot(self) -> None:
        body = {"goodsId": HOT_GOODS, "investmentAmount": HOT_AMOUNT}
        with self.client.post(
            INVEST_PATH, json=body, headers=user_header(), name="invest-hot", catch_response=True
        ) as response:
            over = response.status_code == 200 and response.json().get("state") != "recruiting"
        if over:
            raise StopUser()


def _monitor(environment: Environment) -> None:
    """On the master: reset the stats everywhere after the warm-up; in H, stop once all left."""
    runner = environment.runner
    assert runner is not None
    if WARMUP > 0:
        gevent.sleep(WARMUP)
        if not isinstance(runner, LocalRunner):
            runner.send_message("bench_reset", None)
        runner.stats.reset_all()
    if not QUIT_WHEN_IDLE:
        return
    seen_users = False
    while True:
        gevent.sleep(0.5)
        seen_users = seen_users or runner.user_count > 0
        if seen_users and runner.user_count == 0:
            runner.quit()
            return


def _on_init(environment: Environment, **_: Any) -> None:
    runner = environment.runner
    if isinstance(runner, WorkerRunner):

        def reset(environment: Environment, msg: Any, **_: Any) -> None:
            environment.runner.stats.reset_all()  # type: ignore[union-attr]

        runner.register_message("bench_reset", reset)
        return
    started: list[gevent.Greenlet] = []

    def _start(environment: Environment, **_: Any) -> None:
        if not started:
            started.append(gevent.spawn(_monitor, environment))

    def _quit(environment: Environment, **_: Any) -> None:
        runner = environment.runner
        warned = bool(
            getattr(runner, "cpu_warning_emitted", False)
            or getattr(runner, "worker_cpu_warning_emitted", False)
        )
        if SIDE_FILE:
            with open(SIDE_FILE, "w", encoding="utf-8") as side:
                json.dump({"cpu_warning": warned, "warmup": WARMUP}, side)

    events.test_start.add_listener(_start)  # type: ignore[no-untyped-call]
    events.quitting.add_listener(_quit)  # type: ignore[no-untyped-call]


events.init.add_listener(_on_init)  # type: ignore[no-untyped-call]
