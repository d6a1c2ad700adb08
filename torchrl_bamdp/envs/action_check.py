"""Actions checked against an env's action spec, with a message that says what is allowed.

:class:`~torchrl_bamdp.envs.bamdp.BAMDPEnv` runs this check on every step of any
:class:`~torchrl_bamdp.envs.task_env.TaskEnv` it wraps, so a user's task family rejects a
malformed action at the door, as GridNavi does, instead of failing deep in its own step code.
"""

from __future__ import annotations

import torch
from torchrl.data import Categorical, OneHot, TensorSpec


class ActionCheck:
    """Check a batch of actions against ``spec``; raise ``ValueError`` naming env, key and rule.

    * shape: must equal the spec's shape (no host sync);
    * dtype: an integer dtype (or integral floats) for a ``Categorical`` spec, a floating dtype
      for a continuous one; a one-hot spec wants its own shape, of 0/1 values;
    * values: a ``Categorical`` index in ``0..n-1``; continuous actions must be finite. Their
      range is *not* enforced: Gaussian policies (the original VariBAD's) emit actions outside
      the bounds, which the task env clips.

    The value test is one fused reduction and one host sync per step; ``values=False`` keeps
    only the shape and dtype tests (no sync), e.g. for a GPU rollout.

    Parameters
    ----------
    spec : TensorSpec
        The env's action spec.
    owner : str
        How the env is named in messages, e.g. ``"MyTaskEnv.step"``.
    values : bool
        Whether to check the values (range, finiteness) too.

    Examples
    --------
    >>> from torchrl.data import Categorical
    >>> check = ActionCheck(Categorical(5, shape=(4,)), owner="MyEnv.step")
    >>> check(torch.tensor([0, 4, 2, 1]))
    >>> try:
    ...     check(torch.zeros(4, 1, dtype=torch.long))
    ... except ValueError as err:
    ...     print(str(err).split(";")[0])
    MyEnv.step: invalid 'action': shape (4, 1) is not the action spec's shape (4,)
    """

    def __init__(self, spec: TensorSpec, owner: str, values: bool = True) -> None:
        self.spec = spec
        self.owner = owner
        self.values = values
        self.shape = tuple(spec.shape)
        self.one_hot = isinstance(spec, OneHot)
        self.categorical = isinstance(spec, Categorical) and not self.one_hot
        self.n = int(spec.space.n) if self.categorical or self.one_hot else None

    @property
    def allowed(self) -> str:
        """What the spec allows, in words (the tail of every message)."""
        if self.categorical:
            return (
                f"allowed: one integer index in 0..{self.n - 1} per env, shape {self.shape}, an "
                "integer dtype or integral float values"
            )
        if self.one_hot:
            return f"allowed: one-hot vectors of {self.n} 0/1 values, shape {self.shape}"
        low = getattr(getattr(self.spec, "space", None), "low", None)
        bounds = ""
        if low is not None:
            high = self.spec.space.high
            lo, hi = float(low.min()), float(high.max())
            bounds = f"; values outside [{lo:g}, {hi:g}] are clipped by the env"
        return f"allowed: finite floats, shape {self.shape}{bounds}"

    def __call__(self, action: torch.Tensor | None) -> None:
        """Raise ``KeyError`` (no action) or ``ValueError`` (malformed); return ``None``."""
        head = f"{self.owner}: invalid 'action'"
        if action is None:
            raise KeyError(f"{self.owner}: the tensordict has no 'action' entry; {self.allowed}")
        if tuple(action.shape) != self.shape:
            raise ValueError(
                f"{head}: shape {tuple(action.shape)} is not the action spec's shape "
                f"{self.shape}; {self.allowed}"
            )
        if action.dtype == torch.bool and not self.one_hot or action.is_complex():
            raise ValueError(f"{head}: dtype {action.dtype} is not allowed; {self.allowed}")
        discrete = self.categorical or self.one_hot
        if not discrete and not action.is_floating_point():
            raise ValueError(f"{head}: dtype {action.dtype} is not a float dtype; {self.allowed}")
        if not self.values:
            return
        if self._valid(action):
            return
        raise ValueError(self._why(action, head))

    def _valid(self, action: torch.Tensor) -> bool:
        if self.categorical:
            if action.is_floating_point():
                ok = (action >= 0) & (action < self.n) & (action.frac() == 0)
                return bool(ok.all())
            low, high = torch.aminmax(action)
            return low.item() >= 0 and high.item() < self.n
        if self.one_hot:
            values = action.to(torch.float32)
            return bool((((values == 0) | (values == 1)).all(-1) & (values.sum(-1) == 1)).all())
        return bool(torch.isfinite(action).all())

    def _why(self, action: torch.Tensor, head: str) -> str:
        """The reason, built only on failure (never on the fast path)."""
        if self.categorical:
            flat = action.reshape(-1)
            if action.is_floating_point():
                finite = torch.isfinite(flat)
                checks = (
                    ("non-finite (NaN/inf)", ~finite),
                    ("non-integer", finite & (flat.frac() != 0)),
                    ("out-of-range", finite & ((flat < 0) | (flat >= self.n))),
                )
            else:
                checks = (("out-of-range", (flat < 0) | (flat >= self.n)),)
        elif self.one_hot:
            values = action.to(torch.float32).reshape(-1, self.n)
            bad = ~(((values == 0) | (values == 1)).all(-1) & (values.sum(-1) == 1))
            flat = values
            checks = (("not one-hot", bad),)
        else:
            flat = action.reshape(action.shape[0] if action.dim() else 1, -1)
            checks = (("non-finite (NaN/inf)", ~torch.isfinite(flat).all(-1)),)
        for what, bad in checks:
            if bool(bad.any()):
                index = bad.nonzero().flatten()
                shown = ", ".join(f"entry {i}: {flat[i].tolist()!r}" for i in index[:5].tolist())
                more = f" and {len(index) - 5} more" if len(index) > 5 else ""
                return f"{head}: {len(index)} {what} value(s) ({shown}{more}); {self.allowed}"
        return f"{head} (dtype {action.dtype}); {self.allowed}"
