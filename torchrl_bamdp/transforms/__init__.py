"""Transforms that turn a state into a hyper-state."""

from torchrl_bamdp.transforms.belief import (
    BELIEF_HIDDEN,
    BELIEF_LOGVAR,
    BELIEF_MEAN,
    VariationalBelief,
    hyper_state_transform,
    varibad_transforms,
)
from torchrl_bamdp.transforms.exact_belief import (
    BELIEF_PROBS,
    ExactGridBelief,
    exact_belief_transforms,
)
from torchrl_bamdp.transforms.oracle import oracle_transforms
from torchrl_bamdp.transforms.rl2 import RL2_HIDDEN, RL2Memory, rl2_transforms

__all__ = [
    "BELIEF_HIDDEN",
    "BELIEF_LOGVAR",
    "BELIEF_MEAN",
    "BELIEF_PROBS",
    "ExactGridBelief",
    "RL2_HIDDEN",
    "RL2Memory",
    "VariationalBelief",
    "exact_belief_transforms",
    "hyper_state_transform",
    "oracle_transforms",
    "rl2_transforms",
    "varibad_transforms",
]
