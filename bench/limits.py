"""The limits measured in the same run: pgbench on the service's own SQL, wrk on each endpoint.

pgbench runs the named statements of sql/queries.sql (prepared, 50 clients = the service's pool)
with the request's parameters drawn the way the locust users draw them; wrk is a lighter C client
that shows how far the server goes when the generator costs little (the capacity stage), its Lua
reporting exact percentiles and counting non-2xx answers.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.dataset import WINDOW
from harness.postgres import pg_tool
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


def requests_per_call(script: str) -> int:
    """Requests one transaction of a pgbench script carries (invest-x10: 10)."""
    _, _, size = script.rpartition("-x")
    return int(size) if size.isdigit() else 1


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


def kept_script(out_dir: Path, file_name: str, script: str) -> Path:
    """Write a run's script into `out_dir` (made if missing), where it stays beside the results,
    and return its path for the command line."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / file_name
    path.write_text(script, encoding="utf-8")
    return path


def run_pgbench(
    url: str, name: str, script: str, seconds: float, out_dir: Path, clients: int = 50
) -> dict[str, Any]:
    script_path = kept_script(out_dir, f"pgbench-{name}.sql", script)
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


def wrk_script(
    kind: str,
    users: int,
    recruiting: int,
    user_ids: Sequence[int] | None = None,
    *,
    tally: bool = True,
) -> str:
    """Lua for wrk: a random X-USER-ID per request (one of `user_ids` when given), a random
    invest body for POST, and a done() hook that prints one `bench-wrk:` line of exact figures
    (p99 included, non-2xx counted). With `tally`, a response() hook also counts every answer
    outside 2xx and prints one `bench-wrk-non-2xx:` line per status and problem code; without
    it, wrk counts the answers with status >= 400 itself, at no cost per request."""
    head = 'math.randomseed(os.time())\nwrk.headers["Content-Type"] = "application/json"\n'
    if kind == "my-investments" and user_ids:
        head += (
            f"local ids = {{{','.join(str(int(u)) for u in user_ids)}}}\n"
            "request = function()\n"
            '  wrk.headers["X-USER-ID"] = tostring(ids[math.random(1, #ids)])\n'
            "  return wrk.format(nil, nil, nil, nil)\nend\n"
        )
    elif kind == "invest":
        head += (
            "request = function()\n"
            f'  wrk.headers["X-USER-ID"] = tostring(math.random(1, {users}))\n'
            f'  local body = string.format(\'{{"goodsId":%d,"investmentAmount":%d}}\','
            f" math.random(1, {recruiting}), math.random(1000, 100000))\n"
            '  return wrk.format("POST", nil, nil, body)\nend\n'
        )
    elif kind == "my-investments":
        head += (
            "request = function()\n"
            f'  wrk.headers["X-USER-ID"] = tostring(math.random(1, {users}))\n'
            "  return wrk.format(nil, nil, nil, nil)\nend\n"
        )
    return head + (_WRK_TALLY if tally else "") + _WRK_DONE


# Each wrk thread has its own Lua state: setup() keeps the threads, response() counts in each,
# done() sums them. A non-2xx answer's problem `code` is read from its body (2xx bodies are never
# searched). The hook itself is not free: with it wrk hands every answer's headers and body to
# Lua, about 1 µs of wrk's CPU per request (7.7 -> 8.7 µs against the RSGI floor), so the capacity
# stage's measured windows go without it and tally the codes in separate runs of the same load.
_WRK_TALLY = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
non_2xx = 0
failed = {}
function response(status, headers, body)
  if status < 200 or status > 299 then
    non_2xx = non_2xx + 1
    local code = body and string.match(body, '"code"%s*:%s*"([%w_]+)"') or "-"
    local key = status .. " " .. code
    failed[key] = (failed[key] or 0) + 1
  end
end
"""
_WRK_DONE = """
function done(summary, latency, requests)
  local e = summary.errors
  local non, tally = e.status, {}  -- no response() hook: wrk's own count of status >= 400
  if threads then
    non = 0
    for _, thread in ipairs(threads) do
      non = non + thread:get("non_2xx")
      for key, count in pairs(thread:get("failed")) do tally[key] = (tally[key] or 0) + count end
    end
  end
  io.write(string.format("bench-wrk: requests=%d duration_us=%d non_2xx=%d"
    .. " connect=%d read=%d write=%d timeout=%d status_ge_400=%d tallied=%d"
    .. " mean_us=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d\\n",
    summary.requests, summary.duration, non, e.connect, e.read, e.write, e.timeout, e.status,
    threads and 1 or 0, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
  for key, count in pairs(tally) do
    io.write(string.format("bench-wrk-non-2xx: %s %d\\n", key, count))
  end
end
"""

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def parse_wrk(output: str) -> dict[str, Any]:
    """wrk's figures: the script's `bench-wrk:` line when present, else wrk's own text."""
    line = re.search(r"^bench-wrk: (.*)$", output, re.MULTILINE)
    if line:
        # No request answered: the mean prints as nan and the latency keys stay missing.
        raw = {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)\b", line[1])}

        def in_ms(key: str) -> float | None:
            return round(raw[key] / 1000, 3) if key in raw and raw["requests"] else None

        requests = int(raw["requests"])
        by_status: dict[str, int] = {}
        by_code: dict[str, int] = {}
        for status, code, count in re.findall(
            r"^bench-wrk-non-2xx: (\d+) (\S+) (\d+)$", output, re.MULTILINE
        ):
            by_status[status] = by_status.get(status, 0) + int(count)
            by_code[code] = by_code.get(code, 0) + int(count)
        tallied = {  # only a script with the response() hook sees each answer's status and code
            "non_2xx_by_status": dict(sorted(by_status.items())),
            "non_2xx_by_code": dict(sorted(by_code.items())),  # "-": a body without a code
        }
        return {
            "requests": requests,
            "rps": round(requests / (raw["duration_us"] / 1e6), 1) if raw["duration_us"] else None,
            "avg_ms": in_ms("mean_us"),
            **{f"p{q}_ms": in_ms(f"p{q}_us") for q in (50, 90, 99)},
            "max_ms": in_ms("max_us"),
            "non_2xx": int(raw["non_2xx"]),
            **(tallied if raw.get("tallied", 1) else {}),
            "socket_errors": int(sum(raw[k] for k in ("connect", "read", "write", "timeout"))),
        }

    def ms(text: str) -> float:
        found = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
        return round(float(found[1]) * _UNITS[found[2]], 3) if found else float("nan")

    result: dict[str, Any] = {}
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    result["rps"] = float(rps[1]) if rps else None
    avg = re.search(r"^\s+Latency\s+(\S+)", output, re.MULTILINE)
    if avg:
        result["avg_ms"] = ms(avg[1])
    for label, value in re.findall(r"^\s+(50|90|99)%\s+(\S+)$", output, re.MULTILINE):
        result[f"p{label}_ms"] = ms(value)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    result["non_2xx"] = int(non_2xx[1]) if non_2xx else 0
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       output)  # fmt: skip
    result["socket_errors"] = sum(int(v) for v in errors.groups()) if errors else 0
    count = re.search(r"(\d+) requests in", output)
    result["requests"] = int(count[1]) if count else None
    return result


def run_wrk(
    url: str, name: str, script: str, seconds: float, out_dir: Path, connections: int = 500
) -> dict[str, Any]:
    script_path = kept_script(out_dir, f"wrk-{name}.lua", script)
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
