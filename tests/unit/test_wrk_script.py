"""bench/limits.py's wrk Lua: its done() line gives exact latency percentiles and counts every
non-2xx answer, checked with the real wrk against a small local HTTP server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench import limits
from tests.support import have_wrk


@pytest.fixture(autouse=True)
def wrk_installed() -> None:
    if not have_wrk():
        pytest.skip("wrk is not installed (ALLOW_WRK_SKIP=1)")


BUSY = b'{"type":"/problems/service-unavailable","status":503,"code":"SERVICE_UNAVAILABLE"}'
seen_user_ids: set[str] = set()  # the X-USER-ID values the server was sent


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    served = 0

    def do_GET(self) -> None:
        seen_user_ids.add(self.headers.get("X-USER-ID", ""))
        _Handler.served += 1
        # /busy: every other answer a problem (503 with its code), the others a plain 404
        if self.path == "/ok":
            status, body = 200, b"{}"
        else:
            busy = self.path == "/busy" and _Handler.served % 2 == 0
            status, body = (503, BUSY) if busy else (404, b"{}")
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_wrk_reports_p99_and_counts_non_2xx(server: str, tmp_path: Path) -> None:
    script = limits.wrk_script("healthz", users=10, recruiting=1)

    ok = limits.run_wrk(f"{server}/ok", "ok", script, 1, tmp_path, connections=4)
    missing = limits.run_wrk(f"{server}/missing", "missing", script, 1, tmp_path, connections=4)

    assert "bench-wrk: " in (tmp_path / "wrk-ok.log").read_text()
    assert ok["requests"] > 0 and ok["non_2xx"] == 0 and ok["socket_errors"] == 0
    assert 0 < ok["p50_ms"] <= ok["p99_ms"] <= ok["max_ms"]
    assert ok["avg_ms"] > 0 and ok["rps"] > 0
    assert missing["requests"] > 0
    assert missing["non_2xx"] == missing["requests"]


def test_parse_wrk_with_no_answer_gives_no_latency() -> None:
    line = (
        "bench-wrk: requests=0 duration_us=1000000 non_2xx=0 connect=500 read=0 write=0"
        " timeout=0 status_ge_400=0 mean_us=-nan p50_us=0 p90_us=0 p99_us=0 max_us=0\n"
    )
    figures = limits.parse_wrk(line)
    assert figures["requests"] == 0 and figures["socket_errors"] == 500
    assert figures["avg_ms"] is None and figures["p99_ms"] is None


def test_non_2xx_answers_are_counted_by_status_and_problem_code(
    server: str, tmp_path: Path
) -> None:
    script = limits.wrk_script("healthz", users=10, recruiting=1)

    figures = limits.run_wrk(f"{server}/busy", "busy", script, 1, tmp_path, connections=4)

    statuses, codes = figures["non_2xx_by_status"], figures["non_2xx_by_code"]
    assert figures["non_2xx"] == figures["requests"] == sum(statuses.values())
    assert statuses["503"] == codes["SERVICE_UNAVAILABLE"] > 0
    assert statuses["404"] == codes["-"] > 0  # a body without a code


def test_parse_wrk_tallies_non_2xx_lines() -> None:
    output = (
        "bench-wrk: requests=10 duration_us=1000000 non_2xx=9 connect=0 read=0 write=0"
        " timeout=0 status_ge_400=9 mean_us=10.0 p50_us=9 p90_us=12 p99_us=20 max_us=30\n"
        "bench-wrk-non-2xx: 503 SERVICE_UNAVAILABLE 4\n"
        "bench-wrk-non-2xx: 503 INVEST_OUTCOME_UNKNOWN 1\n"
        "bench-wrk-non-2xx: 404 - 4\n"
    )
    figures = limits.parse_wrk(output)
    assert figures["non_2xx_by_status"] == {"404": 4, "503": 5}
    assert figures["non_2xx_by_code"] == {
        "-": 4, "INVEST_OUTCOME_UNKNOWN": 1, "SERVICE_UNAVAILABLE": 4
    }  # fmt: skip


def test_my_investments_asks_for_the_given_users_only(server: str, tmp_path: Path) -> None:
    seen_user_ids.clear()
    script = limits.wrk_script("my-investments", users=10**6, recruiting=1, user_ids=[7, 1301])

    figures = limits.run_wrk(f"{server}/ok", "pages", script, 1, tmp_path, connections=4)

    assert figures["requests"] > 10
    assert seen_user_ids == {"7", "1301"}


def test_without_the_tally_wrk_still_counts_non_2xx(server: str, tmp_path: Path) -> None:
    script = limits.wrk_script("healthz", users=10, recruiting=1, tally=False)
    assert "function response" not in script  # wrk then hands no answer to Lua

    ok = limits.run_wrk(f"{server}/ok", "ok", script, 1, tmp_path, connections=4)
    busy = limits.run_wrk(f"{server}/busy", "busy", script, 1, tmp_path, connections=4)

    assert ok["requests"] > 0 and ok["non_2xx"] == 0
    assert busy["non_2xx"] == busy["requests"] > 0  # 404 and 503: wrk's own status >= 400
    assert "non_2xx_by_status" not in busy  # not tallied, rather than tallied as none
