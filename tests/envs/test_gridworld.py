"""GridNaviEnv: specs, exact dynamics, rewards and the goal distribution."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import check_env_specs, step_mdp

from torchrl_bamdp.envs import GridNaviEnv, TaskEnv, candidate_goal_cells

NOOP, UP, RIGHT, DOWN, LEFT = range(5)
NEAR_START = {(0, 0), (0, 1), (1, 0), (1, 1)}


def _reset_with_task(env: GridNaviEnv, goals: list[tuple[int, int]]) -> TensorDict:
    task = torch.tensor(goals, dtype=torch.float32)
    return env.reset(TensorDict({"task": task}, batch_size=env.batch_size))


def _play(env: GridNaviEnv, td: TensorDict, actions: list[list[int]]):
    """Step ``env`` with per-step batched actions; return positions and rewards per step."""
    positions, rewards = [], []
    for action in actions:
        td["action"] = torch.tensor(action, dtype=torch.long)
        td = env.step(td)
        positions.append(td["next", "observation"].clone())
        rewards.append(td["next", "reward"].clone())
        assert not td["next", "done"].any()
        td = step_mdp(td)
    return torch.stack(positions, 1), torch.stack(rewards, 1), td


def test_is_task_env_and_specs_pass():
    torch.manual_seed(0)
    env = GridNaviEnv(num_envs=3)
    assert isinstance(env, TaskEnv)
    assert env.batch_size == torch.Size([3])
    assert env.task_dim == 2
    assert env.num_cells == 25
    check_env_specs(env, seed=0)


def test_check_env_specs_other_grid_size():
    torch.manual_seed(0)
    check_env_specs(GridNaviEnv(num_envs=2, grid_size=7), seed=0)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="num_envs"):
        GridNaviEnv(num_envs=0)
    with pytest.raises(ValueError, match="grid_size"):
        candidate_goal_cells(2)


def test_reset_observation_is_start_and_task_is_given_goal():
    env = GridNaviEnv(num_envs=2)
    td = _reset_with_task(env, [(4, 4), (2, 3)])
    torch.testing.assert_close(td["observation"], torch.zeros(2, 2))
    torch.testing.assert_close(td["task"], torch.tensor([[4.0, 4.0], [2.0, 3.0]]))
    assert not td["done"].any() and not td["terminated"].any()


def test_scripted_moves_give_exact_positions_and_walls():
    env = GridNaviEnv(num_envs=1)
    td = _reset_with_task(env, [(2, 4)])
    script = [
        (LEFT, (0, 0)),  # wall on the left of (0, 0)
        (DOWN, (0, 0)),  # wall below (0, 0)
        (NOOP, (0, 0)),
        (UP, (0, 1)),
        (RIGHT, (1, 1)),
        (RIGHT, (2, 1)),
        (RIGHT, (3, 1)),
        (RIGHT, (4, 1)),
        (RIGHT, (4, 1)),  # wall at x = 4
        (UP, (4, 2)),
        (DOWN, (4, 1)),
        (LEFT, (3, 1)),
        (UP, (3, 2)),
        (UP, (3, 3)),
        (UP, (3, 4)),
        (UP, (3, 4)),  # wall at y = 4
        (LEFT, (2, 4)),  # the goal
        (NOOP, (2, 4)),
        (UP, (2, 4)),
        (DOWN, (2, 3)),
    ]
    positions, rewards, _ = _play(env, td, [[a] for a, _ in script])
    expected = torch.tensor([pos for _, pos in script], dtype=torch.float32)
    torch.testing.assert_close(positions[0], expected, rtol=0, atol=0)
    expected_reward = torch.tensor(
        [1.0 if pos == (2, 4) else -0.1 for _, pos in script], dtype=torch.float32
    )
    torch.testing.assert_close(rewards[0, :, 0], expected_reward, rtol=0, atol=0)


def test_reward_exact_values_and_staying_on_goal_keeps_paying():
    env = GridNaviEnv(num_envs=1)
    td = _reset_with_task(env, [(0, 2)])
    positions, rewards, _ = _play(env, td, [[UP], [UP], [NOOP], [NOOP], [UP], [DOWN]])
    assert positions[0, 1].tolist() == [0.0, 2.0]
    r = rewards[0, :, 0]
    assert r.dtype == torch.float32
    assert r[0].item() == torch.tensor(-0.1).item()
    assert r[1].item() == 1.0 and r[2].item() == 1.0 and r[3].item() == 1.0
    assert r[4].item() == torch.tensor(-0.1).item()  # moved to (0, 3)
    assert r[5].item() == 1.0  # back on the goal


def test_batched_envs_are_independent():
    env = GridNaviEnv(num_envs=3)
    td = _reset_with_task(env, [(4, 0), (0, 4), (2, 2)])
    actions = [[RIGHT, UP, UP], [RIGHT, UP, RIGHT]] * 4
    positions, rewards, _ = _play(env, td, actions)
    # Env 0 always goes right, env 1 always up, env 2 alternates up and right.
    final = positions[:, -1]
    torch.testing.assert_close(final, torch.tensor([[4.0, 0.0], [0.0, 4.0], [4.0, 4.0]]))
    torch.testing.assert_close(positions[2, 3], torch.tensor([2.0, 2.0]))
    on_goal = (positions == torch.tensor([[4.0, 0.0], [0.0, 4.0], [2.0, 2.0]])[:, None]).all(-1)
    expected = torch.where(on_goal, torch.tensor(1.0), torch.tensor(-0.1))
    torch.testing.assert_close(rewards[..., 0], expected, rtol=0, atol=0)
    assert on_goal[1].any() and on_goal[2].any()


def test_reward_matches_goal_for_every_candidate_cell():
    cells = candidate_goal_cells(5)
    env = GridNaviEnv(num_envs=len(cells))
    td = env.reset(TensorDict({"task": cells.float()}, batch_size=env.batch_size))
    # Walk to each goal: x times RIGHT then y times UP, padded with NOOP to 8 steps.
    actions = torch.full((len(cells), 8), NOOP)
    for i, (x, y) in enumerate(cells.tolist()):
        actions[i, :x] = RIGHT
        actions[i, x : x + y] = UP
    positions, rewards, _ = _play(env, td, actions.T.tolist())
    torch.testing.assert_close(positions[:, -1], cells.float())
    assert (rewards[:, -1, 0] == 1.0).all()
    steps_needed = cells.sum(-1)
    for i in range(len(cells)):
        n = int(steps_needed[i])
        assert (rewards[i, : n - 1, 0] == torch.tensor(-0.1)).all()
        assert (rewards[i, n - 1 :, 0] == 1.0).all()


def test_partial_reset_only_resets_masked_envs():
    env = GridNaviEnv(num_envs=3)
    td = _reset_with_task(env, [(4, 4), (4, 4), (4, 4)])
    _, _, td = _play(env, td, [[RIGHT, UP, RIGHT]] * 2)
    # TorchRL partial-reset semantics: pass the current tensordict plus a "_reset" mask.
    td["_reset"] = torch.tensor([[True], [False], [False]])
    # Only the masked env may take the task given here; the others keep their own goal.
    td["task"] = torch.tensor([[3.0, 3.0], [0.0, 4.0], [0.0, 4.0]])
    out = env.reset(td)
    expected_pos = torch.tensor([[0.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    torch.testing.assert_close(out["observation"], expected_pos, rtol=0, atol=0)
    out["action"] = torch.full((3,), NOOP)
    nxt = env.step(out)["next"]
    torch.testing.assert_close(nxt["observation"], expected_pos, rtol=0, atol=0)
    expected_goal = torch.tensor([[3.0, 3.0], [4.0, 4.0], [4.0, 4.0]])
    torch.testing.assert_close(nxt["task"], expected_goal, rtol=0, atol=0)


def test_done_never_fires_without_bamdp_wrapper():
    torch.manual_seed(0)
    env = GridNaviEnv(num_envs=4)
    rollout = env.rollout(200, break_when_any_done=False)
    assert rollout.batch_size == torch.Size([4, 200])
    assert not rollout["next", "done"].any()
    assert not rollout["next", "terminated"].any()
    obs = rollout["next", "observation"]
    assert obs.min() >= 0 and obs.max() <= 4
    # Consecutive positions differ by at most one step along one axis.
    prev = torch.cat([rollout["observation"][:, :1], obs[:, :-1]], 1)
    torch.testing.assert_close(prev, rollout["observation"])
    assert ((obs - prev).abs().sum(-1) <= 1).all()


def test_candidate_goal_cells_grid5():
    cells = candidate_goal_cells(5)
    assert cells.shape == (21, 2)
    assert cells.dtype == torch.long
    as_set = {tuple(c) for c in cells.tolist()}
    assert len(as_set) == 21
    assert not as_set & NEAR_START
    everything = {(x, y) for x in range(5) for y in range(5)}
    assert as_set == everything - NEAR_START


def test_candidate_goal_cells_other_size():
    cells = {tuple(c) for c in candidate_goal_cells(3).tolist()}
    assert cells == {(x, y) for x in range(3) for y in range(3)} - NEAR_START


def test_sample_tasks_reproducible_and_valid():
    env = GridNaviEnv(num_envs=1)
    a = env.sample_tasks(50, torch.Generator().manual_seed(3))
    b = env.sample_tasks(50, torch.Generator().manual_seed(3))
    c = env.sample_tasks(50, torch.Generator().manual_seed(4))
    assert a.shape == (50, 2) and a.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    valid = {tuple(c) for c in candidate_goal_cells(5).tolist()}
    assert {tuple(int(v) for v in t) for t in a.tolist()} <= valid


def test_cell_index():
    env = GridNaviEnv(num_envs=1)
    pos = torch.tensor([[0.0, 0.0], [0.0, 4.0], [4.0, 0.0], [2.0, 3.0]])
    assert env.cell_index(pos).tolist() == [0, 4, 20, 13]
