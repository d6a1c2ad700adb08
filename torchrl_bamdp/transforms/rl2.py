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
        is appended to the observation it reads). Its mean/log-variance heads are unused.
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
    ) -> None:
        super().__init__(
            in_keys=[action_key, reward_key, observation_key, episode_done_key],
            out_keys=[RL2_HIDDEN],
        )
        self.encoder = encoder
        self.action_key = action_key
        self.reward_key = reward_key
        self.observation_key = observation_key
        self.episode_done_key = episode_done_key

    def _reset(
        self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        batch, device = tensordict_reset.batch_size, tensordict_reset.device
        tensordict_reset.set(RL2_HIDDEN, self.encoder.initial_hidden(*batch, device=device))
        return tensordict_reset

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
        trajectories.set(RL2_HIDDEN, self.encode_sequence(trajectories))
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
        return observation_spec


def rl2_transforms(encoder: BeliefEncoder) -> Compose:
    """RL2 memory followed by ``hyper_state = [observation, hidden]``.

    Examples
    --------
    >>> gru = BeliefEncoder(obs_dim=3, action_dim=5, discrete_actions=True)
    >>> [type(t).__name__ for t in rl2_transforms(gru)]
    ['RL2Memory', 'CatTensors']
    """
    return Compose(RL2Memory(encoder), hyper_state_transform(belief_keys=[RL2_HIDDEN]))
