"""Smoke test of the GridNavi learning benchmark: it trains, evaluates and writes its report.

Returns are not asserted here (a tiny budget learns nothing); the report's schema and the exact
Bayes-optimal reference values are.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gridworld_learning.py"


def test_learning_benchmark_writes_a_complete_report(tmp_path):
    spec = importlib.util.spec_from_file_location("gridworld_learning", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "report.json"
    args = ["--frames", "3840", "--eval-tasks", "21", "--run-dir", str(tmp_path / "run")]
    report = module.main([*args, "--out", str(out), "--override", "env.num_envs=16"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["frames"] == 3840
    assert report["varibad"]["num_tasks"] == 21 and len(report["varibad"]["mean"]) == 4
    assert report["random"]["num_tasks"] == 21
    assert report["bayes_optimal"]["per_episode"][0] == pytest.approx(4.0)
    assert report["bayes_optimal"]["known_goal_return"] == pytest.approx(232.5 / 21)
    assert set(report["ratios"]) == {
        "episode_1_vs_bayes_optimal",
        "episodes_1_2_vs_bayes_optimal",
        "episode_3_vs_known_goal",
        "episode_4_vs_known_goal",
    }
    assert report["config"]["env"]["num_envs"] == 16
    assert "git_commit" in report["versions"]
