"""Transforms that turn a state into a hyper-state."""

from torchrl_bamdp.transforms.belief import (
    BELIEF_DECODED,
    BELIEF_HIDDEN,
    BELIEF_LOGVAR,
    BELIEF_MEAN,
    DecodedBelief,
    VariationalBelief,
    hyper_state_transform,
    policy_belief_keys,
    reencode_hyper_state,
    varibad_transforms,
)
from torchrl_bamdp.transforms.exact_belief import (
    BELIEF_PROBS,
    ExactGridBelief,
    exact_belief_transforms,
)
from torchrl_bamdp.transforms.oracle import oracle_transforms
from torchrl_bamdp.transforms.rl2 import RL2_HIDDEN, RL2Memory, rl2_transforms
from torchrl_bamdp.transforms.switching_belief import (
    BELIEF_FILTERED,
    SwitchingGridBelief,
    find_hazard,
    switching_belief_transforms,
)
from torchrl_bamdp.transforms.time import TIME_FEATURES, TimeAwareHyperState, time_features

__all__ = [
    "BELIEF_DECODED",
    "BELIEF_FILTERED",
    "BELIEF_HIDDEN",
    "BELIEF_LOGVAR",
    "BELIEF_MEAN",
    "BELIEF_PROBS",
    "DecodedBelief",
    "ExactGridBelief",
    "RL2_HIDDEN",
    "RL2Memory",
    "SwitchingGridBelief",
    "TIME_FEATURES",
    "TimeAwareHyperState",
    "VariationalBelief",
    "exact_belief_transforms",
    "find_hazard",
    "hyper_state_transform",
    "oracle_transforms",
    "policy_belief_keys",
    "reencode_hyper_state",
    "rl2_transforms",
    "switching_belief_transforms",
    "time_features",
    "varibad_transforms",
]
