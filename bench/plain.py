"""The plain implementation: the same three APIs as the service in another mainstream stack (Node,
fastify, postgres.js: bench/plain/server.js), one SQL statement per request, no batching, no
cache, served against the same database and measured by the same wrk load in the same run as the
service. It is what a user would write instead; the capacity stage reports every API of the
service as a ratio to it (`plain` in the capacity stage's JSON, its own section in the report).

    python -m bench.plain     # serve it by hand: DATABASE_URL, PORT, WORKERS, DB_POOL_SIZE

The index its my investments needs (INDEX, the ledger by user) is built before its windows and
dropped after them: the service does not use it.

Its processes: Node's cluster module, one process per core like the service's workers, and a pool
of the service's size in total (DB_POOL_SIZE split across the processes). Installed with `npm ci`
from bench/plain/package-lock.json when bench/plain/node_modules is missing; when Node or npm is
missing, or the install fails, the stage records why and the run goes on.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import ROOT
from harness.postgres import psql
from harness.processes import NotReady, ServiceProcess, spawn

if TYPE_CHECKING:
    from bench.run import Bench

HOME = ROOT / "bench" / "plain"
SERVER = HOME / "server.js"
APIS = ("list", "invest", "my-investments")
# What the service must reach against the plain implementation at each page size (× its req/s).
PAGE_RATIO = 2.5
INSTALL_TIMEOUT = 300
# The index a plain implementation's my investments needs: the ledger by user in page order,
# covering what the page reads (the schema had it before the service read a read model). It is
# the plain implementation's, not the service's: built before its windows, dropped after them, so
# the service's invests never pay for it.
INDEX = "bench_plain_user_investment_goods_by_user"
CREATE_INDEX = (
    f"CREATE INDEX IF NOT EXISTS {INDEX} ON user_investment_goods (user_id, invest_date, id)"
    " INCLUDE (goods_id, user_investing_amount)"
)
DROP_INDEX = f"DROP INDEX IF EXISTS {INDEX}"


def missing() -> str | None:
    """Why the plain implementation cannot run here (None: it can)."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def install(timeout: float = INSTALL_TIMEOUT) -> None:
    """`npm ci` from the lock file when node_modules is missing (RuntimeError when it fails)."""
    if (HOME / "node_modules" / ".package-lock.json").exists():
        return
    done = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=HOME,
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"npm ci failed: {(done.stderr or done.stdout).strip()[-500:]}")


class PlainServer(ServiceProcess):
    """`node bench/plain/server.js` on a free loopback port; ready when /healthz answers."""

    ready_timeout = 30.0

    def __init__(
        self, database_url: str, workers: int, pool_size: int, log_path: Path,
        settings: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(
            {"DATABASE_URL": database_url, "WORKERS": str(workers),
             "DB_POOL_SIZE": str(pool_size), **(settings or {})},
            log_path,
        )  # fmt: skip

    def start(self) -> None:
        self.process = spawn(("node", str(SERVER)), self.env, self.log_path)

    def wait_ready(self, timeout: float | None = None, path: str = "/healthz") -> None:
        super().wait_ready(timeout, path)


def capacity(
    bench: Bench, holders: Mapping[int, list[int]], postmaster: int | None
) -> dict[str, Any]:
    """The capacity stage's windows on the plain implementation (the service stopped meanwhile):
    /healthz, each API and my investments for the same users holding about 10 and 40 investments
    as the service's windows, with the CPU per request of Node's processes (`service_…`) and of
    PostgreSQL. {"skipped": why} when it cannot run."""
    why = missing()
    if why is None:
        try:
            install()
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            why = str(error).splitlines()[0]
    if why is not None:
        return {"skipped": why}
    bench.stop_service()
    endpoints: dict[str, dict[str, Any]] = {}
    log_path = bench.work / "plain.log"
    psql(bench.url, CREATE_INDEX, timeout=600)
    try:
        with PlainServer(bench.url, bench.workers, bench.pool, log_path) as server:
            roots = {"service": server.pid, "postgres": postmaster}
            urls = bench.wrk_targets(server.base_url)
            for name, url in urls.items():
                endpoints[name] = bench.capacity_window(f"plain-{name}", url, name, roots)
            for items, ids in holders.items():
                endpoints[f"my-investments-{items}"] = bench.capacity_window(
                    f"plain-my-investments-{items}", urls["my-investments"], "my-investments",
                    roots, ids,
                )  # fmt: skip
    except NotReady as error:
        return {"skipped": f"did not start: {str(error).splitlines()[0]}"}
    finally:
        psql(bench.url, DROP_INDEX, timeout=600)
    return {"server": "node " + _node_version(), "endpoints": endpoints}


def _node_version() -> str:
    done = subprocess.run(["node", "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip()


def ratios(service: Mapping[str, Mapping[str, Any]], plain: Mapping[str, Any]) -> dict[str, Any]:
    """The service's req/s over the plain implementation's, per endpoint both measured; not
    rounded, so a verdict against a target is the ratio's own (2.4991 is below 2.5)."""
    theirs = plain.get("endpoints") or {}
    out: dict[str, Any] = {}
    for name, entry in theirs.items():
        ours, base = service.get(name, {}).get("rps"), entry.get("rps")
        out[name] = ours / base if ours and base else None
    return out


def _against_target(ratio: float) -> str:
    """A ratio as the targets read it: cut (not rounded) to three decimals, so a ratio below a
    target never shows as reaching it."""
    return f"{math.floor(ratio * 1000) / 1000:.3f}×"


def _us(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def section(capacity_stage: Mapping[str, Any]) -> list[str]:
    """The report's section: each endpoint on the service and on the plain implementation, the
    ratio, and the page-size targets (≥ PAGE_RATIO×) marked met or not."""
    plain = capacity_stage.get("plain")
    if not isinstance(plain, Mapping):
        return []
    title = "## The plain implementation (Node, fastify, postgres.js), same load, same run"
    if "skipped" in plain:
        return [title, "", f"Not measured: {plain['skipped']}.", ""]
    service = capacity_stage.get("endpoints", {})
    theirs = plain.get("endpoints", {})
    times = ratios(service, plain)
    lines = [
        title,
        "",
        f"bench/plain/server.js on {plain.get('server', 'node')}: the same three APIs, one SQL "
        "statement per request (invest one atomic statement), no batching, no cache; Node's "
        "cluster with one process per core and the service's pool size in total, served while "
        "the service is stopped, each window warmed up and PostgreSQL settled as the service's. "
        "Service CPU for the plain rows is Node's processes'.",
        "",
        "| endpoint | service req/s | plain req/s | service ÷ plain | service CPU µs / req "
        "(ours / plain) | PostgreSQL CPU µs / req (ours / plain) | plain non-2xx |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, entry in theirs.items():
        ours = service.get(name, {})
        ratio = times.get(name)
        lines.append(
            f"| {name} | {ours.get('rps') or 0:,.0f} | {entry.get('rps') or 0:,.0f} | "
            f"{'—' if ratio is None else f'{ratio:.2f}×'} | "
            f"{_us(ours.get('service_cpu_us_per_request'))} / "
            f"{_us(entry.get('service_cpu_us_per_request'))} | "
            f"{_us(ours.get('postgres_cpu_us_per_request'))} / "
            f"{_us(entry.get('postgres_cpu_us_per_request'))} | {entry.get('non_2xx', 0):,} |"
        )
    lines += ["", f"Targets: my investments at least {PAGE_RATIO:g}× the plain implementation:", ""]
    for name in (n for n in theirs if n.startswith("my-investments-")):
        ratio = times.get(name)
        verdict = (
            "not measured" if ratio is None else "met" if ratio >= PAGE_RATIO else "**not met**"
        )
        lines.append(f"- {name}: {'—' if ratio is None else _against_target(ratio)} ({verdict})")
    return [*lines, ""]


def main() -> int:
    """Serve the plain implementation in the foreground (after `npm ci` when needed)."""
    why = missing()
    if why:
        print(why, file=sys.stderr)
        return 2
    install()
    psql(os.environ["DATABASE_URL"], CREATE_INDEX)  # left in place: drop it by hand (DROP_INDEX)
    return subprocess.call(["node", str(SERVER)], env=os.environ.copy())


if __name__ == "__main__":
    sys.exit(main())
