"""The limits measured in the same run: pgbench on the service's own SQL, wrk on each endpoint.

pgbench runs the named statements of sql/queries.sql (prepared, 50 clients = the service's pool)
with the request's parameters drawn the way the locust users draw them; wrk is a lighter C client
that shows how far the server goes when the generator costs little.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench.dataset import WINDOW
from bench.target import pg_tool
from service.sql import queries

MY_PAGE = 1000  # the service's default page; the statement asks for one row more
PER_CALL = (10, 100)  # invests per invest_many() call in the batched pgbench scripts


def _parameters(statement: str, values: dict[int, str]) -> str:
    # pgbench reads ":name" as a variable even inside quotes; to_char prints '":"' as ':' too.
    statement = statement.replace("HH24:MI:SS", 'HH24":"MI":"SS')
    return re.sub(r"\$(\d+)\b", lambda m: values[int(m[1])], statement)


def _random_array(count: int, low: int, high: int) -> str:
    """SQL for an array of `count` random integers in [low, high]."""
    values = f"{low} + (random() * {high - low})::bigint"
    return f"(SELECT array_agg({values}) FROM generate_series(1, {count}))"


def pgbench_scripts(users: int, recruiting: int, hot_goods: int) -> dict[str, str]:
    """pgbench scripts, one per API (and the single hot product), from sql/queries.sql; invest
    also with 10 and 100 requests per call (the batches the service's coalescing sends)."""
    named = queries()
    user = f"\\set user_id random(1, {users})\n"
    amount = "\\set amount random(1000, 100000)\n"
    single = {2: "ARRAY[:user_id]::bigint[]", 3: "ARRAY[:amount]::bigint[]", 4: "NULL"}
    scripts = {
        "list": _parameters(named["list-goods"], {1: ":w_start", 2: ":w_end"}) + ";\n",
        "invest": user
        + amount
        + f"\\set goods_id random(1, {recruiting})\n"
        + _parameters(named["invest-batch"], {1: "ARRAY[:goods_id]::bigint[]", **single})
        + ";\n",
        "invest-hot": user
        + f"\\set goods_id {hot_goods}\n\\set amount 10000\n"
        + _parameters(named["invest-batch"], {1: "ARRAY[:goods_id]::bigint[]", **single})
        + ";\n",
        "my-investments": user
        + _parameters(
            named["my-investments-many"],
            {1: "ARRAY[:user_id]::bigint[]", 2: f"ARRAY[{MY_PAGE + 1}]", 3: "NULL", 4: "NULL"},
        )
        + ";\n",
    }
    for size in PER_CALL:
        batch = {
            1: _random_array(size, 1, recruiting),
            2: _random_array(size, 1, users),
            3: _random_array(size, 1000, 100000),
            4: "NULL",
        }
        scripts[f"invest-x{size}"] = _parameters(named["invest-batch"], batch) + ";\n"
    return scripts


def parse_pgbench(output: str) -> dict[str, Any]:
    def number(pattern: str) -> float | None:
        found = re.search(pattern, output)
        return float(found[1]) if found else None

    return {
        "tps": number(r"tps = ([\d.]+) \(without initial connection time\)"),
        "latency_avg_ms": number(r"latency average = ([\d.]+) ms"),
        "latency_stddev_ms": number(r"latency stddev = ([\d.]+) ms"),
        "transactions": number(r"number of transactions actually processed: (\d+)"),
        "failed": number(r"number of failed transactions: (\d+)") or 0,
    }


def run_pgbench(
    url: str, name: str, script: str, seconds: float, out_dir: Path, clients: int = 50
) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    script_path = out_dir / f"pgbench-{name}.sql"
    script_path.write_text(script, encoding="utf-8")
    env = {**os.environ, "PGOPTIONS": "-c TimeZone=Asia/Seoul"}
    command = [
        pg_tool("pgbench"), "-n", "-M", "prepared", "-c", str(clients), "-j", "2",
        "-T", str(max(1, round(seconds))), "-D", f"w_start={WINDOW[0]}",
        "-D", f"w_end={WINDOW[1]}", "-f", str(script_path), url,
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=seconds + 120, check=False
    )
    (out_dir / f"pgbench-{name}.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode != 0:
        return {"error": done.stderr.strip()[-500:], "clients": clients}
    return {"clients": clients, "seconds": seconds, **parse_pgbench(done.stdout)}


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def wrk_script(kind: str, users: int, recruiting: int) -> str:
    """Lua for wrk: a random X-USER-ID per request, a random invest body for POST."""
    head = 'math.randomseed(os.time())\nwrk.headers["Content-Type"] = "application/json"\n'
    if kind == "invest":
        return head + (
            "request = function()\n"
            f'  wrk.headers["X-USER-ID"] = tostring(math.random(1, {users}))\n'
            f'  local body = string.format(\'{{"goodsId":%d,"investmentAmount":%d}}\','
            f" math.random(1, {recruiting}), math.random(1000, 100000))\n"
            '  return wrk.format("POST", nil, nil, body)\nend\n'
        )
    if kind == "my-investments":
        return head + (
            "request = function()\n"
            f'  wrk.headers["X-USER-ID"] = tostring(math.random(1, {users}))\n'
            "  return wrk.format(nil, nil, nil, nil)\nend\n"
        )
    return head


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def parse_wrk(output: str) -> dict[str, Any]:
    def ms(text: str) -> float:
        found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
        return round(float(found[1]) * _UNITS[found[2]], 3) if found else float("nan")

    result: dict[str, Any] = {}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    result["rps"] = float(rps[1]) if rps else None
    for label, value in re.findall(r"^\s+(50|90|99)%\s+(\S+)$", output, re.MULTILINE):
        result[f"p{label}_ms"] = ms(value)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    result["non_2xx"] = int(non_2xx[1]) if non_2xx else 0
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       output)  # fmt: skip
    result["socket_errors"] = sum(int(v) for v in errors.groups()) if errors else 0
    requests = re.search(r"(\d+) requests in", output)
    result["requests"] = int(requests[1]) if requests else None
    return result


def run_wrk(
    url: str, name: str, script: str, seconds: float, out_dir: Path, connections: int = 500
) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    script_path = out_dir / f"wrk-{name}.lua"
    script_path.write_text(script, encoding="utf-8")
    command = [
        "wrk", "-t", "2", "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
        "--latency", "--timeout", "10s", "-s", str(script_path), url,
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    (out_dir / f"wrk-{name}.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode != 0:
        return {"error": done.stderr.strip()[-500:], "connections": connections}
    return {"connections": connections, "seconds": seconds, **parse_wrk(done.stdout)}
