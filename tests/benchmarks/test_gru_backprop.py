"""Smoke test of the GRU backpropagation benchmark: it runs both variants and writes its JSON.

Timings are not asserted (they depend on the machine and its load); only the report's shape and
that every time and speed-up is there and positive.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gru_backprop.py"


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script(SCRIPT)


def test_benchmark_report(bench, tmp_path):
    out = tmp_path / "results" / "gru_backprop.json"
    argv = ["--repeats", "1", "--ppo-repeats", "1", "--steps", "5", "--families", "gridworld"]
    returned = bench.main([*argv, "--out", str(out)])

    report = json.loads(out.read_text())
    assert report["benchmark"] == "gru_backprop"
    assert report["config"]["fast_gru_max_batch"] >= 1
    assert [row["batch"] for row in report["gru"]] == [shape[0] for shape in bench.SHAPES]
    assert {row["steps"] for row in report["gru"]} == {5}
    (ppo,) = report["ppo_update"]
    assert ppo["family"] == "gridworld"
    assert ppo["tasks_per_minibatch"] * ppo["minibatches"] == 64  # GridNavi's 64 envs
    for row in [*report["gru"], ppo]:
        assert set(row["median_ms"]) == {"nn.GRU", "gru_sequence"}
        assert all(math.isfinite(v) and v > 0 for v in row["median_ms"].values())
        assert row["speedup"] > 0 and row["speedup_paired"] > 0
    assert returned["gru"] == report["gru"]
