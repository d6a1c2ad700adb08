"""Neural-network building blocks."""

from torchrl_bamdp.modules.decoders import (
    GridCellRewardDecoder,
    RewardDecoder,
    StateDecoder,
    TaskDecoder,
    TransitionBatch,
)
from torchrl_bamdp.modules.encoder import BeliefEncoder

__all__ = [
    "BeliefEncoder",
    "GridCellRewardDecoder",
    "RewardDecoder",
    "StateDecoder",
    "TaskDecoder",
    "TransitionBatch",
]
