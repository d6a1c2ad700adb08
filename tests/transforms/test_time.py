"""The time of the task appended to the hyper-state (``algo.ppo.time_features``)."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs import Compose, TransformedEnv
from torchrl.envs.utils import check_env_specs

from torchrl_bamdp.envs import make_env
from torchrl_bamdp.transforms import TimeAwareHyperState, oracle_transforms, time_features


def test_time_features_values_and_clamping():
    step = torch.tensor([[0], [7], [15], [15]])
    episode = torch.tensor([[0], [1], [3], [6]])
    expected = torch.tensor([[0.0, 0.0], [7 / 15, 1 / 3], [1.0, 1.0], [1.0, 1.0]])
    torch.testing.assert_close(time_features(step, episode, 15, 4), expected)
    # one episode per task: the episode feature is constant
    assert time_features(torch.tensor([[5]]), torch.tensor([[1]]), 10, 1).tolist() == [[0.5, 0.0]]


def test_bad_horizon_is_refused():
    with pytest.raises(ValueError, match="episode_length"):
        TimeAwareHyperState(0, 4)
    with pytest.raises(ValueError, match="episodes_per_task"):
        TimeAwareHyperState(15, 0)


def time_aware_oracle_env(num_envs: int = 3, episodes: int = 2) -> TransformedEnv:
    base = make_env(num_envs=num_envs, episodes_per_task=episodes, seed=1)
    return TransformedEnv(base, Compose(oracle_transforms(), TimeAwareHyperState(15, episodes)))


def test_time_aware_env_specs():
    env = time_aware_oracle_env()
    check_env_specs(env, seed=0)
    assert env.observation_spec["hyper_state"].shape == (3, 2 + 2 + 2)


def test_features_follow_the_bamdp_clock_across_episodes_and_tasks():
    env = time_aware_oracle_env(num_envs=2, episodes=2)
    rollout = env.rollout(65, break_when_any_done=False)  # 2 tasks of 30 steps, and 5 more
    hyper_state = rollout["next", "hyper_state"]
    # the observation and task come first, unchanged
    torch.testing.assert_close(hyper_state[..., :2], rollout["next", "observation"])
    torch.testing.assert_close(hyper_state[..., 2:4], rollout["next", "task"])
    step, episode = hyper_state[0, :, 4], hyper_state[0, :, 5]
    # steps 1..14 of the first episode, then the start state of the second (a fresh clock)
    torch.testing.assert_close(step[:14], torch.arange(1, 15) / 15)
    assert step[14].item() == 0.0 and episode[14].item() == 1.0
    assert episode[:14].eq(0).all()
    # the task's final state counts as the last episode; the next task starts at zero
    assert episode[29].item() == 1.0
    assert rollout[0, 30]["hyper_state"][4:].tolist() == [0.0, 0.0]
    assert env.reset()["hyper_state"][:, 4:].eq(0).all()


def test_standalone_forward_appends_features():
    t = TimeAwareHyperState(10, 3)
    td = TensorDict(
        {
            "hyper_state": torch.zeros(2, 4),
            "step_in_episode": torch.tensor([[5], [10]]),
            "episode": torch.tensor([[2], [0]]),
        },
        batch_size=[2],
    )
    out = t(td)["hyper_state"]
    assert out[:, 4:].tolist() == [[0.5, 1.0], [1.0, 0.0]]
