"""Loss modules: the VariBAD ELBO (PPO is TorchRL's ClipPPOLoss + GAE)."""

from torchrl_bamdp.objectives.advantage import normalize_advantage
from torchrl_bamdp.objectives.elbo import ELBOLoss, gaussian_kl
from torchrl_bamdp.objectives.reward_scaling import ReturnScaler

__all__ = ["ELBOLoss", "ReturnScaler", "gaussian_kl", "normalize_advantage"]
