"""The uniformly random policy: the lower reference of meta-tests and the ``random`` algorithm."""

from __future__ import annotations

from collections.abc import Callable

import torch
from tensordict import TensorDictBase

__all__ = ["uniform_random_policy"]


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
