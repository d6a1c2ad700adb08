"""Every ``algo=`` choice builds its agent, trains (or is evaluated) and resumes."""

from __future__ import annotations

import pytest
import torch
from test_trainer import tiny

from torchrl_bamdp.cli import compose_config
from torchrl_bamdp.configs import ConfigError, load_config
from torchrl_bamdp.configs.schema import ALGO_NAMES, ENV_NAMES, SWITCHING_ONLY_ALGOS
from torchrl_bamdp.envs import make_env, make_env_from_config
from torchrl_bamdp.modules.actor_critic import find_input_normalizers
from torchrl_bamdp.policies import BayesOptimalGridNavi, GridNaviSpec
from torchrl_bamdp.trainers import Trainer, build_agent
from torchrl_bamdp.trainers.agents import REFERENCE_ALGORITHMS, TRAINED_ALGORITHMS, Agent
from torchrl_bamdp.transforms.time import TIME_FEATURES

#: The trained algorithms defined on the fixed-task BAMDP these tests build (the ones defined on
#: the task-switching env only are tested there: tests/trainers/test_switching_training.py).
FIXED_TASK_TRAINED = [n for n in TRAINED_ALGORITHMS if n not in SWITCHING_ONLY_ALGOS]


def algo_config(name: str, total_frames: int = 480, **sections) -> dict:
    data = tiny(total_frames, **sections)
    data["algo"]["name"] = name
    if name == "rl2":
        data["algo"]["ppo"]["encoder_grad"] = True
    return data


def params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def moved(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(b, p) for b, p in zip(before, module.parameters(), strict=True))


def test_every_algorithm_is_built():
    assert set(TRAINED_ALGORITHMS) | set(REFERENCE_ALGORITHMS) == set(ALGO_NAMES)
    env = make_env(num_envs=2)
    # observation + belief (VariBAD: the decoded per-cell belief) + time of the task
    dims = {
        "varibad": 2 + 25 + 2,
        "rl2": 2 + 64 + 2,
        "oracle": 2 + 2 + 2,
        "belief_oracle": 2 + 25 + 2,
    }
    for name in (n for n in ALGO_NAMES if n not in SWITCHING_ONLY_ALGOS):
        agent = build_agent(load_config(algo_config(name)), env)
        assert agent.name == name
        assert agent.trains_policy == (name in TRAINED_ALGORITHMS)
        td = agent.transformed_env(env).reset()
        if name in dims:
            assert td["hyper_state"].shape == (2, dims[name])
        agent.actor(td)
        assert td["action"].shape == (2,)


@pytest.mark.parametrize("name", FIXED_TASK_TRAINED)
def test_trained_algorithms_train_a_few_iterations(name, tmp_path):
    trainer = Trainer(load_config(algo_config(name, total_frames=720)), tmp_path)
    actor = params(trainer.agent.actor)
    encoder = params(trainer.agent.encoder) if trainer.agent.encoder is not None else None
    result = trainer.train()
    assert result["frames"] == 720 and result["iterations"] == 3
    assert len(result["eval"]["mean"]) == 4
    assert all(-1.5 - 1e-5 <= m <= 15.0 for m in result["eval"]["mean"])
    assert moved(actor, trainer.agent.actor)
    if name in ("varibad", "rl2"):
        # VariBAD's encoder moves by the ELBO; RL2's by the PPO loss through re-encoding
        assert moved(encoder, trainer.agent.encoder)
    assert (tmp_path / "checkpoints" / "last.pt").exists()


def test_rl2_encoder_is_trained_by_ppo_only(tmp_path):
    trainer = Trainer(load_config(algo_config("rl2")), tmp_path)
    assert trainer.agent.elbo_loss is None and trainer.elbo_optimizer is None
    encoder_params = {id(p) for p in trainer.agent.encoder.parameters()}
    optimised = {id(p) for g in trainer.ppo_optimizer.param_groups for p in g["params"]}
    assert encoder_params <= optimised
    with torch.no_grad():
        batch = trainer.train_env.rollout(60, trainer.agent.actor, break_when_any_done=False)
    before = params(trainer.agent.encoder)
    trainer.ppo_update(batch)
    assert moved(before, trainer.agent.encoder)
    assert trainer.elbo_update() == {}


@pytest.mark.parametrize(
    ("env_name", "memory", "memory_dim"),
    [("cheetah_dir", "latent_relu", 10), ("gridworld", "hidden", 64)],
)
def test_rl2_policy_reads_the_latent_on_mujoco_and_the_hidden_state_on_gridnavi(
    env_name, memory, memory_dim
):
    """The shipped RL2: relu(mean, logvar) of the latent heads (algo/rl2.yaml, measured on
    HalfCheetahDir); GridNavi keeps the whole hidden state its results were measured with."""
    config = compose_config(
        ["algo=rl2", f"env={env_name}", "env.num_envs=2", "algo.ppo.minibatches=2"]
    )
    assert config.algo.rl2_memory == memory
    env = make_env_from_config(config.env, seed=0)
    agent = build_agent(config, env)
    td = agent.transformed_env(env).reset()
    obs_dim = env.observation_spec["observation"].shape[-1]
    times = TIME_FEATURES if config.algo.ppo.time_features else 0
    assert td["hyper_state"].shape == (2, obs_dim + memory_dim + times)
    if memory == "latent_relu":
        heads = agent.encoder.latent_of(torch.zeros(agent.encoder.hidden_size))
        torch.testing.assert_close(
            td["hyper_state"][0, obs_dim:], torch.relu(torch.cat(heads)).detach()
        )


def test_rl2_requires_encoder_gradients():
    data = algo_config("rl2")
    data["algo"]["ppo"]["encoder_grad"] = False
    with pytest.raises(ConfigError, match="algo.ppo.encoder_grad"):
        load_config(data)


@pytest.mark.parametrize("name", ["rl2", "oracle"])
def test_resume_restores_every_part(name, tmp_path):
    first = Trainer(load_config(algo_config(name, total_frames=240)), tmp_path)
    first.train()
    again = Trainer(load_config(algo_config(name, total_frames=480)), tmp_path)
    assert again.frames == 240
    for part in ("actor", "critic", "encoder"):
        module = getattr(first.agent, part)
        if module is None:
            continue
        for a, b in zip(module.parameters(), getattr(again.agent, part).parameters(), strict=True):
            assert torch.equal(a, b), part
    assert again.train()["frames"] == 480


def test_bayes_optimal_is_evaluated_not_trained(tmp_path):
    trainer = Trainer(load_config(algo_config("bayes_optimal", total_frames=10_000)), tmp_path)
    assert trainer.ppo_optimizer is None
    result = trainer.train()
    assert result["frames"] == 0
    expected = BayesOptimalGridNavi().expected_returns()
    assert result["eval"]["mean"] == pytest.approx(expected, abs=1e-5)
    # any number of episodes at meta-test
    six = trainer.evaluate(num_tasks=21, episodes=6)
    six_episodes = BayesOptimalGridNavi(GridNaviSpec(episodes_per_task=6)).expected_returns()
    assert six.mean == pytest.approx(six_episodes, abs=1e-5)


def test_random_is_seeded(tmp_path):
    a = Trainer(load_config(algo_config("random")), tmp_path / "a").train()["eval"]["mean"]
    b = Trainer(load_config(algo_config("random")), tmp_path / "b").train()["eval"]["mean"]
    data = algo_config("random")
    data["seed"] = 1
    c = Trainer(load_config(data), tmp_path / "c").train()["eval"]["mean"]
    assert a == b and a != c
    assert all(-1.5 - 1e-5 <= m < 0 for m in a)


@pytest.mark.parametrize("env_name", ENV_NAMES)
@pytest.mark.parametrize("name", ["varibad", "rl2"])
def test_every_env_family_trains_a_few_iterations(env_name, name, tmp_path):
    data = algo_config(name, total_frames=40)
    data["env"] = {"name": env_name, "num_envs": 2, "episode_length": 10, "episodes_per_task": 2}
    data["algo"]["ppo"]["minibatches"] = 2
    data["algo"]["elbo"]["batch_trajectories"] = 2
    data["train"].update({"eval_tasks": 42 if env_name == "gridworld" else 2, "figures": False})
    trainer = Trainer(load_config(data), tmp_path)
    actor = params(trainer.agent.actor)
    result = trainer.train()
    # The family's tuning may meta-test more rollouts (the MuJoCo families: Fig 4's first 5).
    episodes = trainer.config.train.eval_episodes or 2
    assert result["frames"] == 40 and len(result["eval"]["mean"]) == episodes
    assert all(torch.isfinite(torch.tensor(result["eval"]["mean"])))
    assert moved(actor, trainer.agent.actor)


def test_trainer_trains_a_user_made_agent(tmp_path):
    """A custom hyper-state transform + policy, trained by the same loop."""
    from torchrl.envs.transforms import Compose

    from torchrl_bamdp.modules.actor_critic import make_actor_critic
    from torchrl_bamdp.trainers import Agent
    from torchrl_bamdp.transforms import hyper_state_transform

    def observation_only(config, env):
        actor, critic = make_actor_critic(2, env.action_spec, [16])
        return Agent(
            "custom", actor, critic, lambda: Compose(hyper_state_transform(belief_keys=[]))
        )

    trainer = Trainer(load_config(algo_config("oracle")), tmp_path, agent=observation_only)
    assert trainer.agent.name == "custom"
    before = params(trainer.agent.actor)
    assert trainer.train()["frames"] == 480
    assert moved(before, trainer.agent.actor)


@pytest.mark.parametrize("name", FIXED_TASK_TRAINED)
def test_every_trained_agent_can_be_time_aware(name):
    env = make_env(num_envs=2)
    data = algo_config(name)
    data["algo"]["ppo"]["time_features"] = False
    plain = build_agent(load_config(data), env)
    data["algo"]["ppo"]["time_features"] = True
    agent = build_agent(load_config(data), env)
    td_plain = plain.transformed_env(env).reset()
    td = agent.transformed_env(env).reset()
    width = td_plain["hyper_state"].shape[-1]
    assert td["hyper_state"].shape == (2, width + 2)
    assert td["hyper_state"][:, width:].eq(0).all()
    agent.actor(td)
    assert td["action"].shape == (2,)
    assert agent.critic(td)["state_value"].shape == (2, 1)


def reencode_one_task(data: dict) -> tuple[torch.Tensor, Agent]:
    """Collect one whole task with ``data``'s agent, re-encode it and check it equals the
    online hyper-state; returns the re-encoded one (with gradients)."""
    env = make_env(num_envs=2, seed=0)
    agent = build_agent(load_config(data), env)
    with torch.no_grad():
        rollout = agent.transformed_env(env).rollout(60, agent.actor, break_when_any_done=False)
    # Inner-episode ends where the true last state is not the start state are covered.
    ends = rollout["next", "episode_done"][..., 0] & ~rollout["next", "done"][..., 0]
    assert bool((rollout["next", "true_observation"][ends] != 0).any())
    reencoded = agent.reencode(rollout)
    torch.testing.assert_close(reencoded, rollout["hyper_state"], atol=1e-5, rtol=1e-5)
    return reencoded, agent


def test_reencoded_hyper_state_carries_the_same_time_features():
    data = algo_config("rl2")
    data["algo"]["ppo"]["time_features"] = True
    reencoded, _ = reencode_one_task(data)
    assert reencoded.shape[-1] == 2 + 64 + 2


def test_time_aware_varibad_trains_and_meta_tests_on_more_episodes(tmp_path):
    data = tiny(480)
    data["algo"]["ppo"]["time_features"] = True
    data["train"]["eval_episodes"] = 6
    trainer = Trainer(load_config(data), tmp_path)
    result = trainer.train()
    assert result["frames"] == 480
    assert len(result["eval"]["mean"]) == 6


def test_time_features_must_be_a_bool():
    with pytest.raises(ConfigError, match="algo.ppo.time_features"):
        load_config({"algo": {"ppo": {"time_features": "yes"}}})


@pytest.mark.parametrize("policy_belief", ["decoded", "latent+decoded"])
def test_varibad_policy_on_the_decoded_belief_trains(policy_belief, tmp_path):
    data = algo_config("varibad", total_frames=480)
    data["algo"]["policy_belief"] = policy_belief
    trainer = Trainer(load_config(data), tmp_path)
    width = {"decoded": 2 + 25, "latent+decoded": 2 + 10 + 25}[policy_belief]
    assert trainer.train_env.reset()["hyper_state"].shape[-1] == width + 2  # + time
    actor = params(trainer.agent.actor)
    assert trainer.train()["frames"] == 480
    assert moved(actor, trainer.agent.actor)


def test_reencoded_decoded_belief_equals_the_online_one_and_reaches_the_encoder():
    data = algo_config("varibad")
    data["algo"]["policy_belief"] = "latent+decoded"
    data["algo"]["ppo"]["encoder_grad"] = True
    reencoded, agent = reencode_one_task(data)
    reencoded[..., -27:-2].sum().backward()  # the decoded belief (before the 2 time features)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in agent.encoder.parameters())


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"algo": {"name": "rl2", "ppo": {"encoder_grad": True}}}, "a VariBAD algorithm"),
        ({"env": {"name": "point_robot_sparse"}}, "reward decoder 'mse'"),
        ({}, "must be one of"),
    ],
)
def test_policy_belief_is_validated_at_config_load(changes, match):
    data = {"algo": {"policy_belief": "decoded" if changes else "probs"}}
    for section, values in changes.items():
        data.setdefault(section, {}).update(values)
        if section == "algo":
            data["algo"]["policy_belief"] = "decoded"
    with pytest.raises(ConfigError, match=match):
        load_config(data)


@pytest.mark.parametrize("name", FIXED_TASK_TRAINED)
def test_privileged_critic_trains_and_tracks_the_task(name, tmp_path):
    data = algo_config(name)
    data["algo"]["ppo"]["critic_task"] = True
    data["algo"]["ppo"]["normalize_input"] = True  # rl2_original's default is off
    trainer = Trainer(load_config(data), tmp_path)
    actor, critic = trainer.agent.actor, trainer.agent.critic
    assert critic.in_keys[-1] == "task" and "task" not in actor.in_keys
    before = params(critic)
    assert trainer.train()["frames"] == 480
    assert moved(before, critic)
    hyper_norm, task_norm = find_input_normalizers(critic)
    # Both statistics saw every frame of the run; the goals lie on the 5 x 5 grid.
    assert int(task_norm.count) == int(hyper_norm.count) == 480
    assert task_norm.mean.ge(0).all() and task_norm.mean.le(4).all()
    assert task_norm.var.gt(0).all()


def test_critic_task_must_be_a_bool():
    with pytest.raises(ConfigError, match="algo.ppo.critic_task"):
        load_config({"algo": {"ppo": {"critic_task": "yes"}}})


@pytest.mark.parametrize("env_name", ["gridworld", "point_robot_sparse"])
def test_elbo_semantics_reach_the_loss_and_the_decoders(env_name):
    semantics = {
        "kl_reduction": "sum",
        "task_reduction": "sum",
        "subsample_mode": "original",
        "mse_reduction": "mean",
    }
    data = {
        "env": {"name": env_name},
        "algo": {"name": "varibad", "decoders": {"state": True, "task": True}, "elbo": semantics},
    }
    config = load_config(data)
    env = make_env_from_config(config.env, seed=0, num_envs=2)
    loss = build_agent(config, env).elbo_loss
    assert (loss.kl_reduction, loss.task_reduction, loss.subsample_mode) == (
        "sum",
        "sum",
        "original",
    )
    assert loss.state_decoder.mse_reduction == loss.task_decoder.mse_reduction == "mean"
    if env_name == "point_robot_sparse":
        assert loss.reward_decoder.mse_reduction == "mean"
    # the defaults are ours
    default = build_agent(load_config({"env": {"name": env_name}}), env).elbo_loss
    assert (default.kl_reduction, default.subsample_mode) == ("mean", "rescaled")
    env.close()
