"""ReturnScaler: running std of the discounted return, by hand and against a direct computation."""

from __future__ import annotations

import pytest
import torch

from torchrl_bamdp.objectives import ReturnScaler


def test_statistics_match_hand_computation_across_batches():
    scaler = ReturnScaler(gamma=0.9)
    # Env 0: rewards 1, 2 then the task ends; env 1: 0, 1 and the task goes on.
    scaler.update(torch.tensor([[1.0, 2.0], [0.0, 1.0]]), torch.tensor([[False, True]] * 2))
    # Returns: env 0: 1, 0.9 + 2 = 2.9; env 1: 0, 1.
    returns = torch.tensor([1.0, 2.9, 0.0, 1.0], dtype=torch.float64)
    assert scaler.count.item() == 4
    assert scaler.mean.item() == pytest.approx(returns.mean().item())
    assert scaler.var.item() == pytest.approx(returns.var(unbiased=False).item())
    # Second batch: both envs were reset at the done -> returns restart at 0.
    scaler.update(torch.tensor([[3.0], [1.0]]), torch.tensor([[False], [False]]))
    returns = torch.cat([returns, torch.tensor([3.0, 1.0], dtype=torch.float64)])
    assert scaler.var.item() == pytest.approx(returns.var(unbiased=False).item())
    std = returns.var(unbiased=False).sqrt()
    assert torch.allclose(scaler.scale(torch.tensor([2.0])), (2.0 / std).float())


def test_return_is_carried_into_the_next_batch_inside_a_task():
    split, whole = ReturnScaler(gamma=0.5), ReturnScaler(gamma=0.5)
    rewards = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    done = torch.tensor([[False, False, True, False]])
    whole.update(rewards, done)
    split.update(rewards[:, :2], done[:, :2])
    split.update(rewards[:, 2:], done[:, 2:])
    assert split.mean.item() == pytest.approx(whole.mean.item())
    assert split.var.item() == pytest.approx(whole.var.item())


def test_signs_and_zeros_are_kept_and_state_round_trips():
    scaler = ReturnScaler(gamma=0.99)
    rewards = torch.randn(4, 50, 1, generator=torch.Generator().manual_seed(0)) * 30
    scaler.update(rewards, torch.zeros(4, 50, 1, dtype=torch.bool))
    scaled = scaler.scale(rewards)
    assert torch.equal(scaled.sign(), rewards.sign())
    assert scaler.scale(torch.zeros(3)).abs().sum() == 0
    copy = ReturnScaler(gamma=0.99)
    copy.load_state_dict(scaler.state_dict())
    assert torch.equal(copy.scale(rewards), scaled)


def test_identity_before_any_update_and_shape_mismatch_is_named():
    scaler = ReturnScaler(gamma=0.9)
    assert torch.equal(scaler.scale(torch.tensor([5.0])), torch.tensor([5.0]))
    with pytest.raises(ValueError, match="reward .* and done"):
        scaler.update(torch.zeros(2, 3), torch.zeros(2, 4, dtype=torch.bool))
