"""PointRobotEnv: specs, goals on the half circle, exact dense/sparse rewards, resets, registry."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import check_env_specs, step_mdp

from torchrl_bamdp.envs import BAMDPEnv, PointRobotEnv, TaskEnv, make_env


def _reset_with_task(env: PointRobotEnv, goals: list[tuple[float, float]]) -> TensorDict:
    task = torch.tensor(goals, dtype=torch.float32)
    return env.reset(TensorDict({"task": task}, batch_size=env.batch_size))


def _play(env, td, actions: list[list[tuple[float, float]]]):
    """Step with per-step batched actions; return stacked positions and rewards ``[B, T, ...]``."""
    positions, rewards = [], []
    for action in actions:
        td["action"] = torch.tensor(action, dtype=torch.float32)
        td = env.step(td)
        positions.append(td["next", "observation"].clone())
        rewards.append(td["next", "reward"].clone())
        td = step_mdp(td)
    return torch.stack(positions, 1), torch.stack(rewards, 1), td


@pytest.mark.parametrize("sparse", [True, False])
def test_specs_pass_bare_and_in_bamdp(sparse):
    torch.manual_seed(0)
    env = PointRobotEnv(num_envs=2, sparse=sparse)
    assert isinstance(env, TaskEnv) and env.task_dim == 2
    check_env_specs(env, seed=0)
    check_env_specs(BAMDPEnv(PointRobotEnv(num_envs=2, sparse=sparse), 4, 2, seed=0), seed=0)


def test_invalid_arguments():
    for kwargs in ({"num_envs": 0}, {"goal_radius": 0.0}, {"step_size": -0.1}):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            PointRobotEnv(**kwargs)


def test_goals_on_upper_half_circle_and_reproducible():
    env = PointRobotEnv()
    a = env.sample_tasks(2000, torch.Generator().manual_seed(3))
    b = env.sample_tasks(2000, torch.Generator().manual_seed(3))
    c = env.sample_tasks(2000, torch.Generator().manual_seed(4))
    assert a.shape == (2000, 2) and a.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(2000))
    assert (a[:, 1] >= 0).all()
    angle = torch.atan2(a[:, 1], a[:, 0])
    assert angle.min() < 0.05 and angle.max() > math.pi - 0.05  # the whole half circle
    assert abs(angle.mean().item() - math.pi / 2) < 0.1  # uniform in angle


def test_dense_reward_is_minus_distance_after_the_step():
    env = PointRobotEnv(num_envs=2, sparse=False)
    td = _reset_with_task(env, [(0.0, 1.0), (-0.6, 0.8)])
    torch.testing.assert_close(td["observation"], torch.zeros(2, 2))
    actions = [[(0.0, 1.0), (-1.0, 0.5)]] * 3
    positions, rewards, _ = _play(env, td, actions)
    steps = torch.arange(1, 4, dtype=torch.float32)[:, None]
    expected_pos = torch.stack(
        [steps * torch.tensor([0.0, 0.1]), steps * torch.tensor([-0.1, 0.05])]
    )
    torch.testing.assert_close(positions, expected_pos)
    goals = torch.tensor([[0.0, 1.0], [-0.6, 0.8]])[:, None]
    torch.testing.assert_close(rewards[..., 0], -(expected_pos - goals).norm(dim=-1))


def test_sparse_reward_inside_and_outside_the_goal_radius():
    env = PointRobotEnv(num_envs=1)
    assert env.sparse and env.goal_radius == 0.2
    td = _reset_with_task(env, [(0.0, 1.05)])
    # Straight up (0.1 per step): distance 1.05 - 0.1 t, then past the goal.
    _, rewards, _ = _play(env, td, [[(0.0, 1.0)]] * 13)
    distance = (1.05 - 0.1 * torch.arange(1, 14)).abs()
    inside = distance < 0.2
    assert inside.tolist() == [False] * 8 + [True] * 4 + [False]
    expected = torch.where(inside, 1.0 - distance, torch.zeros(13))
    torch.testing.assert_close(rewards[0, :, 0], expected)
    assert (rewards[0, ~inside, 0] == 0).all()  # outside the radius: exactly 0
    assert (rewards[0, inside, 0] >= 0.8).all()


def test_sparse_radius_boundary_is_inside():
    # Exactly representable numbers: one 0.5 step ends at distance 0.5 == goal_radius.
    env = PointRobotEnv(num_envs=2, goal_radius=0.5, step_size=0.5)
    td = _reset_with_task(env, [(1.0, 0.0), (-1.0, 0.0)])
    _, rewards, _ = _play(env, td, [[(1.0, 0.0), (1.0, 0.0)]])
    assert rewards[:, 0, 0].tolist() == [0.5, 0.0]


def test_actions_are_clipped_to_unit_bounds():
    env = PointRobotEnv(num_envs=1)
    assert env.action_spec.space.low.tolist() == [[-1.0, -1.0]]
    assert env.action_spec.space.high.tolist() == [[1.0, 1.0]]
    td = _reset_with_task(env, [(0.0, 1.0)])
    positions, _, _ = _play(env, td, [[(5.0, -3.0)], [(0.5, -1e9)]])
    torch.testing.assert_close(positions[0], torch.tensor([[0.1, -0.1], [0.15, -0.2]]))


@pytest.mark.parametrize(
    ("action", "match"),
    [
        (torch.tensor([[math.nan, 0.0], [0.0, 0.0]]), "non-finite"),
        (torch.tensor([[math.inf, 0.0], [0.0, 0.0]]), "non-finite"),
        (torch.zeros(2), "shape"),
        (torch.zeros(2, 3), "shape"),
        (torch.zeros(2, 2, dtype=torch.long), "dtype"),
    ],
)
def test_bad_actions_raise_naming_the_env(action, match):
    env = PointRobotEnv(num_envs=2)
    td = env.reset()
    td["action"] = action
    with pytest.raises(ValueError, match=f"PointRobotEnv.*{match}"):
        env._step(td)
    bamdp = BAMDPEnv(PointRobotEnv(num_envs=2), 5, 2)
    td = bamdp.reset()
    td.set("action", action)
    with pytest.raises(ValueError, match="PointRobotEnv"):
        bamdp._step(td)


def test_partial_reset_only_resets_masked_envs():
    env = PointRobotEnv(num_envs=3, sparse=False)
    td = _reset_with_task(env, [(1.0, 0.0)] * 3)
    _, _, td = _play(env, td, [[(1.0, 0.0), (0.0, 1.0), (-1.0, 0.0)]] * 2)
    td["_reset"] = torch.tensor([[False], [True], [False]])
    td["task"] = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    out = env.reset(td)
    expected = torch.tensor([[0.2, 0.0], [0.0, 0.0], [-0.2, 0.0]])
    torch.testing.assert_close(out["observation"], expected)
    out["action"] = torch.zeros(3, 2)
    nxt = env.step(out)["next"]
    torch.testing.assert_close(nxt["observation"], expected)
    # Only the masked env takes the task given to the reset; the others keep their goal.
    torch.testing.assert_close(nxt["task"], torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]))
    torch.testing.assert_close(nxt["reward"][:, 0], -(expected - nxt["task"]).norm(dim=-1))


def test_inner_episode_reset_keeps_the_goal():
    env = BAMDPEnv(PointRobotEnv(num_envs=4), episode_length=3, episodes_per_task=3, seed=0)
    rollout = env.rollout(9, break_when_any_done=False)
    task = rollout["task"]
    assert (task == task[:, :1]).all()  # one goal for the whole BAMDP
    episode_done = rollout["next", "episode_done"][..., 0]
    assert episode_done[:, [2, 5, 8]].all() and episode_done.sum() == 12
    # After an inner episode the next observation is the start state.
    assert (rollout["next", "observation"][:, [2, 5]] == 0).all()
    assert rollout["next", "done"][:, -1].all() and not rollout["next", "done"][:, :-1].any()


def test_batch_size_and_task_device():
    env = PointRobotEnv(num_envs=1024)
    td = env.reset()
    td["action"] = torch.rand(1024, 2) * 2 - 1
    nxt = env.step(td)["next"]
    assert nxt["observation"].shape == (1024, 2) and nxt["reward"].shape == (1024, 1)


def test_make_env_registers_both_reward_kinds():
    sparse = make_env("point_robot_sparse", num_envs=2, episode_length=100, episodes_per_task=3)
    dense = make_env("point_robot_dense", num_envs=2, goal_radius=0.3, grid_size=5)
    assert isinstance(sparse.task_env, PointRobotEnv) and sparse.task_env.sparse
    assert not dense.task_env.sparse and dense.task_env.goal_radius == 0.3
    assert sparse.horizon == 300
    with pytest.raises(ValueError, match="grid_size is a GridNavi option"):
        make_env("point_robot_sparse", num_envs=2, grid_size=7)
    with pytest.raises(ValueError, match="unknown option.*sparse"):
        make_env("point_robot_dense", num_envs=2, sparse=True)
    with pytest.raises(ValueError, match="finite task distribution"):
        make_env("point_robot_sparse", num_envs=2, stratified=True)
