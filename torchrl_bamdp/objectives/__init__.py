"""Loss modules: the VariBAD ELBO (PPO is TorchRL's ClipPPOLoss + GAE)."""

from torchrl_bamdp.objectives.elbo import ELBOLoss, gaussian_kl

__all__ = ["ELBOLoss", "gaussian_kl"]
