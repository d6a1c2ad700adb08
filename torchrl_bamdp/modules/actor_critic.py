"""Policy and value networks on the hyper-state, as TorchRL modules."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict.nn import TensorDictModule
from tensordict.utils import NestedKey
from torch import nn
from torchrl.data import Categorical, TensorSpec
from torchrl.modules import ProbabilisticActor, TanhNormal, ValueOperator
from torchrl.modules.distributions import NormalParamExtractor

from torchrl_bamdp.utils import make_mlp


class _Scaled(nn.Module):
    """Orthogonal init with a small last layer: a near-uniform initial policy, as PPO likes."""

    def __init__(self, net: nn.Sequential, last_gain: float) -> None:
        super().__init__()
        for layer in net:
            if isinstance(layer, nn.Linear):
                nn.init.orthogonal_(layer.weight, gain=2**0.5)
                nn.init.zeros_(layer.bias)
        nn.init.orthogonal_(net[-1].weight, gain=last_gain)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def make_actor_critic(
    input_dim: int,
    action_spec: TensorSpec,
    hidden: Sequence[int] = (32,),
    activation: str = "tanh",
    in_key: NestedKey = "hyper_state",
) -> tuple[ProbabilisticActor, ValueOperator]:
    """Build a PPO actor and critic that read ``in_key`` (the hyper-state by default).

    Discrete (``Categorical``) action specs get a categorical policy over logits; continuous
    (bounded) specs get a ``TanhNormal`` policy with a state-dependent scale. The actor writes
    ``action`` and ``action_log_prob`` (the key ClipPPOLoss and GAE read by default).

    Parameters
    ----------
    input_dim : int
        Size of the hyper-state.
    action_spec : TensorSpec
        The environment's action spec (``env.action_spec``).
    hidden : sequence of int
        Hidden layer sizes of both networks.
    activation : str
        ``"tanh"``, ``"relu"`` or ``"elu"``.
    in_key : NestedKey
        The input entry.

    Examples
    --------
    >>> from torchrl.data import Categorical
    >>> actor, critic = make_actor_critic(12, Categorical(5, shape=(4,)))
    >>> from tensordict import TensorDict
    >>> td = actor(TensorDict({"hyper_state": torch.zeros(4, 12)}, [4]))
    >>> td["action"].shape, critic(td)["state_value"].shape
    (torch.Size([4]), torch.Size([4, 1]))
    """
    if isinstance(action_spec, Categorical):
        logits = _Scaled(make_mlp(input_dim, action_spec.n, hidden, activation), 0.01)
        module = TensorDictModule(logits, in_keys=[in_key], out_keys=["logits"])
        actor = ProbabilisticActor(
            module,
            in_keys=["logits"],
            spec=action_spec,
            distribution_class=torch.distributions.Categorical,
            return_log_prob=True,
        )
    else:
        action_dim = action_spec.shape[-1]
        net = nn.Sequential(
            _Scaled(make_mlp(input_dim, 2 * action_dim, hidden, activation), 0.01),
            NormalParamExtractor(),
        )
        module = TensorDictModule(net, in_keys=[in_key], out_keys=["loc", "scale"])
        actor = ProbabilisticActor(
            module,
            in_keys=["loc", "scale"],
            spec=action_spec,
            distribution_class=TanhNormal,
            distribution_kwargs={
                "low": action_spec.space.low,
                "high": action_spec.space.high,
            },
            return_log_prob=True,
        )
    critic = ValueOperator(_Scaled(make_mlp(input_dim, 1, hidden, activation), 1.0), in_keys=[in_key])
    return actor, critic
