"""Training loops: collector + losses + optimisers + logging + checkpoints."""

from torchrl_bamdp.trainers.logging import MetricsLogger
from torchrl_bamdp.trainers.varibad import Trainer, VariBADAgent

__all__ = ["MetricsLogger", "Trainer", "VariBADAgent"]
