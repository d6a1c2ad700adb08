"""benchmarks/velocity_tracking.py: which velocity a HalfCheetahVel agent runs at, per task."""

from __future__ import annotations

import json
import math
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch

from torchrl_bamdp.cli import train_to_budget

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "velocity_tracking.py"


@pytest.fixture(scope="module")
def script(load_script):
    return load_script(SCRIPT)


def test_the_forward_velocity_is_element_8_of_the_observation(script):
    env = gymnasium.make("HalfCheetah-v5")
    env.reset(seed=0)
    for _ in range(5):
        obs, *_ = env.step(env.action_space.sample())
    assert obs[script.FORWARD_VELOCITY] == pytest.approx(env.unwrapped.data.qvel[0])


def test_fits_of_a_tracking_and_a_one_speed_agent(script):
    run = {
        "target": [0.5, 1.0, 2.0, 2.5],
        "velocity": [[0.5, 1.2], [1.0, 1.2], [2.0, 1.2], [2.5, 1.2]],  # rollout 1 tracks
        "returns": [[-10.0, -20.0]] * 4,
    }
    tracking, one_speed = script.summarise(run)
    assert tracking["slope"] == pytest.approx(1.0) and tracking["r2"] == pytest.approx(1.0)
    assert tracking["intercept"] == pytest.approx(0.0) and tracking["mean_abs_error"] == 0.0
    assert one_speed["slope"] == pytest.approx(0.0) and one_speed["intercept"] == 1.2
    # |1.2 - g| = 0.7, 0.2, 0.8, 1.3; the best single speed is the median 1.5: 1.0, 0.5, 0.5, 1.0
    assert one_speed["mean_abs_error"] == pytest.approx(0.75)
    assert one_speed["best_single_speed"] == 1.5
    assert one_speed["best_single_speed_abs_error"] == pytest.approx(0.75)
    assert one_speed["mean_return"] == -20.0


def test_a_run_is_meta_tested_and_its_velocities_read(script, tmp_path):
    run_dir = tmp_path / "run"
    tiny = ["env=cheetah_vel", "algo=varibad", "env.num_envs=4", "env.episode_length=8"]
    tiny += ["train.eval_tasks=4", "algo.ppo.minibatches=2"]
    train_to_budget(run_dir, tiny, 64, 5.0, 64)
    out = tmp_path / "tracking.json"
    report = script.main(
        ["--runs", str(run_dir), "--tasks", "16", "--rollouts", "2", "--out", str(out)]
    )
    (run,) = report["runs"]
    assert run["algo"] == "varibad" and run["frames"] == 64
    assert len(run["target"]) == 16 and np.array(run["velocity"]).shape == (16, 2)
    assert all(0.0 <= g < 3.0 for g in run["target"])
    assert [row["rollout"] for row in run["fits"]] == [1, 2]
    # The belief probed at the steps the 16-step rollout has (10 of 10, 50, 199).
    assert list(run["memory_probe_loo_r2"]) == ["10"]
    assert math.isfinite(run["memory_probe_loo_r2"]["10"])
    assert json.loads(out.read_text())["runs"][0]["velocity"] == run["velocity"]


def test_the_probes_closed_form_equals_refitting_without_each_task(script):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(12, 3, generator=generator, dtype=torch.float64)
    target = features @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    target = target + 0.3 * torch.randn(12, generator=generator, dtype=torch.float64)
    ridge = 0.1
    x = torch.cat([torch.ones(12, 1, dtype=torch.float64), features], dim=1)
    penalty = ridge * torch.eye(4, dtype=torch.float64)
    penalty[0, 0] = 0.0
    predictions = []
    for i in range(12):  # refit on the other 11 tasks, predict task i
        keep = torch.arange(12) != i
        weights = torch.linalg.solve(x[keep].T @ x[keep] + penalty, x[keep].T @ target[keep])
        predictions.append(x[i] @ weights)
    residual = target - torch.stack(predictions)
    expected = 1 - residual.square().sum() / (target - target.mean()).square().sum()
    assert script.loo_r2(features, target, ridge=ridge) == pytest.approx(float(expected), abs=1e-9)


def test_bad_arguments_are_refused_before_any_run_is_opened(script, tmp_path, capsys):
    for name in ("--tasks", "--rollouts"):
        with pytest.raises(SystemExit):
            script.main(["--runs", str(tmp_path / "missing"), name, "0"])
        assert f"{name} must be >= 1 (got 0)" in capsys.readouterr().err
