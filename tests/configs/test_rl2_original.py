"""``algo=rl2_original`` resolves to the official GridNavi RL2 configuration, refuses the families
whose RL2 file is not transcribed, and trains with the original's policy input (issue 17).

The table is typed from lmzintgraf/varibad, ``config/gridworld/args_grid_rl2.py`` at commit
a36d251 (what each value is called there in the comment). An older version of that file in the
repository's history (commit 0dcdd46) defaulted to A2C with RMSprop and left the encoder with no
training signal at all (``disable_decoder=False`` with no decoder on, ``rlloss_through_encoder=
False``); the current one is PPO with Adam, transcribed here.
"""

from __future__ import annotations

import tempfile

import pytest
import torch

from torchrl_bamdp.cli import compose_config
from torchrl_bamdp.configs import ConfigError, load_config, schema
from torchrl_bamdp.envs import make_env, make_env_from_config
from torchrl_bamdp.trainers import Trainer
from torchrl_bamdp.trainers.agents import build_agent
from torchrl_bamdp.transforms import rl2 as rl2_transforms

ORIGINAL_GRIDNAVI_RL2 = {
    "env.num_envs": 16,  # num_processes
    "steps_per_batch": 60,  # policy_num_steps
    "env.bamdp_end": "terminated",  # use_proper_time_limits=False
    "algo.rl2_memory": "latent_relu",  # add_nonlinearity_to_latent=True
    "algo.policy_state": False,  # pass_state_to_policy=False
    "algo.encoder.latent_dim": 32,
    "algo.encoder.hidden_size": 64,  # encoder_gru_hidden_size
    "algo.encoder.obs_embed": 32,  # state_embedding_size
    "algo.encoder.action_embed": 0,  # action_embedding_size
    "algo.encoder.reward_embed": 8,  # reward_embedding_size
    "algo.ppo.encoder_grad": True,  # rlloss_through_encoder
    "algo.ppo.recurrent_minibatch": "steps",  # feed_forward_generator + recompute_embeddings
    "algo.ppo.lr": 7e-4,  # lr_policy (= lr_vae)
    "algo.ppo.adam_eps": 1e-5,  # policy_eps
    "algo.ppo.epochs": 2,  # ppo_num_epochs
    "algo.ppo.minibatches": 4,  # ppo_num_minibatch
    "algo.ppo.clip_epsilon": 0.05,  # ppo_clip_param
    "algo.ppo.value_clip": 0.05,  # ppo_use_clipped_value_loss
    "algo.ppo.entropy_coef": 0.1,  # policy_entropy_coef
    "algo.ppo.entropy_coef_final": None,
    # policy_value_loss_coef 0.5 x the original's inner 0.5 * max(huber, huber_clipped)
    "algo.ppo.critic_coef": 0.25,
    "algo.ppo.grad_clip": "per_network",  # actor_critic and encoder clipped each on its own
    "algo.ppo.gamma": 0.95,  # policy_gamma
    "algo.ppo.lmbda": 0.95,  # policy_tau
    "algo.ppo.max_grad_norm": 0.5,  # policy_max_grad_norm
    "algo.ppo.normalize_reward": True,  # norm_rew_for_policy
    "algo.ppo.normalize_input": False,  # norm_latent_for_policy=False
    "algo.ppo.hidden": [32],  # policy_layers
    "algo.ppo.activation": "tanh",
    "algo.ppo.time_features": False,
    "algo.ppo.critic_task": False,
    "algo.ppo.input_embed": 0,  # policy_latent_embedding_dim=None
}


#: config/mujoco/args_cheetah_vel_rl2.py (same commit family): 2 rollouts of 200 steps per task.
ORIGINAL_CHEETAH_VEL_RL2 = {
    **ORIGINAL_GRIDNAVI_RL2,
    "env.num_envs": 16,  # num_processes
    "env.episode_length": 200,
    "env.episodes_per_task": 2,  # max_rollouts_per_task
    "steps_per_batch": 800,  # policy_num_steps: two tasks per env and update
    "env.bamdp_end": "truncated",  # use_proper_time_limits=True
    "train.total_frames": 100_000_000,  # num_frames
    "algo.encoder.latent_dim": 128,  # "just a layer in the policy"
    "algo.encoder.hidden_size": 128,  # encoder_gru_hidden_size
    "algo.encoder.obs_embed": 32,  # state_embedding_size
    "algo.encoder.action_embed": 16,  # action_embedding_size
    "algo.encoder.reward_embed": 16,  # reward_embedding_size
    "algo.ppo.adam_eps": 1e-8,  # policy_eps
    "algo.ppo.clip_epsilon": 0.1,  # ppo_clip_param
    "algo.ppo.value_clip": 0.1,
    "algo.ppo.entropy_coef": 0.01,  # policy_entropy_coef
    "algo.ppo.gamma": 0.97,  # policy_gamma
    "algo.ppo.lmbda": 0.9,  # policy_tau
    "algo.ppo.hidden": [128],  # policy_layers
    "algo.ppo.policy_dist": "gaussian",  # DiagGaussian with a state-independent std
    "algo.ppo.init_std": 1.0,  # policy_init_std
}
ORIGINAL_RL2 = {"gridworld": ORIGINAL_GRIDNAVI_RL2, "cheetah_vel": ORIGINAL_CHEETAH_VEL_RL2}


def resolved(config, path: str):
    if "." not in path:
        return getattr(config, path)
    value = config
    for part in path.split("."):
        value = getattr(value, part)
    return value


@pytest.mark.parametrize("env", sorted(ORIGINAL_RL2))
def test_resolved_values_are_the_original_file(env):
    config = compose_config(["algo=rl2_original", f"env={env}"])
    wrong = {
        path: (resolved(config, path), value)
        for path, value in ORIGINAL_RL2[env].items()
        if resolved(config, path) != value
    }
    assert not wrong, f"{env}: (resolved, original) {wrong}"
    assert config.algo.ppo.value_clip == config.algo.ppo.clip_epsilon


def test_other_families_and_options_are_refused():
    with pytest.raises(
        ConfigError, match="transcribed for env.name in \\['gridworld', 'cheetah_vel'\\] only"
    ):
        compose_config(["algo=rl2_original", "env=cheetah_dir"])
    with pytest.raises(ConfigError, match="algo.rl2_memory and config.algo.policy_state are RL2"):
        load_config({"algo": {"name": "varibad", "policy_state": False}})
    with pytest.raises(ConfigError, match=r"algo.rl2_memory must be one of \['hidden'"):
        load_config({"algo": {"name": "rl2", "rl2_memory": "mean"}})
    # One list per concept, kept equal where the layering forbids an import.
    assert schema.RL2_MEMORIES == rl2_transforms.RL2_MEMORIES


def test_our_rl2_is_untouched():
    ours = compose_config(["algo=rl2"])
    assert (ours.algo.rl2_memory, ours.algo.policy_state) == ("hidden", True)
    assert ours.algo.ppo.lr == 1e-3 and ours.env.num_envs == 64


def test_policy_reads_the_relu_latent_only_and_reencodes_it():
    config = compose_config(["algo=rl2_original", "env.num_envs=4"])
    env = make_env(num_envs=4, seed=0)
    agent = build_agent(config, env)
    assert agent.name == "rl2_original"
    tenv = agent.transformed_env(env)
    td = tenv.reset()
    # relu(cat(mean, logvar)) of the heads on the zero hidden state: relu of their biases
    heads = agent.encoder.latent_of(torch.zeros(64))
    assert td["hyper_state"].shape == (4, 64)
    torch.testing.assert_close(td["hyper_state"][0], torch.relu(torch.cat(heads)).detach())
    with torch.no_grad():
        rollout = tenv.rollout(60, agent.actor, break_when_any_done=False)
    assert bool((rollout["hyper_state"] >= 0).all())
    reencoded = agent.reencode(rollout)
    torch.testing.assert_close(reencoded, rollout["hyper_state"], atol=1e-5, rtol=1e-5)
    reencoded.sum().backward()  # the RL loss reaches the GRU and the latent heads
    assert agent.encoder.mean_head.weight.grad is not None
    assert agent.encoder.gru.weight_ih_l0.grad.abs().sum() > 0


def test_cheetah_vel_batch_of_two_tasks_reencodes_exactly():
    """800 steps per env and update are two whole tasks: the online memory starts afresh at the
    second, and PPO's re-encoding of the batch, one row per task, gives the same hyper-state."""
    config = compose_config(["algo=rl2_original", "env=cheetah_vel", "env.num_envs=2"])
    env = make_env_from_config(config.env, seed=0)
    agent = build_agent(config, env)
    assert agent.name == "rl2_original" and agent.elbo_loss is None and not agent.aux_losses
    tenv = agent.transformed_env(env)
    torch.manual_seed(0)
    with torch.no_grad():
        rollout = tenv.rollout(config.steps_per_batch, agent.actor, break_when_any_done=False)
    assert rollout.shape == (2, 800) and rollout["hyper_state"].shape[-1] == 256
    assert not torch.equal(rollout["hyper_state"][:, 399], rollout["hyper_state"][:, 400])
    # PPO re-encodes a batch as the trainer lays it out: one row per task
    tasks = rollout.reshape(-1, config.env.horizon)
    assert tasks.shape == (4, 400)
    reencoded = agent.reencode(tasks)
    torch.testing.assert_close(reencoded, tasks["hyper_state"], atol=1e-5, rtol=1e-5)
    # the first step of the second task: the memory of the zero hidden state again
    torch.testing.assert_close(rollout["hyper_state"][:, 400], rollout["hyper_state"][:, 0])


def test_gridnavi_rl2_original_trains():
    config = compose_config(
        [
            "algo=rl2_original",
            "train.total_frames=1920",
            "train.eval_tasks=21",
            "train.progress_bar=false",
            "train.figures=false",
        ]
    )
    trainer = Trainer(config, tempfile.mkdtemp())
    assert trainer.ppo_optimizer.defaults["eps"] == 1e-5 and trainer.env.end == "terminated"
    assert trainer.elbo_optimizer is None and trainer.return_scaler is not None
    before = {k: v.clone() for k, v in trainer.agent.encoder.state_dict().items()}
    result = trainer.train()
    assert result["frames"] == 1920 and len(result["eval"]["mean"]) == 4
    after = trainer.agent.encoder.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
