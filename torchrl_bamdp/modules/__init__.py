"""Neural-network building blocks."""

from torchrl_bamdp.modules.encoder import BeliefEncoder

__all__ = ["BeliefEncoder"]
