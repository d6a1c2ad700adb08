"""Smoke test of the GridNavi learning benchmark: it trains, evaluates and writes its report.

Returns are not asserted here (a tiny budget learns nothing); the report's schema and the exact
Bayes-optimal reference values are.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from torchrl_bamdp.utils import portable_paths

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gridworld_learning.py"


def test_learning_benchmark_writes_a_complete_report(tmp_path):
    spec = importlib.util.spec_from_file_location("gridworld_learning", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "report.json"
    args = ["--frames", "3840", "--eval-tasks", "21", "--run-dir", str(tmp_path / "run")]
    report = module.main([*args, "--out", str(out), "--override", "env.num_envs=16"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(portable_paths(report)))
    assert report["frames"] == 3840
    assert (report["frame_budget"], report["frame_budget_reached"]) == (3840, True)
    assert report["config"]["train"]["total_frames"] == 3840  # the schedules' horizon
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


def test_learning_benchmark_reports_a_wall_clock_cap_that_ended_training_early(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gridworld_learning", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # 16 envs x 60 steps = 960 frames a batch: the cap ends training after the first of two.
    args = ["--frames", "1920", "--minutes", "1e-9", "--eval-tasks", "21"]
    args += ["--run-dir", str(tmp_path / "run"), "--out", str(tmp_path / "report.json")]
    report = module.main([*args, "--override", "env.num_envs=16"])
    assert (report["frames"], report["frame_budget_reached"]) == (960, False)
    assert "cap stopped training at 960 of 1,920 frames" in capsys.readouterr().out
