"""Training loops: collector + losses + optimisers + logging + checkpoints."""

from torchrl_bamdp.trainers.agents import Agent, build_agent
from torchrl_bamdp.trainers.checkpoint import CheckpointError, NothingToTrainError
from torchrl_bamdp.trainers.health import HealthMonitor, NonFiniteError
from torchrl_bamdp.trainers.logging import MetricsLogger
from torchrl_bamdp.trainers.trainer import Trainer

__all__ = [
    "Agent",
    "CheckpointError",
    "HealthMonitor",
    "MetricsLogger",
    "NonFiniteError",
    "NothingToTrainError",
    "Trainer",
    "build_agent",
]
