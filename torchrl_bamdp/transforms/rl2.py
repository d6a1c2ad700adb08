"""RL2's memory as a TorchRL transform: a GRU over (previous action, reward, observation, done).

RL2 (Duan et al. 2016; Wang et al. 2016) conditions the policy on the hidden state of a
recurrent network fed with the previous action, the reward, the observation and the
inner-episode ``done`` flag, carried across the inner episodes of a task and reset on a new
task; the network is trained by the RL loss alone. As in the VariBAD paper's RL2 baseline, the
recurrent network is the same GRU encoder as VariBAD's (:class:`BeliefEncoder`), here without
decoders or ELBO: the transform keeps its hidden state online during collection (no
gradients), and PPO re-encodes whole stored tasks with gradients
(:meth:`RL2Memory.encode_sequence`), so the policy loss trains the GRU end to end.
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torchrl.data import Composite, Unbounded
from torchrl.envs.transforms import Compose

from torchrl_bamdp.envs.bamdp import TRUE_OBSERVATION
from torchrl_bamdp.modules.encoder import BeliefEncoder
from torchrl_bamdp.transforms.belief import SharedEncoderTransform, hyper_state_transform

RL2_HIDDEN: tuple[str, str] = ("rl2", "hidden")
#: ``relu(cat(mean, logvar))`` of the encoder's latent heads on the hidden state: what the
#: original RL2 feeds its policy (``add_nonlinearity_to_latent``), with ``latent=True``.
RL2_LATENT: tuple[str, str] = ("rl2", "latent")
#: The values of ``algo.rl2_memory``: what of the memory the policy reads.
RL2_MEMORIES = ("hidden", "latent_relu")


class RL2Memory(SharedEncoderTransform):
    """Carry RL2's recurrent state in the tensordict, one GRU step per env step.

    On reset (a new task) the hidden state is zero; on every step the GRU reads the action
    taken, the reward, the state the step landed in (``("next", "true_observation")``: the true
    last state at an inner-episode end, where the policy's ``observation`` is already the next
    start state, which the policy reads itself) and the next ``episode_done`` flag and writes
    ``("rl2", "hidden")`` into the next tensordict. Inner-episode resets are not TorchRL resets,
    so the memory persists across the inner episodes of a task.

    Parameters
    ----------
    encoder : BeliefEncoder
        The recurrent network; its ``obs_dim`` must be the observation size + 1 (the done flag
        is appended to the observation it reads). Its mean/log-variance heads are used only
        with ``latent``.
    latent : bool
        Also write :data:`RL2_LATENT`, ``relu(cat(mean, logvar))`` of the encoder's latent heads
        on the hidden state (at a task start, on the zero hidden state: the heads' biases), as
        the original RL2 feeds its policy; trained by the RL loss like the GRU.
    action_key, reward_key, observation_key, episode_done_key : NestedKey
        Where to read a_t (root tensordict) and r_{t+1}, the true s_{t+1}, d_{t+1} (next
        tensordict).

    Examples
    --------
    >>> from torchrl.envs import TransformedEnv
    >>> from torchrl_bamdp.envs import BAMDPEnv, GridNaviEnv
    >>> base = BAMDPEnv(GridNaviEnv(num_envs=4), episode_length=15, episodes_per_task=4)
    >>> gru = BeliefEncoder(obs_dim=3, action_dim=5, discrete_actions=True, hidden_size=16)
    >>> env = TransformedEnv(base, RL2Memory(gru))
    >>> env.rand_step(env.reset())["next", "rl2", "hidden"].shape
    torch.Size([4, 16])
    """

    def __init__(
        self,
        encoder: BeliefEncoder,
        action_key: NestedKey = "action",
        reward_key: NestedKey = "reward",
        observation_key: NestedKey = TRUE_OBSERVATION,
        episode_done_key: NestedKey = "episode_done",
        latent: bool = False,
    ) -> None:
        super().__init__(
            in_keys=[action_key, reward_key, observation_key, episode_done_key],
            out_keys=[RL2_HIDDEN, RL2_LATENT] if latent else [RL2_HIDDEN],
        )
        self.encoder = encoder
        self.latent = latent
        self.action_key = action_key
        self.reward_key = reward_key
        self.observation_key = observation_key
        self.episode_done_key = episode_done_key

    def _reset(
        self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        batch, device = tensordict_reset.batch_size, tensordict_reset.device
        hidden = self.encoder.initial_hidden(*batch, device=device)
        tensordict_reset.set(RL2_HIDDEN, hidden)
        if self.latent:
            with torch.no_grad():
                tensordict_reset.set(RL2_LATENT, self.latent_of(hidden))
        return tensordict_reset

    def latent_of(self, hidden: torch.Tensor) -> torch.Tensor:
        """``relu(cat(mean, logvar))`` of the encoder's heads on ``hidden`` (:data:`RL2_LATENT`)."""
        return torch.relu(torch.cat(self.encoder.latent_of(hidden), dim=-1))

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        hidden = tensordict.get(RL2_HIDDEN, None)
        if hidden is None:
            raise KeyError(
                f"{type(self).__name__}: no {RL2_HIDDEN} in the input tensordict; step from a "
                "tensordict returned by env.reset() (or a collector), not a hand-made one."
            )
        landed = next_tensordict.get(self.observation_key, None)
        if landed is None:
            raise KeyError(
                f"{type(self).__name__}: no entry {self.observation_key!r} in the next tensordict "
                "(BAMDPEnv writes it: wrap the task env in a BAMDPEnv)"
            )
        observation = self.encoder_observation(landed, next_tensordict.get(self.episode_done_key))
        with torch.no_grad():
            _, _, hidden = self.encoder.step(
                tensordict.get(self.action_key),
                next_tensordict.get(self.reward_key),
                observation,
                hidden,
            )
        next_tensordict.set(RL2_HIDDEN, hidden)
        if self.latent:
            with torch.no_grad():
                next_tensordict.set(RL2_LATENT, self.latent_of(hidden))
        return next_tensordict

    @staticmethod
    def encoder_observation(observation: torch.Tensor, episode_done: torch.Tensor) -> torch.Tensor:
        """What the GRU reads besides action and reward: the observation and the done flag."""
        return torch.cat([observation, episode_done.to(observation.dtype)], dim=-1)

    def encode_sequence(self, trajectories: TensorDictBase) -> torch.Tensor:
        """Re-encode ``[N, T]`` whole tasks with gradients; the hidden state *before* each step.

        Returns ``[N, T, hidden]``: entry ``t`` is the memory the policy saw at step ``t`` (zero
        at ``t = 0``), identical to the online ``("rl2", "hidden")`` for the same weights.
        """
        nxt = trajectories.get("next")
        observation = self.encoder_observation(
            nxt.get(self.observation_key), nxt.get(self.episode_done_key)
        )
        _, _, hidden = self.encoder.sequence(
            trajectories.get(self.action_key), nxt.get(self.reward_key), observation
        )
        return hidden[:, :-1]

    def write_sequence(self, trajectories: TensorDictBase) -> TensorDictBase:
        """Write :meth:`encode_sequence` under ``("rl2", "hidden")`` (see
        :func:`~torchrl_bamdp.transforms.belief.reencode_hyper_state`)."""
        hidden = self.encode_sequence(trajectories)
        trajectories.set(RL2_HIDDEN, hidden)
        if self.latent:
            trajectories.set(RL2_LATENT, self.latent_of(hidden))
        return trajectories

    def _call(self, next_tensordict: TensorDictBase) -> TensorDictBase:
        return next_tensordict

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        raise NotImplementedError(
            f"{type(self).__name__} is an environment transform; use encode_sequence to "
            "re-encode stored trajectories."
        )

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        batch = self.parent.batch_size
        observation_spec[RL2_HIDDEN] = Unbounded(
            shape=(*batch, self.encoder.hidden_size), device=observation_spec.device
        )
        if self.latent:
            observation_spec[RL2_LATENT] = Unbounded(
                shape=(*batch, 2 * self.encoder.latent_dim), device=observation_spec.device
            )
        return observation_spec


def rl2_transforms(
    encoder: BeliefEncoder, memory: str = "hidden", observation: bool = True
) -> Compose:
    """RL2 memory followed by ``hyper_state = [observation, memory]``.

    ``memory`` is what the policy reads of it: ``"hidden"`` (the GRU state) or
    ``"latent_relu"`` (:data:`RL2_LATENT`, the original's); ``observation=False`` leaves the
    observation out (the original RL2 on GridNavi: ``pass_state_to_policy=False``).

    Examples
    --------
    >>> gru = BeliefEncoder(obs_dim=3, action_dim=5, discrete_actions=True)
    >>> [type(t).__name__ for t in rl2_transforms(gru)]
    ['RL2Memory', 'CatTensors']
    >>> rl2_transforms(gru, "latent_relu", observation=False)[1].in_keys
    [('rl2', 'latent')]
    """
    if memory not in RL2_MEMORIES:
        raise ValueError(f"rl2_transforms: memory must be one of {list(RL2_MEMORIES)} ({memory!r})")
    latent = memory == "latent_relu"
    return Compose(
        RL2Memory(encoder, latent=latent),
        hyper_state_transform(
            belief_keys=[RL2_LATENT if latent else RL2_HIDDEN],
            observation_key="observation" if observation else None,
        ),
    )
