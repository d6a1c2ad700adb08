"""Small shared helpers."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}


def make_mlp(
    in_dim: int, out_dim: int, hidden: Sequence[int], activation: str = "tanh"
) -> nn.Sequential:
    """A plain MLP ``in -> hidden... -> out`` with ``activation`` between layers.

    Examples
    --------
    >>> make_mlp(3, 2, [8], "relu")
    Sequential(
      (0): Linear(in_features=3, out_features=8, bias=True)
      (1): ReLU()
      (2): Linear(in_features=8, out_features=2, bias=True)
    )
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)} (got {activation!r})")
    layers: list[nn.Module] = []
    last = in_dim
    for width in hidden:
        layers += [nn.Linear(last, width), ACTIVATIONS[activation]()]
        last = width
    layers.append(nn.Linear(last, out_dim))
    return nn.Sequential(*layers)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file and ``os.replace`` (never half-written).

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "a.json"
    >>> atomic_write_text(target, "{}")
    >>> target.read_text()
    '{}'
    """
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
