"""Collection and training with the MuJoCo simulators in worker processes (``env.workers``)."""

from __future__ import annotations

import torch
from torchrl.collectors import Collector

from torchrl_bamdp.configs import load_config
from torchrl_bamdp.envs import make_env_from_config
from torchrl_bamdp.trainers import Trainer
from torchrl_bamdp.trainers.agents import build_agent

TINY = {
    "env": {"name": "cheetah_vel", "num_envs": 4, "episode_length": 6, "episodes_per_task": 2},
    "algo": {"ppo": {"minibatches": 2, "hidden": [16]}, "elbo": {"batch_trajectories": 2}},
    "train": {
        "total_frames": 96,
        "eval_tasks": 2,
        "eval_interval": 1,
        "progress_bar": False,
        "figures": False,
    },
}


def _collect(workers: int) -> torch.Tensor:
    config = load_config({**TINY, "env": {**TINY["env"], "workers": workers}})
    env = make_env_from_config(config.env, seed=3)
    torch.manual_seed(0)
    agent = build_agent(config, env)
    collector = Collector(
        agent.transformed_env(env),
        agent.acting_policy,
        frames_per_batch=config.frames_per_batch,
        total_frames=2 * config.frames_per_batch,
        auto_register_policy_transforms=False,
    )
    batches = [batch.clone() for batch in collector]
    collector.shutdown()
    return torch.cat(batches, dim=1)


def test_belief_collection_over_worker_simulators_equals_in_process():
    """VariBAD's belief transform + policy over a 2-worker MuJoCo env: same batches as in process
    (two whole tasks, an inner-episode reset in each)."""
    local, remote = _collect(0), _collect(2)
    assert local.shape == remote.shape == (4, 24)
    for key in [
        "action",
        ("next", "observation"),
        ("next", "reward"),
        ("next", "belief", "mean"),
        ("next", "hyper_state"),
        ("next", "episode"),
    ]:
        assert torch.equal(local[key], remote[key]), key
    assert not torch.equal(
        local["next", "belief", "mean"][:, 0], local["next", "belief", "mean"][:, 5]
    )


def test_trainer_with_workers_trains_evaluates_and_stops_its_workers(tmp_path):
    config = load_config({**TINY, "env": {**TINY["env"], "workers": 2}})
    trainer = Trainer(config, tmp_path)
    pids = trainer.env.task_env.worker_pids
    assert len(pids) == 2
    result = trainer.train()
    # tuning/_mujoco.yaml meta-tests the first 5 rollouts (Fig 4), now in Python as on the CLI
    assert result["frames"] == 96 and len(result["eval"]["mean"]) == config.train.eval_episodes
    trainer.env.close()
    assert trainer.env.task_env.worker_pids == ()
