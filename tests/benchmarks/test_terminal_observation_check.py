"""The terminal-observation check: groups goals by where episode 1 first found them and measures
episode 2's shortfall from walking straight to the goal."""

from __future__ import annotations

from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "terminal_observation_check.py"


def test_grouping_and_shortfall(load_script):
    module = load_script(SCRIPT)
    assert module.known_goal_return([4.0, 2.0], 15) == pytest.approx(10 - 0.5)
    run = {
        "seed": 0,
        "episode_length": 15,
        "goals": [
            {"goal": [4.0, 2.0], "first_step_episode_1": 14, "returns": [0.0, 9.5]},
            {"goal": [2.0, 0.0], "first_step_episode_1": 1, "returns": [0.0, 12.9]},
            {"goal": [0.0, 3.0], "first_step_episode_1": None, "returns": [0.0, 5.0]},
        ],
    }
    for goal in run["goals"]:
        goal["known_goal_return"] = module.known_goal_return(goal["goal"], 15)
    summary = module.summarise([run])["pooled"]
    assert summary["last_step"] == {"goals": 1, "episode_2_gap_mean": 0.0, "episode_2_missed": 0}
    assert summary["earlier"]["episode_2_missed"] == 1
    assert summary["earlier"]["episode_2_gap_mean"] == pytest.approx(13.9 - 12.9)
    assert summary["not_found"]["goals"] == 1


def test_on_a_tiny_run(load_script, tmp_path):
    from torchrl_bamdp.configs import load_config
    from torchrl_bamdp.trainers import Trainer

    module = load_script(SCRIPT)
    config = load_config(
        {
            "env": {"num_envs": 4},
            "algo": {"ppo": {"minibatches": 4}},
            "train": {
                "total_frames": 240,
                "eval_tasks": 21,
                "progress_bar": False,
                "figures": False,
            },
        }
    )
    Trainer(config, tmp_path / "run").train()
    out = tmp_path / "check.json"
    report = module.main(["--label", "t", "--runs", str(tmp_path / "run"), "--out", str(out)])
    (run,) = report["runs"]
    assert len(run["goals"]) == 21 and all(len(g["returns"]) == 4 for g in run["goals"])
    pooled = report["summary"]["pooled"]
    assert sum(group["goals"] for group in pooled.values()) == 21
