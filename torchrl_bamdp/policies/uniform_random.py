"""The uniformly random policy: the lower reference of meta-tests and the ``random`` algorithm."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tensordict import TensorDictBase

__all__ = ["uniform_box_policy", "uniform_random_policy"]


def uniform_random_policy(
    num_actions: int, seed: int = 0
) -> Callable[[TensorDictBase], TensorDictBase]:
    """A seeded policy that picks one of ``num_actions`` discrete actions uniformly per env (any
    batch size): the lower reference of meta-tests.

    Examples
    --------
    >>> from tensordict import TensorDict
    >>> policy = uniform_random_policy(5)
    >>> policy(TensorDict({}, [3]))["action"].shape
    torch.Size([3])
    """
    generator = torch.Generator().manual_seed(seed)

    def policy(tensordict: TensorDictBase) -> TensorDictBase:
        action = torch.randint(num_actions, tensordict.batch_size, generator=generator)
        tensordict.set("action", action.to(tensordict.device or "cpu"))
        return tensordict

    return policy


def uniform_box_policy(
    low: Sequence[float] | torch.Tensor, high: Sequence[float] | torch.Tensor, seed: int = 0
) -> Callable[[TensorDictBase], TensorDictBase]:
    """A seeded policy that draws continuous actions uniformly in the box ``[low, high]`` per env
    (any batch size): the lower reference of meta-tests on continuous-action families (MuJoCo).

    Parameters
    ----------
    low, high : sequence of float or Tensor
        The bounds of one action (shape ``(action_dim,)``), ``low <= high`` and finite.
    seed : int
        Seed of the policy's own generator.

    Examples
    --------
    >>> from tensordict import TensorDict
    >>> policy = uniform_box_policy([-1.0, -1.0], [1.0, 1.0])
    >>> action = policy(TensorDict({}, [3]))["action"]
    >>> action.shape, bool(action.abs().max() <= 1)
    (torch.Size([3, 2]), True)
    """
    low_t = torch.as_tensor(low, dtype=torch.float32).reshape(-1)
    high_t = torch.as_tensor(high, dtype=torch.float32).reshape(-1)
    if low_t.shape != high_t.shape:
        raise ValueError(
            f"uniform_box_policy: low has {low_t.numel()} entries, high {high_t.numel()}; "
            "they must have one per action dimension"
        )
    if not (torch.isfinite(low_t).all() and torch.isfinite(high_t).all()) or (low_t > high_t).any():
        raise ValueError(
            f"uniform_box_policy: the bounds must be finite with low <= high (got low={low_t}, "
            f"high={high_t})"
        )
    generator = torch.Generator().manual_seed(seed)

    def policy(tensordict: TensorDictBase) -> TensorDictBase:
        shape = (*tensordict.batch_size, low_t.numel())
        unit = torch.rand(shape, generator=generator)
        action = low_t + (high_t - low_t) * unit
        tensordict.set("action", action.to(tensordict.device or "cpu"))
        return tensordict

    return policy
