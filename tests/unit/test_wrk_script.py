"""bench/limits.py's wrk Lua: its done() line gives exact latency percentiles and counts every
non-2xx answer, checked with the real wrk against a small local HTTP server."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from bench import limits

pytestmark = pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        status = 200 if self.path == "/ok" else 404
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

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
