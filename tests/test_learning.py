"""End-to-end learning checks: a short seeded VariBAD run must clearly beat a random policy."""

from __future__ import annotations

import pytest
import torch

from torchrl_bamdp.configs import load_config
from torchrl_bamdp.policies import BayesOptimalGridNavi, uniform_random_policy
from torchrl_bamdp.trainers import Trainer


def _train(tmp_path, frames: int, eval_tasks: int) -> tuple[Trainer, dict]:
    config = load_config(
        {
            "seed": 0,
            "train": {
                "total_frames": frames,
                "eval_interval": 0,
                "eval_tasks": eval_tasks,
                "checkpoint_interval": 0,
                "progress_bar": False,
                "figures": False,
                "eval_deterministic": False,
            },
        }
    )
    trainer = Trainer(config, tmp_path / "run")
    return trainer, trainer.train()


def test_short_training_clearly_beats_a_random_policy(tmp_path):
    torch.manual_seed(0)
    trainer, result = _train(tmp_path, frames=384_000, eval_tasks=210)
    trained = torch.tensor(result["eval"]["mean"])
    random = trainer.evaluate(210, policy=uniform_random_policy(trainer.env.action_spec.n)).returns
    random_total = random.sum(1)
    # The same 210 seeded test tasks; the margin is many standard errors of the random policy.
    stderr = float(random_total.std() / random_total.numel() ** 0.5)
    assert trained.sum() > random_total.mean() + max(2.0, 8 * stderr), (trained, random.mean(0))


@pytest.mark.slow
def test_longer_training_approaches_the_bayes_optimal_returns(tmp_path):
    """The learning bar of the benchmark, in a slow test (about 10 minutes on 2 cores)."""
    _, result = _train(tmp_path, frames=8_000_000, eval_tasks=420)
    optimal = BayesOptimalGridNavi()
    bayes = optimal.expected_returns()
    trained = result["eval"]["mean"]
    assert trained[0] >= 0.8 * bayes[0]
    assert trained[2] >= 0.8 * optimal.known_goal_return()
