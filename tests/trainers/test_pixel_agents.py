"""Agents on image observations (issue 20, item 3): the hyper-state keeps its contract, each
pixel agent trains a few iterations through the real Trainer, resumes exactly, and is
meta-tested and drawn (belief heatmap) like a state agent; from the command line too."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from test_trainer import _merge, tiny

from torchrl_bamdp.cli import compose_config, eval_main
from torchrl_bamdp.configs import ConfigError, load_config
from torchrl_bamdp.envs import make_env_from_config
from torchrl_bamdp.evaluation.report import record_belief_rollout
from torchrl_bamdp.modules.actor_critic import find_input_normalizers
from torchrl_bamdp.modules.pixels import PixelEmbedding
from torchrl_bamdp.trainers import Trainer, build_agent

FRAME = 3 * 32 * 32


def pixel_config(
    name: str = "varibad", policy: str = "separate", env: str = "gridworld", **more
) -> dict:
    """A tiny pixel run: 2 iterations, one meta-test at the end, no figures."""
    data = tiny(480, env={"observation": "pixels"}, algo={"name": name, "cnn": {"policy": policy}})
    _merge(data, {"train": {"eval_interval": 0, "figures": False}})
    if env != "gridworld":  # short point-robot tasks: 2 episodes of 10 steps
        env_cfg = {"name": env, "episode_length": 10, "episodes_per_task": 2}
        _merge(data, {"env": env_cfg, "train": {"eval_tasks": 4, "total_frames": 160}})
    _merge(data, more)
    return data


def params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def moved(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(b, p) for b, p in zip(before, module.parameters(), strict=True))


def cnns(module: torch.nn.Module) -> list[PixelEmbedding]:
    return [m for m in module.modules() if isinstance(m, PixelEmbedding)]


@pytest.mark.parametrize(
    ("policy", "state_part"), [("separate", FRAME), ("shared", 32)]
)  # shared: the encoder's obs_embed features
def test_pixel_hyper_state_is_one_flat_vector(policy, state_part):
    config = load_config(pixel_config(policy=policy))
    env = make_env_from_config(config.env, seed=0)
    agent = build_agent(config, env)
    td = agent.transformed_env(env).reset()
    # [what it holds of the frame, decoded per-cell belief (25), time of the task (2)]
    assert td["hyper_state"].shape == (4, state_part + 25 + 2)
    if policy == "separate":
        assert torch.equal(td["hyper_state"][:, :FRAME], td["observation"].flatten(1) / 255.0)
        (norm,) = find_input_normalizers(agent.actor)
        assert norm.raw_dims == FRAME  # the pixels reach the CNN unnormalised
        assert len(cnns(agent.actor)) == 1 and cnns(agent.actor) == cnns(agent.critic)
    else:
        assert cnns(agent.actor) == []  # the policy has no CNN of its own
        features = agent.encoder.embed_observation(td["observation"])
        assert torch.allclose(td["hyper_state"][:, :state_part], features)
    agent.actor(td)
    assert td["action"].shape == (4,)


def test_normaliser_leaves_the_pixels_as_they_are():
    config = load_config(pixel_config())
    env = make_env_from_config(config.env, seed=0)
    agent = build_agent(config, env)
    (norm,) = find_input_normalizers(agent.actor)
    with torch.no_grad():
        batch = agent.transformed_env(env).rollout(20, agent.actor, break_when_any_done=False)
    norm.update(batch["hyper_state"])
    x = batch["hyper_state"][:, -1]
    out = norm(x)
    assert torch.equal(out[:, :FRAME], x[:, :FRAME])
    assert not torch.equal(out[:, FRAME:], x[:, FRAME:])


@pytest.mark.parametrize(
    ("algo", "policy", "env"),
    [
        ("varibad", "separate", "gridworld"),
        ("varibad", "shared", "gridworld"),
        ("oracle", "separate", "gridworld"),
        ("varibad", "shared", "point_robot_sparse"),
        ("varibad", "separate", "point_robot_dense"),
    ],
)
def test_pixel_agents_train_a_few_iterations(algo, policy, env, tmp_path):
    trainer = Trainer(load_config(pixel_config(algo, policy, env)), tmp_path)
    agent = trainer.agent
    actor = params(agent.actor)
    encoder = params(agent.encoder) if agent.encoder is not None else None
    decoder = agent.elbo_loss.reward_decoder if agent.elbo_loss is not None else None
    result = trainer.train()
    assert result["iterations"] == 2
    assert all(torch.isfinite(torch.tensor(result["eval"]["mean"])))
    assert moved(actor, agent.actor)  # PPO moved the policy (its own CNN too, if separate)
    if policy == "separate":
        (cnn,) = cnns(agent.actor)
        assert any(p.grad is not None for p in cnn.parameters())
    if encoder is not None:
        assert moved(encoder, agent.encoder)  # the ELBO trained the encoder, its CNN included
        assert isinstance(agent.encoder.obs_encoder, PixelEmbedding)
    if env != "gridworld":  # the MSE reward decoder embeds the frames with a CNN of its own
        assert len(cnns(decoder)) == 1
    assert (tmp_path / "checkpoints" / "last.pt").exists()


def test_pixel_run_resumes_as_the_uninterrupted_run(tmp_path):
    cfg = {
        "train": {"eval_interval": 0, "checkpoint_interval": 1},
        "algo": {"ppo": {"entropy_coef_final": None}},
    }

    def run(run_dir, frames):
        data = pixel_config(**cfg)
        data["train"]["total_frames"] = frames
        Trainer(load_config(data), run_dir).train()
        rows = (run_dir / "metrics.csv").read_text().splitlines()
        return [r for r in rows if "perf/" not in r and "eval/" not in r]

    straight = run(tmp_path / "straight", 720)
    run(tmp_path / "resumed", 480)
    assert run(tmp_path / "resumed", 720) == straight


def test_belief_heatmap_and_meta_test_of_a_pixel_agent(tmp_path):
    data = pixel_config(policy="shared", train={"figures": True})
    trainer = Trainer(load_config(data), tmp_path)
    trainer.train()
    rollout = record_belief_rollout(trainer.agent, trainer.config, goal=(4, 2))
    assert rollout.positions.shape == (61, 2) and rollout.reward_probs.shape == (61, 25)
    assert int((rollout.exact_probs[0] > 0).sum()) == 21  # the exact prior, from the frames
    # The exact posterior read the cells back from the frames: a cell the agent stood on
    # without the goal's reward is ruled out from the next step on.
    for t in range(60):
        x, y = rollout.positions[t + 1].tolist()
        if (x, y) != (4, 2) and not rollout.episode_done[t + 1]:
            assert rollout.exact_probs[t + 1, x * 5 + y] == 0
    assert (tmp_path / "figures" / "fig3a_belief_rollout.png").exists()
    eval_main([f"run_dir={tmp_path}", "tasks=21", "episodes=2"])  # bamdp-eval
    report = json.loads((tmp_path / "meta_test.json").read_text())
    assert report["episodes"] == 2 and report["num_tasks"] == 21


def test_bamdp_train_on_pixels_from_the_command_line(tmp_path):
    from test_cli import TINY, TRAIN, output, run

    run_dir = tmp_path / "run"
    args = ["env=gridworld", "env.observation=pixels", "algo.cnn.policy=shared", *TINY]
    proc = run(TRAIN, [*args, "train.figures=false", f"run_dir={run_dir}"], tmp_path, timeout=300)
    assert proc.returncode == 0, output(proc)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["env"]["observation"] == "pixels" and config["env"]["image_size"] == 32
    assert (run_dir / "checkpoints" / "last.pt").exists()
    # The same overrides bamdp-train composes, refused before anything runs (exit code 2).
    with pytest.raises(ConfigError, match=r"must be one of \['state', 'pixels'\] \(got 'rgb'\)"):
        compose_config(["env.observation=rgb"])


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
