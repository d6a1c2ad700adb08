"""The trainer's PPO update is the same with TensorClipPPOLoss as with TorchRL's ClipPPOLoss.

One collected batch per configuration, one ``Trainer.ppo_update`` from the same parameters,
optimiser state and random stream with each loss: the parameters after it must be identical.
The configurations cover the three policy distributions, RL2's re-encoded minibatches of whole
tasks, the original's value clipping and per-batch advantage normalisation.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torchrl.objectives import ClipPPOLoss

from torchrl_bamdp.cli import compose_config
from torchrl_bamdp.objectives import TensorClipPPOLoss
from torchrl_bamdp.trainers import Trainer
from torchrl_bamdp.trainers.trainer import ppo_loss_arguments

COMMON = [
    "env.num_envs=4",
    "algo.ppo.minibatches=4",
    "algo.ppo.epochs=2",
    "train.eval_interval=0",
    "train.checkpoint_interval=0",
    "train.progress_bar=false",
    "train.figures=false",
    "train.parallel_updates=false",
]
CONFIGS = {
    "gridworld_varibad": ["env=gridworld", "algo=varibad"],
    "gridworld_rl2": ["env=gridworld", "algo=rl2"],
    "gridworld_varibad_original": ["env=gridworld", "algo=varibad_original"],
    "point_robot_varibad_tanh_normal": ["env=point_robot_sparse", "algo=varibad"],
    "point_robot_varibad_original_gaussian": ["env=point_robot_sparse", "algo=varibad_original"],
}


def _reference_loss(trainer: Trainer) -> ClipPPOLoss:
    arguments = ppo_loss_arguments(trainer.config.algo.ppo)
    arguments["entropy_coeff"] = float(trainer.ppo_loss.entropy_coeff)  # after its schedule
    return ClipPPOLoss(trainer.agent.actor, trainer.agent.critic, functional=False, **arguments)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_ppo_update_matches_clip_ppo_loss(name, tmp_path):
    config = compose_config([*CONFIGS[name], *COMMON])
    trainer = Trainer(config, tmp_path / "run")
    assert isinstance(trainer.ppo_loss, TensorClipPPOLoss)
    captured = {}
    update = trainer.ppo_update

    def capture(batch):
        captured["batch"] = batch.clone()
        return update(batch)

    trainer.ppo_update = capture
    trainer._train_frames(config.frames_per_batch)
    trainer.ppo_update = update
    batch = captured["batch"]

    parameters = trainer.agent.policy_parameters()
    start = [p.detach().clone() for p in parameters]
    optimiser = copy.deepcopy(trainer.ppo_optimizer.state_dict())
    after, metrics = {}, {}
    for label, loss in (("tensor", trainer.ppo_loss), ("torchrl", _reference_loss(trainer))):
        with torch.no_grad():
            for p, p0 in zip(parameters, start, strict=True):
                p.copy_(p0)
        # Optimizer.load_state_dict keeps the given tensors and Adam updates them in place.
        trainer.ppo_optimizer.load_state_dict(copy.deepcopy(optimiser))
        trainer.ppo_loss = loss
        torch.manual_seed(0)
        metrics[label] = trainer.ppo_update(batch.clone())
        after[label] = [p.detach().clone() for p in parameters]
    moved = max(float((a - s).abs().max()) for a, s in zip(after["torchrl"], start, strict=True))
    assert moved > 1e-4  # the update did something
    for a, b in zip(after["tensor"], after["torchrl"], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert metrics["tensor"] == metrics["torchrl"]
