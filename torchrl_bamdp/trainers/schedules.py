"""The training schedules: settings that move linearly with the frames collected.

PPO's entropy coefficient (``algo.ppo.entropy_coef`` to ``entropy_coef_final``) and, with
``train.anneal_lr``, the PPO and ELBO learning rates (to 0). Each depends on the frame count
alone, so a resumed run continues them exactly, and all run over ``train.total_frames``.
"""

from __future__ import annotations

from typing import Any

import torch


def budget_progress(frames_before: int, total_frames: int) -> float:
    """Fraction of the frame budget collected before a batch, clamped to [0, 1].

    Examples
    --------
    >>> budget_progress(0, 1000), budget_progress(250, 1000), budget_progress(5000, 1000)
    (0.0, 0.25, 1.0)
    """
    return min(1.0, max(0.0, frames_before / total_frames))


class Schedules:
    """Apply the schedules of a config for the batch collected after ``frames_before`` frames.

    Parameters
    ----------
    config : Config
        ``train.total_frames``, ``train.anneal_lr``, ``algo.ppo.entropy_coef(_final)``, the
        base learning rates ``algo.ppo.lr`` and ``algo.elbo.lr``.
    ppo_loss : ClipPPOLoss or None
        Its ``entropy_coeff`` buffer is set in place.
    ppo_optimizer, elbo_optimizer : torch.optim.Optimizer or None
        Their learning rates are annealed with ``train.anneal_lr``.

    Examples
    --------
    >>> from torchrl_bamdp.configs import load_config
    >>> config = load_config({"train": {"total_frames": 1000, "anneal_lr": True}})
    >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.algo.ppo.lr)
    >>> schedules = Schedules(config, None, opt, None)
    >>> schedules.step(frames_before=500)
    {}
    >>> opt.param_groups[0]["lr"] == config.algo.ppo.lr / 2
    True
    """

    def __init__(
        self,
        config: Any,
        ppo_loss: Any,
        ppo_optimizer: torch.optim.Optimizer | None,
        elbo_optimizer: torch.optim.Optimizer | None,
    ) -> None:
        self.config = config
        self.ppo_loss = ppo_loss
        self.optimizers = [
            (ppo_optimizer, config.algo.ppo.lr),
            (elbo_optimizer, config.algo.elbo.lr),
        ]

    def progress(self, frames_before: int) -> float:
        return budget_progress(frames_before, self.config.train.total_frames)

    def entropy_coef(self, frames_before: int) -> float:
        """Set PPO's entropy coefficient on its linear path and return it.

        It goes from ``algo.ppo.entropy_coef`` (the first batch) to ``entropy_coef_final``
        (reached at ``total_frames`` and kept after), so a run explores broadly early and
        commits late whatever its budget.
        """
        ppo = self.config.algo.ppo
        progress = self.progress(frames_before)
        coef = ppo.entropy_coef + (ppo.entropy_coef_final - ppo.entropy_coef) * progress
        self.ppo_loss.entropy_coeff.fill_(coef)
        return coef

    def anneal_learning_rates(self, frames_before: int) -> None:
        """Linear decay to 0 of *both* learning rates: the policy and the encoder slow down
        together (a policy frozen by a decayed lr cannot follow a belief representation that
        the ELBO keeps changing)."""
        scale = 1.0 - self.progress(frames_before)
        for optimizer, base in self.optimizers:
            if optimizer is None:
                continue
            for group in optimizer.param_groups:
                group["lr"] = base * scale

    def step(self, frames_before: int) -> dict[str, float]:
        """Apply every schedule for the next updates; returns what to log."""
        metrics: dict[str, float] = {}
        if self.config.train.anneal_lr:
            self.anneal_learning_rates(frames_before)
        if self.ppo_loss is not None and self.config.algo.ppo.entropy_coef_final is not None:
            metrics["ppo/entropy_coef"] = self.entropy_coef(frames_before)
        return metrics
