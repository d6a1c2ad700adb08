"""``benchmarks/tour_values.py``: discounted values of committed GridNavi tours."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "tour_values.py"
TOURS = ROOT / "benchmarks/results/gridnavi_campaign/tours_varibad_original_critic0.5_seed1.txt"


def test_undiscounted_values_are_the_printed_episode_returns(load_script):
    tour_values = load_script(SCRIPT)
    run_block, optimal_block = TOURS.read_text().split("Bayes-optimal (exact DP)")
    run, optimal = tour_values.found_steps(run_block), tour_values.found_steps(optimal_block)
    assert len(run) == len(optimal) == 21  # every candidate goal of the 5x5 grid
    # gamma = 1: the sum of the mean returns of episodes 1 and 2 the tours file prints.
    assert tour_values.discounted_value(run, 1.0) == pytest.approx(4.000 + 10.443, abs=1e-3)
    assert tour_values.discounted_value(optimal, 1.0) == pytest.approx(4.000 + 11.071, abs=1e-3)
    # A goal found at step 2 of both episodes, hand-computed at gamma = 0.5.
    value = tour_values.discounted_value({"02": [2, 2]}, 0.5)
    expected = sum(0.5**i * (-0.1 if i % 15 == 0 else 1.0) for i in range(30))
    assert value == pytest.approx(expected)


def test_the_border_sweep_is_worth_less_at_every_discount(load_script, capsys):
    load_script(SCRIPT).main([str(TOURS), "--gammas", "0.95", "0.99"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 0.9")]
    assert [row.split("|")[4].strip() for row in rows] == ["+0.226", "+0.514"]
