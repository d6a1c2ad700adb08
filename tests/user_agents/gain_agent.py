"""An algorithm that is not shipped: a learned "belief" with state of its own and an auxiliary loss.

The belief is ``gain * observation``, with ``gain`` a learnt parameter of a module the builder
creates once and every env's transform shares (:class:`GainModule`, which also counts the steps
it has seen in a buffer). The transform itself counts its resets in a buffer of its own. An
auxiliary loss (:class:`GainFit`) trains ``gain`` on buffered trajectories; PPO trains the
policy on ``[observation, gain * observation]``. The tests select it by name (registered) and by
import path (``algo.builder=gain_agent:make_agent``, with this folder on ``PYTHONPATH``).
"""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn
from torchrl.data import Composite, Unbounded
from torchrl.envs import Compose
from torchrl.envs.transforms import Transform
from torchrl.objectives import LossModule

from torchrl_bamdp.modules.actor_critic import make_actor_critic
from torchrl_bamdp.trainers import Agent
from torchrl_bamdp.transforms import hyper_state_transform

GAIN = ("belief", "gain")


class GainModule(nn.Module):
    """The agent-owned state: a learnt gain and a count of the env steps it has transformed."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(dim))
        self.register_buffer("steps_seen", torch.zeros((), dtype=torch.long))


class GainBelief(Transform):
    """Writes ``gain * observation`` under ``("belief", "gain")``; counts its own resets."""

    def __init__(self, module: GainModule) -> None:
        super().__init__(in_keys=["observation"], out_keys=[GAIN])
        self.module = module
        self.register_buffer("resets", torch.zeros((), dtype=torch.long))

    def _belief(self, td: TensorDictBase) -> TensorDictBase:
        with torch.no_grad():  # a stored input of PPO; only the auxiliary loss trains the gain
            return td.set(GAIN, td["observation"] * self.module.gain)

    def _reset(self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase):
        self.resets += 1
        return self._belief(tensordict_reset)

    def _call(self, next_tensordict: TensorDictBase) -> TensorDictBase:
        self.module.steps_seen += next_tensordict.numel()
        return self._belief(next_tensordict)

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        shape = observation_spec["observation"].shape
        observation_spec[GAIN] = Unbounded(shape=shape, device=observation_spec.device)
        return observation_spec


class GainFit(LossModule):
    """Auxiliary loss: ``(gain . s - r)^2`` over buffered transitions, weighted (``loss_*``)."""

    def __init__(self, module: GainModule, weight: float = 1.0) -> None:
        super().__init__()
        self.module = module
        self.weight = weight

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        predicted = (tensordict["observation"] * self.module.gain).sum(-1, keepdim=True)
        fit = (predicted - tensordict["next", "reward"]).pow(2).mean()
        return TensorDict(
            {"loss_gain_fit": self.weight * fit, "gain_norm": self.module.gain.detach().norm()},
            batch_size=[],
        )


def make_agent(config, env, aux: bool = True) -> Agent:
    """The builder: ``(config, env) -> Agent`` (``aux=False``: the gain stays as initialised)."""
    obs_dim = env.observation_spec["observation"].shape[-1]
    module = GainModule(obs_dim)
    ppo = config.algo.ppo
    actor, critic = make_actor_critic(2 * obs_dim, env.action_spec, ppo.hidden, ppo.activation)

    def make_transforms() -> Compose:
        return Compose(GainBelief(module), hyper_state_transform(belief_keys=[GAIN]))

    return Agent(
        config.algo.name,
        actor,
        critic,
        make_transforms,
        aux_losses={"gain": GainFit(module, weight=0.5)} if aux else {},
    )


def make_agent_without_aux(config, env) -> Agent:
    """The same agent without its auxiliary loss: its transforms hold all of its own state."""
    return make_agent(config, env, aux=False)
