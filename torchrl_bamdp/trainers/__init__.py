"""Training loops: collector + losses + optimisers + logging + checkpoints."""

from torchrl_bamdp.trainers.checkpoint import CheckpointError
from torchrl_bamdp.trainers.health import HealthMonitor, NonFiniteError
from torchrl_bamdp.trainers.logging import MetricsLogger
from torchrl_bamdp.trainers.varibad import Trainer, VariBADAgent

__all__ = [
    "CheckpointError",
    "HealthMonitor",
    "MetricsLogger",
    "NonFiniteError",
    "Trainer",
    "VariBADAgent",
]
