"""normalize_advantage: the original's whole-batch standardisation of the advantages."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from torchrl_bamdp.objectives import normalize_advantage


def test_whole_batch_by_hand():
    advantage = torch.tensor([[[1.0], [2.0]], [[4.0], [9.0]]])  # [2 envs, 2 steps, 1]
    batch = TensorDict({"advantage": advantage.clone()}, [2, 2])
    out = normalize_advantage(batch)
    assert out is batch
    # mean 4, unbiased std sqrt(((-3)^2 + (-2)^2 + 0^2 + 5^2) / 3) = sqrt(38 / 3)
    std = (38.0 / 3.0) ** 0.5
    expected = (advantage - 4.0) / (std + 1e-5)
    torch.testing.assert_close(batch["advantage"], expected)
    assert batch["advantage"].shape == (2, 2, 1)


def test_equals_the_originals_formula_and_not_per_minibatch():
    g = torch.Generator().manual_seed(0)
    advantage = torch.randn(16, 60, 1, generator=g) * 3 + 1
    batch = TensorDict({"advantage": advantage.clone()}, [16, 60])
    normalize_advantage(batch)
    original = (advantage - advantage.mean()) / (advantage.std() + 1e-5)
    assert torch.equal(batch["advantage"], original)
    # A minibatch keeps the whole batch's statistics: not standardised on its own.
    minibatch = batch["advantage"][:4]
    assert abs(minibatch.mean().item()) > 1e-3


def test_nested_key_eps_and_single_entry():
    batch = TensorDict({"ppo": {"adv": torch.tensor([[0.0], [2.0]])}}, [2])
    normalize_advantage(batch, key=("ppo", "adv"), eps=0.0)
    torch.testing.assert_close(batch["ppo", "adv"].flatten(), torch.tensor([-1.0, 1.0]) / 2**0.5)
    single = TensorDict({"advantage": torch.tensor([[5.0]])}, [1])
    assert normalize_advantage(single)["advantage"].item() == 0.0


@pytest.mark.parametrize("bad", [-1e-5, float("nan"), float("inf"), True, "1e-5"])
def test_eps_is_validated(bad):
    batch = TensorDict({"advantage": torch.ones(3, 1)}, [3])
    with pytest.raises(ValueError, match="eps must be a finite float >= 0"):
        normalize_advantage(batch, eps=bad)


def test_missing_key_is_named():
    with pytest.raises(KeyError, match="no entry 'advantage'"):
        normalize_advantage(TensorDict({"x": torch.ones(3)}, [3]))
