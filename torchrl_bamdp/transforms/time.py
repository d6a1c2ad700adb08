"""The time of the BAMDP as part of the hyper-state.

A task lasts a fixed number of steps, so the Bayes-optimal action depends on the time left:
exploring pays early in a task, exploiting late, and within an episode a tour only pays if it
fits in the steps left. The value of a hyper-state depends on the time left even more: after the
goal is found the belief and the start position are the same at the start of every later
episode, yet one, two or three episodes of reward remain. Without the time a critic cannot tell
them apart (a non-Markov value target, see Pardo et al., "Time Limits in Reinforcement Learning",
ICML 2018). :class:`TimeAwareHyperState` appends two features to ``hyper_state``: the fraction
of the inner episode already taken, and the index of the inner episode.
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torchrl.data import Composite, Unbounded
from torchrl.envs.transforms import Transform

__all__ = ["TIME_FEATURES", "TimeAwareHyperState", "time_features"]

#: Number of features :func:`time_features` appends.
TIME_FEATURES = 2


def time_features(
    step_in_episode: torch.Tensor,
    episode: torch.Tensor,
    episode_length: int,
    episodes_per_task: int,
) -> torch.Tensor:
    """``[step_in_episode / episode_length, episode / (episodes_per_task - 1)]`` as floats.

    Both are in ``[0, 1]`` over the trained horizon. Episodes after the last trained one (a
    meta-test with more episodes per task, or the final state of a task) count as the last one:
    to a policy trained on ``k`` episodes, any later episode is the final one.

    Parameters
    ----------
    step_in_episode, episode : torch.Tensor
        ``[..., 1]`` integer tensors, as the BAMDP env writes them.
    episode_length, episodes_per_task : int
        The trained inner-episode length and number of episodes per task.

    Examples
    --------
    >>> time_features(torch.tensor([[3], [15]]), torch.tensor([[0], [5]]), 15, 4)
    tensor([[0.2000, 0.0000],
            [1.0000, 1.0000]])
    """
    step = step_in_episode.to(torch.float32).clamp(0, episode_length) / episode_length
    last = max(episodes_per_task - 1, 1)
    ep = episode.to(torch.float32).clamp(0, episodes_per_task - 1) / last
    return torch.cat([step, ep], dim=-1)


class TimeAwareHyperState(Transform):
    """Append :func:`time_features` to the hyper-state (after the transform that builds it).

    The policy and the critic then know how far the task has gone; the belief is unchanged, so
    any agent (VariBAD, RL2, the oracles) can be made time-aware by adding this transform last.

    Parameters
    ----------
    episode_length, episodes_per_task : int
        The trained inner-episode length and episodes per task (the feature scales).
    hyper_state_key, step_key, episode_key : NestedKey
        The hyper-state to extend and the BAMDP env's time keys.

    Examples
    --------
    >>> from torchrl.envs import Compose, TransformedEnv
    >>> from torchrl_bamdp.envs import make_env
    >>> from torchrl_bamdp.transforms import oracle_transforms
    >>> env = TransformedEnv(
    ...     make_env(num_envs=2), Compose(oracle_transforms(), TimeAwareHyperState(15, 4))
    ... )
    >>> td = env.rand_step(env.reset())
    >>> td["next", "hyper_state"][:, -2:]
    tensor([[0.0667, 0.0000],
            [0.0667, 0.0000]])
    """

    def __init__(
        self,
        episode_length: int,
        episodes_per_task: int,
        hyper_state_key: NestedKey = "hyper_state",
        step_key: NestedKey = "step_in_episode",
        episode_key: NestedKey = "episode",
    ) -> None:
        if episode_length < 1:
            raise ValueError(f"episode_length must be >= 1 (got {episode_length})")
        if episodes_per_task < 1:
            raise ValueError(f"episodes_per_task must be >= 1 (got {episodes_per_task})")
        super().__init__(
            in_keys=[hyper_state_key, step_key, episode_key], out_keys=[hyper_state_key]
        )
        self.episode_length = int(episode_length)
        self.episodes_per_task = int(episodes_per_task)

    def _append(self, tensordict: TensorDictBase) -> TensorDictBase:
        key, step_key, episode_key = self.in_keys
        features = time_features(
            tensordict.get(step_key),
            tensordict.get(episode_key),
            self.episode_length,
            self.episodes_per_task,
        )
        hyper_state = tensordict.get(key)
        tensordict.set(key, torch.cat([hyper_state, features.to(hyper_state)], dim=-1))
        return tensordict

    def _call(self, next_tensordict: TensorDictBase) -> TensorDictBase:
        return self._append(next_tensordict)

    def _reset(
        self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        return self._append(tensordict_reset)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        return self._append(tensordict)

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        key = self.in_keys[0]
        spec = observation_spec[key]
        observation_spec[key] = Unbounded(
            shape=(*spec.shape[:-1], spec.shape[-1] + TIME_FEATURES),
            dtype=spec.dtype,
            device=spec.device,
        )
        return observation_spec
