"""bench/events.py: each round's on ÷ off pairs the round's own two windows, whichever ran first."""

from __future__ import annotations

from bench.events import round_ratios


def test_each_round_is_its_own_on_against_its_own_off() -> None:
    figures = {
        False: [{"accepted_per_s": 10_000.0}, {"accepted_per_s": 12_000.0}],
        True: [{"accepted_per_s": 9_000.0}, {"accepted_per_s": 11_400.0}],
    }
    # The means' ratio would be 20,400 / 22,000 = 0.927; the rounds say 0.9 and 0.95.
    assert round_ratios(figures) == [0.9, 0.95]
