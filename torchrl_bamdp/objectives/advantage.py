"""Advantage normalisation over a whole collected batch (the original's), for PPO."""

from __future__ import annotations

import math

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey

#: The original's epsilon: ``(A - mean) / (std + 1e-5)`` in ``algorithms/ppo.py``.
ORIGINAL_EPS = 1e-5


@torch.no_grad()
def normalize_advantage(
    batch: TensorDictBase, key: NestedKey = "advantage", eps: float = ORIGINAL_EPS
) -> TensorDictBase:
    r"""Standardise ``batch[key]`` over *all* its entries, in place, as the original does.

    The original VariBAD (``algorithms/ppo.py``) normalises the advantages once per update,
    over the whole batch (every env and every step), before splitting it into minibatches::

        A <- (A - mean(A)) / (std(A) + eps),   std with Bessel's correction, eps = 1e-5

    TorchRL's ``ClipPPOLoss(normalize_advantage=True)`` instead standardises each minibatch on
    its own (``(A - mean) / std.clamp_min(1e-6)`` per minibatch). To reproduce the original,
    call this once after GAE on the collected batch and build ``ClipPPOLoss`` with
    ``normalize_advantage=False``. Our default stays TorchRL's per-minibatch normalisation;
    this helper changes nothing unless called.

    A batch with a single entry has no spread: its advantage becomes 0 (``std`` is taken as 0).

    Parameters
    ----------
    batch : TensorDictBase
        A collected batch of any batch shape holding ``key`` (GAE writes ``"advantage"``).
    key : NestedKey
        The entry to normalise (overwritten).
    eps : float
        Added to the standard deviation (the original: ``1e-5``); finite and ``>= 0``.

    Returns
    -------
    TensorDictBase
        ``batch`` itself.

    Examples
    --------
    >>> from tensordict import TensorDict
    >>> batch = TensorDict({"advantage": torch.tensor([[1.0], [2.0], [3.0]])}, [3])
    >>> normalize_advantage(batch)["advantage"].flatten()  # mean 2, std 1
    tensor([-1.0000,  0.0000,  1.0000])
    """
    if (
        isinstance(eps, bool)
        or not isinstance(eps, int | float)
        or not math.isfinite(eps)
        or eps < 0
    ):
        raise ValueError(f"normalize_advantage: eps must be a finite float >= 0 (got {eps!r})")
    advantage = batch.get(key, None)
    if advantage is None:
        raise KeyError(
            f"normalize_advantage: the batch has no entry {key!r} (run GAE first); available: "
            f"{sorted(map(str, batch.keys(True, True)))}"
        )
    mean = advantage.mean()
    std = advantage.std() if advantage.numel() > 1 else torch.zeros_like(mean)
    batch.set(key, (advantage - mean) / (std + eps))
    return batch
