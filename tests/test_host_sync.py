"""The sync-detecting mode, and the GPU path it guards: no host sync in the env step, the
hyper-state transforms or the acting policy of a sync-free env, one per optimiser step in the
updates (issue 21, item 2). Runs on the CPU: the mode sees the ops, not the device."""

from __future__ import annotations

import tempfile

import pytest
import torch
from torchrl.envs.utils import check_env_specs

from torchrl_bamdp.configs import ConfigError, load_config
from torchrl_bamdp.envs import make_env, make_env_from_config
from torchrl_bamdp.host_sync import HostSyncCounter, no_host_syncs
from torchrl_bamdp.trainers import Trainer
from torchrl_bamdp.trainers.agents import build_agent


@pytest.mark.parametrize(
    ("name", "op", "kind"),
    [
        ("item", lambda x: x[0].item(), "_local_scalar_dense"),
        ("bool", lambda x: bool((x > 1).any()), "_local_scalar_dense"),
        ("float", lambda x: float(x.sum()), "_local_scalar_dense"),
        ("mask index", lambda x: x[x > 1], "index[bool mask]"),
        ("mask write", lambda x: x.__setitem__(x > 1, 0.0), "index_put_[bool mask]"),
        ("nonzero", lambda x: x.nonzero(), "nonzero"),
        ("tolist", lambda x: x.tolist(), "tolist"),
        ("numpy", lambda x: x.numpy(), "numpy"),
    ],
)
def test_counter_sees_every_kind_of_sync(name, op, kind):
    x = torch.arange(4.0)
    with HostSyncCounter() as counter:
        op(x)
    assert counter.total == 1, (name, counter.syncs)
    (site,) = counter.syncs
    assert site.startswith(kind), site
    # Patched methods are restored on exit.
    assert torch.Tensor.tolist is not None and isinstance(x.tolist(), list)


def test_counter_ignores_device_side_work():
    x = torch.arange(6.0).reshape(2, 3)
    with no_host_syncs():
        y = torch.where(x > 2, x, -x).sum(-1)
        x.masked_fill_(x > 4, 0.0)
        torch.nn.functional.relu(y @ torch.ones(2))
        x[torch.tensor([1, 0])]  # integer indices: a gather, no sync
    with pytest.raises(AssertionError, match="1 host syncs"), no_host_syncs():
        bool(x.any())


def _sync_free_env(algo: str, name: str = "gridworld", **env):
    cfg = load_config(
        {"algo": {"name": algo}, "env": {"name": name, "num_envs": 16, "sync_free": True, **env}}
    )
    base = make_env_from_config(cfg.env, seed=0)
    agent = build_agent(cfg, base)
    return agent.transformed_env(base), agent.acting_policy


@pytest.mark.parametrize("algo", ["varibad", "rl2", "belief_oracle", "oracle"])
def test_gridnavi_step_path_has_no_host_sync(algo):
    env, policy = _sync_free_env(algo, check_actions="shape")
    assert env.base_env.sync_free
    with torch.no_grad():
        env.rollout(3, policy, break_when_any_done=False)
        with HostSyncCounter() as counter:
            # 70 steps: every inner-episode restart and a collector reset to new tasks.
            env.rollout(70, policy, break_when_any_done=False)
    assert counter.inside == 0, counter.report()


def test_point_robot_step_path_has_no_host_sync_of_ours():
    env, policy = _sync_free_env("varibad", "point_robot_sparse", check_actions="shape")
    with torch.no_grad():
        env.rollout(2, policy, break_when_any_done=False)
        with HostSyncCounter() as counter:
            env.rollout(40, policy, break_when_any_done=False)
    assert counter.own == 0, counter.report()
    # What is left is TorchRL's TanhNormal constructor (its bound checks, skipped only under
    # torch.compile or CUDA-graph capture), once per step.
    ours = [site for site in counter.syncs if "(outside)" not in site]
    assert all("torchrl/modules/distributions" in site for site in ours), counter.report()


def test_full_action_check_is_the_one_sync_left():
    env, policy = _sync_free_env("varibad", check_actions="full")
    with torch.no_grad():
        td = env.rollout(2, policy, break_when_any_done=False)[..., -1]["next"]
        with HostSyncCounter() as counter:
            for _ in range(5):
                td = env.step(policy(td))["next"]
    # GridNavi's own check: the action's min and max, two reads per step.
    assert counter.own == 10, counter.report()
    assert all("gridworld.py" in site for site in counter.syncs), counter.report()


@pytest.mark.parametrize("name", ["gridworld", "point_robot_sparse"])
def test_sync_free_env_steps_as_the_default_one(name):
    """Same first task (both draw a task per env at the first reset), same trajectory; specs."""
    rollouts = []
    for sync_free in (False, True):
        env = make_env(name, num_envs=6, seed=4, sync_free=sync_free)
        check_env_specs(env, seed=0)
        env.set_seed(4)
        torch.manual_seed(0)
        rollouts.append(env.rollout(env.horizon, break_when_any_done=False))
    default, sync_free = rollouts
    for key in ["observation", "true_observation", "reward", "episode_done", "done", "task"]:
        assert torch.equal(default["next", key], sync_free["next", key]), key


def test_sync_free_env_draws_new_tasks_only_where_it_resets():
    env = make_env("gridworld", num_envs=8, seed=1, sync_free=True)
    td = env.reset()
    before = td["task"].clone()
    mask = torch.tensor([True, False] * 4).reshape(8, 1)
    after = env.reset(td.set("_reset", mask))["task"]
    assert torch.equal(after[~mask[:, 0]], before[~mask[:, 0]])
    assert not torch.equal(after[mask[:, 0]], before[mask[:, 0]])  # seeded: 4 redraws differ


def test_updates_read_the_host_once_per_optimiser_step():
    cfg = load_config({"env": {"num_envs": 16}, "train": {"progress_bar": False}})
    trainer = Trainer(cfg, tempfile.mkdtemp())
    with torch.no_grad():
        policy = trainer.agent.acting_policy
        batch = trainer.train_env.rollout(60, policy, break_when_any_done=False)
    trainer.buffer.extend_from_batch(batch)
    ppo, elbo = cfg.algo.ppo, cfg.algo.elbo
    with HostSyncCounter() as counter:
        metrics = trainer.ppo_update(batch)
    # One finiteness test per minibatch, one read of the summed metrics (and TorchRL's and
    # PyTorch's own reads, not counted here).
    assert counter.own == ppo.epochs * ppo.minibatches + 1, counter.report()
    assert set(metrics) >= {"loss_objective", "entropy", "grad_norm", "lr"}
    with HostSyncCounter() as counter:
        metrics = trainer.elbo_update()
    assert counter.own == elbo.updates_per_iteration + 2, counter.report()
    assert metrics["grad_norm_max"] >= metrics["grad_norm"] > 0


def test_config_fields_are_checked():
    with pytest.raises(ConfigError, match=r"env.check_actions must be one of \['full', 'shape'"):
        load_config({"env": {"check_actions": "values"}})
    with pytest.raises(ConfigError, match="config.env.sync_free must be true or false"):
        load_config({"env": {"sync_free": "yes"}})
    assert load_config({}).env.sync_free is None


def test_gpu_preset_trains_on_the_cpu_too(tmp_path):
    """``preset=gpu`` (sync-free env, shape-only action checks) runs end to end anywhere."""
    from torchrl_bamdp.cli import compose_config

    config = compose_config(
        [
            "preset=gpu",
            "device=cpu",
            "env.num_envs=16",
            "train.total_frames=1920",
            "train.eval_tasks=21",
            "train.progress_bar=false",
            "train.figures=false",
        ]
    )
    assert (config.env.sync_free, config.env.check_actions) == (True, "shape")
    trainer = Trainer(config, tmp_path)
    assert trainer.env.sync_free and not trainer.env.task_env.check_action_values
    result = trainer.train()
    assert result["frames"] == 1920 and len(result["eval"]["mean"]) == 4


def test_switching_env_switches_without_host_syncs_and_as_the_default_one():
    from torchrl_bamdp.envs.switching import make_switching_env

    rollouts = []
    for sync_free in (False, True):
        env = make_switching_env(
            "gridworld",
            num_envs=8,
            horizon=40,
            hazard=0.2,
            seed=2,
            sync_free=sync_free,
            check_actions="shape",
        )
        torch.manual_seed(0)
        env.rollout(2, break_when_any_done=False)
        torch.manual_seed(0)
        with HostSyncCounter() as counter:
            rollouts.append(env.rollout(30, break_when_any_done=False))
        if sync_free:
            assert counter.own == 0, counter.report()
    assert rollouts[1]["next", "task_switched"].any()
    for key in ["observation", "reward", "task", "task_switched"]:
        assert torch.equal(rollouts[0]["next", key], rollouts[1]["next", key]), key


def test_action_check_choices_are_one_list():
    from torchrl_bamdp.configs import schema
    from torchrl_bamdp.envs import bamdp

    # The schema may not import torch (configs validate without it): kept equal here.
    assert schema.CHECK_ACTIONS == bamdp.CHECK_ACTIONS
