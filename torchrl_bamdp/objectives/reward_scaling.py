"""Reward scaling for the policy loss only (the ELBO keeps the raw rewards)."""

from __future__ import annotations

import torch
from torch import nn

from torchrl_bamdp.utils import merge_running_moments


class ReturnScaler(nn.Module):
    """Divide rewards by a running standard deviation of the discounted return.

    The scheme of gymnasium's ``NormalizeReward`` (and of the original VariBAD's
    ``norm_rew_for_policy``), applied to collected ``[num_envs, T]`` batches instead of inside
    the env, so that the encoder and decoders still see raw rewards: per env the discounted
    return ``G_t = gamma * G_{t-1} + r_t`` (reset after ``done``) is accumulated, its running
    variance over all steps seen so far is kept, and :meth:`scale` returns ``r / std(G)``.
    Rewards are not shifted, so their sign (and a sparse reward's zeros) are kept.

    The statistics live in buffers (saved with ``state_dict``); the per-env return being
    accumulated is carried from one batch to the next when a batch ends inside a task.

    Parameters
    ----------
    gamma : float
        Discount of the return whose scale is estimated (PPO's ``gamma``).
    eps : float
        Added to the variance before the square root.

    Examples
    --------
    >>> scaler = ReturnScaler(gamma=0.5)
    >>> reward = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    >>> done = torch.tensor([[False, True, False, True]])
    >>> scaler.update(reward, done)  # returns 1, 1.5, 1, 1.5: variance 0.0625
    >>> scaler.var.item()
    0.0625
    >>> scaler.scale(reward)
    tensor([[4.0000, 4.0000, 4.0000, 4.0000]])
    """

    def __init__(self, gamma: float, eps: float = 1e-8) -> None:
        super().__init__()
        self.gamma = gamma
        self.eps = eps
        self.register_buffer("mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("var", torch.ones((), dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self._running: torch.Tensor | None = None

    @torch.no_grad()
    def update(self, reward: torch.Tensor, done: torch.Tensor) -> None:
        """Accumulate the discounted returns of a ``[num_envs, T]`` batch (trailing 1 allowed)."""
        rewards = reward.reshape(reward.shape[0], -1).to(torch.float64)
        dones = done.reshape(done.shape[0], -1).bool()
        if rewards.shape != dones.shape:
            raise ValueError(
                f"reward {tuple(reward.shape)} and done {tuple(done.shape)} must have the "
                "same [num_envs, T] shape"
            )
        running = self._running
        if running is None or running.shape[0] != rewards.shape[0]:
            running = torch.zeros(rewards.shape[0], dtype=torch.float64, device=rewards.device)
        returns = torch.empty_like(rewards)
        for t in range(rewards.shape[1]):
            running = running * self.gamma + rewards[:, t]
            returns[:, t] = running
            running = running.masked_fill(dones[:, t], 0.0)
        self._running = running
        merge_running_moments(self.mean, self.var, self.count, returns.reshape(-1))

    def scale(self, reward: torch.Tensor) -> torch.Tensor:
        """``reward / std`` of the discounted return (unchanged before the first update)."""
        if self.count == 0:
            return reward
        return reward / torch.sqrt(self.var + self.eps).to(reward.dtype)
