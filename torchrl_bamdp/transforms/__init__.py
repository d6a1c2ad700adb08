"""Transforms that turn a state into a hyper-state."""

from torchrl_bamdp.transforms.belief import (
    BELIEF_HIDDEN,
    BELIEF_LOGVAR,
    BELIEF_MEAN,
    VariationalBelief,
    hyper_state_transform,
    varibad_transforms,
)

__all__ = [
    "BELIEF_HIDDEN",
    "BELIEF_LOGVAR",
    "BELIEF_MEAN",
    "VariationalBelief",
    "hyper_state_transform",
    "varibad_transforms",
]
