"""The task-switching BAMDP end to end: the CLI-built env, each new agent through the real Trainer,
and bamdp-eval on the switching env (issue 20, item 2)."""

from __future__ import annotations

import json
import math

import pytest
from torchrl.envs.utils import check_env_specs

from torchrl_bamdp.cli import compose_config, eval_main
from torchrl_bamdp.configs import ConfigError
from torchrl_bamdp.envs import SwitchingBAMDPEnv, make_env_from_config
from torchrl_bamdp.trainers import Trainer
from torchrl_bamdp.trainers.agents import build_agent, check_config_against_env
from torchrl_bamdp.trainers.runs import evaluate_run_switching
from torchrl_bamdp.transforms import SwitchingGridBelief

# A tiny switching GridNavi: 4 envs x 30 steps a batch, 2 batches, 10 test tasks (not stratified).
TINY = [
    "env.switching_hazard=0.1",
    "env.episode_length=30",
    "env.episodes_per_task=1",
    "env.num_envs=4",
    "env.grid_size=3",
    "algo.ppo.minibatches=4",
    "algo.elbo.batch_trajectories=4",
    "algo.elbo.updates_per_iteration=1",
    "train.total_frames=240",
    "train.eval_tasks=10",
    "train.eval_stratified=false",
    "train.eval_interval=0",
    "train.progress_bar=false",
    "train.figures=false",
]


@pytest.mark.parametrize("algo", ["varibad_switching", "belief_oracle"])
def test_cli_built_env_passes_check_env_specs(algo: str) -> None:
    config = compose_config([f"algo={algo}", *TINY])
    env = make_env_from_config(config.env, seed=0)
    assert isinstance(env, SwitchingBAMDPEnv) and env.hazard == 0.1 and env.horizon == 30
    agent = build_agent(config, env)
    check_env_specs(agent.transformed_env(env))
    if algo == "belief_oracle":  # the exact switching posterior, not the fixed-task one
        parts = list(agent.make_transforms())
        assert isinstance(parts[0], SwitchingGridBelief) and parts[0].hazard == 0.1
    else:
        # The hyper-state transforms read nothing privileged.
        read = {
            k if isinstance(k, str) else k[-1] for t in agent.make_transforms() for k in t.in_keys
        }
        assert not read & {"task", "task_switched"}


def test_env_and_config_must_agree_on_the_hazard() -> None:
    config = compose_config(["algo=varibad_switching", *TINY])
    other = make_env_from_config(config.env, seed=0, switching_hazard=0.2)
    with pytest.raises(ConfigError, match="switching_hazard=0.1 but the env"):
        check_config_against_env(config, other)


@pytest.mark.parametrize("algo", ["varibad_switching", "belief_oracle"])
def test_agent_trains_through_the_trainer_and_bamdp_eval(algo: str, tmp_path, capsys) -> None:
    config = compose_config([f"algo={algo}", *TINY, f"run_dir={tmp_path}"])
    result = Trainer(config, tmp_path).train()
    assert result["frames"] == 240 and result["iterations"] == 2
    assert result["eval"]["episodes"] == 1 and result["eval"]["num_tasks"] == 10
    metrics = (tmp_path / "metrics.csv").read_text()
    if algo == "varibad_switching":
        assert "elbo/loss_reward" in metrics and "elbo/loss_kl" in metrics
    # bamdp-eval on a switching run: its own env, the return per 100 steps.
    eval_main([f"run_dir={tmp_path}", "tasks=10"])
    report = json.loads((tmp_path / "switching_eval.json").read_text())["runs"][0]
    assert report["algo"] == algo and report["hazard"] == 0.1 and report["horizon"] == 30
    assert report["return_per_100"] == pytest.approx(report["total_mean"] * 100 / 30)
    assert "return per 100 steps" in capsys.readouterr().out


def test_fixed_task_run_is_tested_on_the_switching_env(tmp_path) -> None:
    fixed = [
        "env.num_envs=4",
        "env.grid_size=3",
        "env.episode_length=6",
        "env.episodes_per_task=2",
        "algo.ppo.minibatches=4",
        "algo.elbo.batch_trajectories=4",
        "algo.elbo.updates_per_iteration=1",
        "train.total_frames=48",
        "train.eval_tasks=5",
        "train.eval_interval=0",
        "train.progress_bar=false",
        "train.figures=false",
    ]
    Trainer(compose_config(["algo=varibad", *fixed]), tmp_path).train()
    report = evaluate_run_switching(tmp_path, hazard=0.2, horizon=25, tasks=5)
    assert report["algo"] == "varibad" and report["episodes"] == 1 and report["horizon"] == 25
    assert math.isfinite(report["return_per_100"])
    with pytest.raises(ConfigError, match="both hazard and horizon"):
        evaluate_run_switching(tmp_path, hazard=0.2)
