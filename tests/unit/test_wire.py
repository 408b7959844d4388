"""bench/wire.py: the requests of a JMeter run as the wire saw them, read from tcpdump's lines of a
capture, and the report's table of them beside JMeter's figures (bench/jmeter.py)."""

from __future__ import annotations

from bench import jmeter, report, wire
from tests.unit.test_jmeter import _results

PORT = 28007

# tcpdump -n -tt -q of a capture of packets with data: two connections, the first with two
# requests (its second answer in two packets), the second with one request in two packets.
LINES = [
    "reading from file inv.pcap, link-type EN10MB (Ethernet), snapshot length 96",
    f"1000.000000 IP 127.0.0.1.40001 > 127.0.0.1.{PORT}: tcp 190",
    f"1000.004000 IP 127.0.0.1.40002 > 127.0.0.1.{PORT}: tcp 100",
    f"1000.005000 IP 127.0.0.1.40002 > 127.0.0.1.{PORT}: tcp 90",  # the same request, more of it
    f"1000.012500 IP 127.0.0.1.{PORT} > 127.0.0.1.40001: tcp 400",
    f"1000.030000 IP 127.0.0.1.{PORT} > 127.0.0.1.40002: tcp 400",
    f"1000.031000 IP 127.0.0.1.40001 > 127.0.0.1.{PORT}: tcp 190",
    f"1000.031500 IP 127.0.0.1.40001 > 127.0.0.1.{PORT}: tcp 0",  # no data: not a request
    f"1000.252000 IP 127.0.0.1.{PORT} > 127.0.0.1.40001: tcp 200",
    f"1000.252100 IP 127.0.0.1.{PORT} > 127.0.0.1.40001: tcp 200",  # the same answer, the rest
    "1000.300000 IP 127.0.0.1.5432 > 127.0.0.1.40003: tcp 50",  # another server's
]


def test_each_request_runs_from_its_first_packet_to_its_answers_first_packet() -> None:
    found = wire.residences(LINES, PORT)
    assert found.keys() == {40001, 40002}
    assert [round(ms, 3) for ms in found[40001]] == [12.5, 221.0]
    assert [round(ms, 3) for ms in found[40002]] == [26.0]


def test_a_connections_first_requests_are_its_warm_up() -> None:
    found = wire.residences(LINES, PORT)
    assert sorted(round(ms, 3) for ms in wire.measured(found, 1)) == [221.0]
    assert len(wire.measured(found, 0)) == 3


def test_the_figures_are_nearest_rank_with_the_requests_over_100_ms() -> None:
    values = [float(n) for n in range(1, 1001)]  # 1 .. 1000 ms
    assert wire.figures(values) == {
        "requests": 1000, "p50_ms": 500.0, "p99_ms": 990.0, "p999_ms": 999.0, "max_ms": 1000.0,
        "over_100ms": 900,
    }  # fmt: skip
    assert wire.figures([]) == {"requests": 0}
    assert wire.figures([7.04])["p999_ms"] == 7.0


def test_the_report_sets_the_wire_beside_jmeter() -> None:
    results = _results()
    found = wire.residences(LINES, PORT)
    results["scenarios"]["J"]["service"]["invest"]["wire"] = {
        "server": wire.figures(wire.measured(found, 0)),
        "jmeter": wire.figures([15.0, 30.0, 640.0]),
        "connections": len(found),
        "dropped": 0,
    }
    section = report.markdown(results, {}).split("## J — the seed's own tool", 1)[1]
    assert "as JMeter and as the wire saw them" in section
    assert (
        "| service | invest | 3 / 3 | 30.0 / 640.0 / 640.0 / 640.0 | 26.0 / 221.0 / 221.0 / 221.0"
        " | 1 / 1 | 2 | 0 |" in section
    )
    assert jmeter.wire_section(_results()["scenarios"]["J"]) == []
