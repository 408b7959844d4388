"""The bench with investor caps on (`BENCH_CAPS=act`): the Online Investment-Linked Financial
Business Act's caps for individuals, loaded through the admin's own SQL functions
(sql/functions/admin_limits.sql, which refuse caps an existing investor is over) once dataset D
is loaded, with every bench user registered, so the whole protocol runs with caps on; and the
comparison of invest with caps off and on, measured back to back in the same run (the capacity
stage's invest window in the order off, on, on, off, so drift over the stage cancels out; and
`python -m bench.rush_compare`'s opening rush), reported side by side.

Dataset D fits the caps with room to spare: a user's ledger rows are 1,000-100,000 KRW each, and
the user with the most rows (user 1, about 1 + 9 ln(N / 10) of them: 105 at 10^6, 125 at 10^7)
holds at most 12.5 million in all, 2-3 rows in any one product (per_product 5,000,000) and a
tenth of it in real estate (every tenth product is real_estate: 10,000,000). The load's invests
add about 50,000 per user per 10 s window; the caps never refuse one, so caps on measures the
cost of deciding them, not of refusals.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Callable, Mapping
from typing import Any

from bench.target import psql

Caps = dict[str, int | None]
ACT: dict[str, Caps] = {
    "general": {"per_product": 5_000_000, "total": 30_000_000, "real_estate": 10_000_000},
    "qualified": {"per_product": 20_000_000, "total": 100_000_000, "real_estate": None},
    "professional": {"per_product": None, "total": None, "real_estate": None},
}
NO_CAPS: dict[str, Caps] = {
    name: {"per_product": None, "total": None, "real_estate": None} for name in ACT
}
MODES = {"act": ACT}
ORDER = ("off", "on", "on", "off")  # the capacity stage's invest windows


def mode(environ: Mapping[str, str] = os.environ) -> str | None:
    """BENCH_CAPS: `act` (caps on), or unset / empty / `off` (none, as before)."""
    value = environ.get("BENCH_CAPS", "").strip().lower()
    if value in ("", "off"):
        return None
    if value not in MODES:
        raise ValueError(f"BENCH_CAPS must be one of {', '.join(MODES)} or off, not {value!r}")
    return value


def _sql(value: int | None) -> str:
    return "NULL" if value is None else str(int(value))


def load(url: str, caps: Mapping[str, Caps]) -> None:
    """Set every class's caps through admin_set_class_limits(); fails, naming the cap, when a
    user of the database is over one (the dataset must fit the caps it is measured with)."""
    for investor_class, cap in caps.items():
        answer = psql(
            url,
            "SELECT outcome, cap, users FROM admin_set_class_limits("
            f"'{investor_class}', {_sql(cap['per_product'])}, {_sql(cap['total'])},"
            f" {_sql(cap['real_estate'])})",
        ).splitlines()[-1]
        outcome, over, users = answer.split("\t")
        if outcome != "changed":
            raise RuntimeError(
                f"{users} users of class {investor_class} are over its {over} cap: the"
                " dataset does not fit these caps"
            )


def register_users(url: str, users: int) -> None:
    """Users 1..users in the investor registry (class general; the dataset's investors are
    there already), so no invest of the load creates a row on the way."""
    psql(
        url,
        "INSERT INTO investor (user_id) SELECT generate_series(1, "
        f"{int(users)}) ON CONFLICT DO NOTHING",
    )


def switch_on(url: str, users: int) -> str | None:
    """BENCH_CAPS's caps and users, when set (after the dataset, before the load); its mode."""
    chosen = mode()
    if chosen is not None:
        register_users(url, users)
        load(url, MODES[chosen])
        print(f"caps: BENCH_CAPS={chosen}, the Act's caps for individuals on", flush=True)
    return chosen


def compare(url: str, chosen: str, window: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """The invest window with caps off and on, in ORDER; the caps are on again afterwards."""
    passes: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    try:
        for number, side in enumerate(ORDER, 1):
            load(url, MODES[chosen] if side == "on" else NO_CAPS)
            passes[side].append(window(f"invest-caps-{side}-{number}"))
    finally:
        load(url, MODES[chosen])
    return {"mode": chosen, "order": list(ORDER), **passes, **summary(passes)}


def summary(passes: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Each side's mean req/s, p99 and CPU per request, and caps on against off."""

    def mean(side: str, key: str) -> float | None:
        values = [p[key] for p in passes[side] if isinstance(p.get(key), int | float)]
        return round(statistics.mean(values), 1) if values else None

    figures = {
        f"{key}_{side}": mean(side, key)
        for side in ("off", "on")
        for key in ("rps", "p99_ms", "service_cpu_us_per_request", "postgres_cpu_us_per_request")
    }
    off, on = figures["rps_off"], figures["rps_on"]
    figures["on_vs_off"] = round(on / off, 3) if on and off else None
    figures["errors"] = sum(p.get("errors", 0) or 0 for side in passes.values() for p in side)
    return figures


def markdown(limits: Mapping[str, Any]) -> list[str]:
    """The report's section: invest with caps off and on, side by side (none without caps)."""
    entry = limits.get("caps")
    if not entry:
        return []

    def cell(value: Any) -> str:
        return "-" if value is None else f"{value:,}"

    rows = [
        ("req/s", "rps"),
        ("p99 ms", "p99_ms"),
        ("service CPU µs/request", "service_cpu_us_per_request"),
        ("PostgreSQL CPU µs/request", "postgres_cpu_us_per_request"),
    ]
    lines = [
        f"## Invest with caps off and on (BENCH_CAPS={entry['mode']})",
        "",
        "The capacity stage's invest window, in the order "
        + ", ".join(entry["order"])
        + f"; means of each side. Caps on / off: **{entry['on_vs_off']}**"
        + " (the target: within 10 %)."
        + (f" Non-2xx or socket errors: {entry['errors']}." if entry["errors"] else ""),
        "",
        "| | caps off | caps on |",
        "|---|---:|---:|",
    ]
    for label, key in rows:
        lines.append(f"| {label} | {cell(entry[f'{key}_off'])} | {cell(entry[f'{key}_on'])} |")
    return [*lines, ""]
