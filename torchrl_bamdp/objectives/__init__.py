"""Loss modules: the VariBAD ELBO and its switching-prior variant, and PPO (TorchRL's ClipPPOLoss,
computed from the minibatch's tensors: :class:`TensorClipPPOLoss`; + GAE)."""

from torchrl_bamdp.objectives.advantage import normalize_advantage
from torchrl_bamdp.objectives.elbo import ELBOLoss, gaussian_kl
from torchrl_bamdp.objectives.ppo import TensorClipPPOLoss
from torchrl_bamdp.objectives.reward_scaling import ReturnScaler
from torchrl_bamdp.objectives.switching_elbo import SwitchingELBOLoss, switching_decode_weights

__all__ = [
    "ELBOLoss",
    "ReturnScaler",
    "SwitchingELBOLoss",
    "TensorClipPPOLoss",
    "gaussian_kl",
    "normalize_advantage",
    "switching_decode_weights",
]
