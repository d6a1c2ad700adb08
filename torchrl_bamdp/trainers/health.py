"""Numerical health of a training run: find NaN/inf early, skip or stop, never continue silently.

The trainer checks every collected batch (rewards, observations, beliefs), every loss term and
every total gradient norm. What happens on a fault is ``train.on_nonfinite``:

* ``"skip"`` -- the faulty optimizer step (or batch) is skipped, a warning is issued and the
  ``health/skipped_*`` counters go up; after ``train.max_skipped_updates`` *consecutive* skips
  of the same kind the run stops with a :class:`NonFiniteError`;
* ``"stop"`` -- the first fault raises a :class:`NonFiniteError` naming the loss and term (or the
  batch entry), the iteration and the frame count.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey

ON_NONFINITE = ("skip", "stop")

#: What is counted: PPO optimizer steps, ELBO optimizer steps, collected batches.
FAULT_KINDS = ("ppo", "elbo", "batch")

METRIC_NAMES = {
    "ppo": "health/skipped_updates_ppo",
    "elbo": "health/skipped_updates_elbo",
    "batch": "health/skipped_batches",
}

#: Entries of a collected batch that must be finite before PPO (or the ELBO buffer) sees it.
BATCH_KEYS: tuple[NestedKey, ...] = (
    ("next", "reward"),
    "observation",
    ("next", "observation"),
    ("next", "true_observation"),  # what the encoder and the ELBO's buffer read
    ("belief", "mean"),
    ("belief", "logvar"),
    ("next", "belief", "mean"),
    ("next", "belief", "logvar"),
)


class NonFiniteError(RuntimeError):
    """A loss, a gradient or a collected batch holds NaN/inf and training cannot go on.

    Raised at the first fault with ``train.on_nonfinite=stop``, or after
    ``train.max_skipped_updates`` consecutive skipped updates (or batches) with ``skip``.

    Examples
    --------
    >>> try:
    ...     raise NonFiniteError("ELBO loss non-finite: loss_reward=nan")
    ... except RuntimeError as err:
    ...     print(err)
    ELBO loss non-finite: loss_reward=nan
    """


def nonfinite_terms(terms: Mapping[str, Any]) -> list[str]:
    """Names of the entries of ``terms`` (tensors or numbers) that hold a NaN or an inf.

    Examples
    --------
    >>> nonfinite_terms({"loss_kl": torch.tensor(0.5), "loss_reward": torch.tensor(float("nan"))})
    ['loss_reward']
    """
    bad = []
    for name, value in terms.items():
        if isinstance(value, torch.Tensor):
            if not bool(torch.isfinite(value.detach()).all()):
                bad.append(name)
        elif not math.isfinite(float(value)):
            bad.append(name)
    return bad


def format_terms(terms: Mapping[str, Any]) -> str:
    """``"name=value, ..."`` of scalar loss terms (means of tensors), for error reports.

    Examples
    --------
    >>> format_terms({"loss_kl": torch.tensor(0.5), "loss_reward": float("inf")})
    'loss_kl=0.5, loss_reward=inf'
    """
    parts = []
    for name, value in terms.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().float().mean()
        parts.append(f"{name}={float(value):.4g}")
    return ", ".join(parts)


def nonfinite_entries(
    batch: TensorDictBase, keys: Iterable[NestedKey] = BATCH_KEYS
) -> dict[NestedKey, str]:
    """Which entries of a ``[num_envs, T, ...]`` batch hold NaN/inf, each with where it starts.

    Entries missing from ``batch`` are ignored. The check is one ``isfinite().all()`` per entry;
    the description is built only for the faulty ones.

    Examples
    --------
    >>> from tensordict import TensorDict
    >>> reward = torch.zeros(2, 3, 1)
    >>> reward[1, 2] = float("nan")
    >>> nonfinite_entries(TensorDict({"next": {"reward": reward}}, [2, 3]))
    {('next', 'reward'): '1 value(s), first at index (1, 2, 0) (nan)'}
    """
    found: dict[NestedKey, str] = {}
    for key in keys:
        value = batch.get(key, None)
        if value is None or bool(torch.isfinite(value).all()):
            continue
        bad = ~torch.isfinite(value)
        first = tuple(int(i) for i in bad.nonzero()[0])
        found[key] = f"{int(bad.sum())} value(s), first at index {first} ({value[first].item()})"
    return found


class HealthMonitor:
    """Count skipped updates and batches, and decide between skipping and stopping.

    Parameters
    ----------
    on_nonfinite : {"skip", "stop"}
        What a fault does (see the module docstring).
    max_consecutive : int
        With ``"skip"``: the number of consecutive faults of one kind that stops the run.

    Examples
    --------
    >>> monitor = HealthMonitor("skip", max_consecutive=2)
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     monitor.fault("elbo", "ELBO loss non-finite")
    >>> monitor.metrics()["health/skipped_updates_elbo"]
    1
    >>> monitor.ok("elbo")  # a good update resets the consecutive count
    >>> monitor.consecutive["elbo"]
    0
    """

    def __init__(self, on_nonfinite: str = "skip", max_consecutive: int = 10) -> None:
        if on_nonfinite not in ON_NONFINITE:
            raise ValueError(
                f"on_nonfinite must be one of {list(ON_NONFINITE)} (got {on_nonfinite!r})"
            )
        if max_consecutive < 1:
            raise ValueError(f"max_consecutive must be >= 1 (got {max_consecutive})")
        self.on_nonfinite = on_nonfinite
        self.max_consecutive = max_consecutive
        self.skipped = dict.fromkeys(FAULT_KINDS, 0)
        self.consecutive = dict.fromkeys(FAULT_KINDS, 0)

    def ok(self, kind: str) -> None:
        """Record a healthy update (or batch) of ``kind``: the consecutive count restarts."""
        self.consecutive[kind] = 0

    def fault(self, kind: str, report: str) -> None:
        """Record a fault of ``kind`` described by ``report``; raise or warn and count it.

        Raises
        ------
        NonFiniteError
            With ``on_nonfinite="stop"``, or when this is the ``max_consecutive``-th fault of
            ``kind`` in a row.
        """
        if self.on_nonfinite == "stop":
            raise NonFiniteError(f"{report} (train.on_nonfinite=stop)")
        self.skipped[kind] += 1
        self.consecutive[kind] += 1
        what = "batches" if kind == "batch" else f"{kind.upper()} updates"
        if self.consecutive[kind] >= self.max_consecutive:
            raise NonFiniteError(
                f"{self.consecutive[kind]} consecutive {what} skipped for non-finite values "
                f"(train.max_skipped_updates={self.max_consecutive}); the last one: {report}"
            )
        warnings.warn(
            f"{report}; skipped ({self.skipped[kind]} {what} skipped so far)",
            RuntimeWarning,
            stacklevel=3,
        )

    def metrics(self) -> dict[str, int]:
        """The cumulative skip counters under their logged names (``health/...``)."""
        return {METRIC_NAMES[kind]: count for kind, count in self.skipped.items()}

    def state_dict(self) -> dict[str, dict[str, int]]:
        return {"skipped": dict(self.skipped), "consecutive": dict(self.consecutive)}

    def load_state_dict(self, state: Mapping[str, Mapping[str, int]]) -> None:
        for name in ("skipped", "consecutive"):
            counts = getattr(self, name)
            for kind, value in state.get(name, {}).items():
                if kind in counts:
                    counts[kind] = int(value)
