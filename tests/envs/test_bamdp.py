"""BAMDPEnv: the multi-episode horizon, task sampling and TorchRL done semantics."""

from __future__ import annotations

import pytest
import torch
from torchrl.collectors import Collector
from torchrl.envs import TransformedEnv
from torchrl.envs.utils import check_env_specs, step_mdp

from torchrl_bamdp.envs import BAMDPEnv, GridNaviEnv, candidate_goal_cells
from torchrl_bamdp.modules import BeliefEncoder
from torchrl_bamdp.transforms import varibad_transforms

EPISODE_LENGTH = 15
EPISODES = 4
HORIZON = EPISODE_LENGTH * EPISODES
MOVES = ((0, 0), (0, 1), (1, 0), (0, -1), (-1, 0))


def make_env(num_envs: int = 2, seed: int = 0) -> BAMDPEnv:
    return BAMDPEnv(GridNaviEnv(num_envs=num_envs), EPISODE_LENGTH, EPISODES, seed=seed)


def scripted_policy(actions: torch.Tensor):
    """A policy that plays ``actions[:, t]`` at its ``t``-th call."""
    counter = {"t": 0}

    def policy(td):
        td["action"] = actions[:, counter["t"]].clone()
        counter["t"] += 1
        return td

    return policy


def reference_bamdp(goals, actions, episode_length=EPISODE_LENGTH, grid=5):
    """Plain-python GridNavi BAMDP: per env, lists of (next position, reward, episode_done)."""
    results = []
    for goal, acts in zip(goals, actions, strict=True):
        x, y, k = 0, 0, 0
        rows = []
        for a in acts:
            dx, dy = MOVES[a]
            x, y = min(max(x + dx, 0), grid - 1), min(max(y + dy, 0), grid - 1)
            reward = 1.0 if (x, y) == tuple(goal) else -0.1
            k += 1
            ep_done = k == episode_length
            rows.append(((x, y), reward, ep_done))
            if ep_done:
                k = 0
                x, y = 0, 0
        results.append(rows)
    return results


def test_check_env_specs_bamdp():
    torch.manual_seed(0)
    env = make_env(3)
    check_env_specs(env, seed=0)
    assert env.horizon == HORIZON


def test_check_env_specs_varibad_transformed_env():
    torch.manual_seed(0)
    encoder = BeliefEncoder(obs_dim=2, action_dim=5, discrete_actions=True)
    env = TransformedEnv(make_env(3), varibad_transforms(encoder))
    check_env_specs(env, seed=0)
    assert "hyper_state" in list(env.observation_spec.keys())


def test_invalid_arguments():
    with pytest.raises(TypeError, match="TaskEnv"):
        BAMDPEnv(object(), EPISODE_LENGTH, EPISODES)
    with pytest.raises(ValueError, match="episode_length"):
        BAMDPEnv(GridNaviEnv(), 0, EPISODES)
    with pytest.raises(ValueError, match="episodes_per_task"):
        BAMDPEnv(GridNaviEnv(), EPISODE_LENGTH, 0)


def test_horizon_flags_and_episode_counter():
    torch.manual_seed(0)
    env = make_env(3)
    rollout = env.rollout(HORIZON, break_when_any_done=False)
    assert rollout.batch_size == torch.Size([3, HORIZON])
    steps = torch.arange(1, HORIZON + 1)  # step number of each transition (1-based)
    ep_done = rollout["next", "episode_done"][..., 0]
    expected_ep_done = steps % EPISODE_LENGTH == 0
    assert torch.equal(ep_done, expected_ep_done.expand(3, -1))
    assert expected_ep_done.nonzero().flatten().add(1).tolist() == [15, 30, 45, 60]
    # The counter before a step is the index of the current episode; after it, completed ones.
    assert torch.equal(rollout["episode"][..., 0], ((steps - 1) // EPISODE_LENGTH).expand(3, -1))
    assert torch.equal(rollout["next", "episode"][..., 0], (steps // EPISODE_LENGTH).expand(3, -1))
    assert rollout["next", "episode"][:, -1].eq(EPISODES).all()
    # TorchRL done/truncated only at the end of the BAMDP, never terminated.
    only_last = torch.zeros(3, HORIZON, dtype=torch.bool)
    only_last[:, -1] = True
    assert torch.equal(rollout["next", "done"][..., 0], only_last)
    assert torch.equal(rollout["next", "truncated"][..., 0], only_last)
    assert not rollout["next", "terminated"].any()
    assert not rollout["done"].any()


def test_inner_reset_goes_back_to_start_in_same_task():
    torch.manual_seed(0)
    n = 64
    env = make_env(n, seed=1)
    actions = torch.randint(0, 5, (n, HORIZON))
    # Bias towards up/right so that goals get reached in some envs.
    actions = torch.where(torch.rand(n, HORIZON) < 0.6, torch.randint(1, 3, (n, HORIZON)), actions)
    rollout = env.rollout(HORIZON, policy=scripted_policy(actions), break_when_any_done=False)
    goals = rollout["task"][:, 0].long()
    # The task never changes within the BAMDP.
    assert torch.equal(rollout["task"], goals[:, None].float().expand(n, HORIZON, 2))
    assert torch.equal(rollout["next", "task"], rollout["task"])
    ref = reference_bamdp(goals.tolist(), actions.tolist())
    expected_obs = torch.zeros(n, HORIZON, 2)
    expected_reward = torch.zeros(n, HORIZON)
    for i, rows in enumerate(ref):
        for t, ((x, y), reward, ep_done) in enumerate(rows):
            # After an inner episode end (but not at the BAMDP end) the next obs is the start.
            last = t == HORIZON - 1
            expected_obs[i, t] = torch.tensor([0.0, 0.0] if ep_done and not last else [x, y])
            expected_reward[i, t] = reward
    torch.testing.assert_close(rollout["next", "observation"], expected_obs, rtol=0, atol=0)
    # The true observation is the cell every step landed in, inner-episode ends included.
    expected_true = torch.tensor([[cell for cell, _, _ in rows] for rows in ref], dtype=torch.float)
    torch.testing.assert_close(rollout["next", "true_observation"], expected_true, rtol=0, atol=0)
    torch.testing.assert_close(rollout["next", "reward"][..., 0], expected_reward)
    inner_ends = [EPISODE_LENGTH * k - 1 for k in range(1, EPISODES)]
    assert rollout["next", "observation"][:, inner_ends].eq(0).all()
    # The step that ends an episode is rewarded at the true position (before the restart), and
    # the goal is reached in at least some envs, so +1 rewards are exercised.
    assert (rollout["next", "reward"] == 1.0).any()
    # The root observation of step t+1 is the next observation of step t.
    torch.testing.assert_close(
        rollout["observation"][:, 1:], rollout["next", "observation"][:, :-1]
    )


def test_last_step_observation_is_true_state():
    env = make_env(2)
    actions = torch.full((2, HORIZON), 1)  # always up
    rollout = env.rollout(HORIZON, policy=scripted_policy(actions), break_when_any_done=False)
    torch.testing.assert_close(
        rollout["next", "observation"][:, -1], torch.tensor([[0.0, 4.0]] * 2)
    )
    torch.testing.assert_close(
        rollout["next", "observation"][:, 13], torch.tensor([[0.0, 4.0]] * 2)
    )
    torch.testing.assert_close(rollout["next", "observation"][:, 14], torch.zeros(2, 2))


def test_true_observation_at_inner_episode_ends():
    env = make_env(2)
    assert "true_observation" in env.observation_spec
    actions = torch.full((2, HORIZON), 1)  # always up: (0, 4) from the 5th step of an episode
    rollout = env.rollout(HORIZON, policy=scripted_policy(actions), break_when_any_done=False)
    ends = rollout["next", "episode_done"][0, :, 0].nonzero().flatten().tolist()
    assert ends == [14, 29, 44, 59]
    for end in ends[:-1]:
        # The policy's next observation is the start state, the true one the last cell.
        assert rollout["next", "observation"][:, end].eq(0).all()
        torch.testing.assert_close(
            rollout["next", "true_observation"][:, end], torch.tensor([[0.0, 4.0]] * 2)
        )
    others = torch.ones(HORIZON, dtype=torch.bool)
    others[ends[:-1]] = False
    torch.testing.assert_close(
        rollout["next", "true_observation"][:, others], rollout["next", "observation"][:, others]
    )
    # At a reset (a new task) nothing has been landed in yet: the start observation.
    td = env.reset()
    torch.testing.assert_close(td["true_observation"], td["observation"])
    # A copy, never the same storage as the policy's observation.
    out = env.step(env.rand_action(td))["next"]
    assert out["true_observation"].data_ptr() != out["observation"].data_ptr()


def test_true_observation_on_every_env_family():
    """Point robot and MuJoCo go through the same BAMDPEnv: the true last state is kept."""
    from torchrl_bamdp.envs import make_env as make_family_env

    for name, length in (("point_robot_sparse", 3), ("cheetah_vel", 2)):
        try:
            env = make_family_env(name, num_envs=2, seed=0, episode_length=length)
        except ImportError as err:  # pragma: no cover - MuJoCo missing
            pytest.skip(str(err))
        torch.manual_seed(0)
        with torch.no_grad():
            rollout = env.rollout(2 * length, break_when_any_done=False)
        end = length - 1
        nxt = rollout["next"]
        # After the inner reset the policy sees a start state, the encoder the true last one,
        # and the next step starts from that start state.
        assert not torch.equal(nxt["true_observation"][:, end], nxt["observation"][:, end])
        torch.testing.assert_close(rollout["observation"][:, end + 1], nxt["observation"][:, end])
        torch.testing.assert_close(nxt["true_observation"][:, 0], nxt["observation"][:, 0])
        check_env_specs(env, seed=0)
        env.close()


def test_tasks_reproducible_from_seed():
    n = 64
    a = make_env(n, seed=7).reset()["task"]
    b = make_env(n, seed=7).reset()["task"]
    c = make_env(n, seed=8).reset()["task"]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    # The tasks are those of sample_tasks with a generator of that seed.
    expected = GridNaviEnv(num_envs=1).sample_tasks(n, torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, expected, rtol=0, atol=0)
    # set_seed rewinds the task generator.
    env = make_env(n, seed=7)
    first = env.reset()["task"]
    second = env.reset()["task"]
    assert not torch.equal(first, second)
    env.set_seed(7)
    torch.testing.assert_close(env.reset()["task"], first, rtol=0, atol=0)


def test_task_sampling_roughly_uniform():
    cells = candidate_goal_cells(5)
    n, resets = 2100, 5
    env = make_env(n, seed=123)
    tasks = torch.cat([env.reset()["task"] for _ in range(resets)]).long()
    index = (tasks[:, None, :] == cells[None]).all(-1)  # [S, 21]
    assert index.sum(-1).eq(1).all(), "every sampled task is exactly one candidate cell"
    counts = index.sum(0).float()
    expected = n * resets / len(cells)
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    # 20 degrees of freedom: mean 20, P(chi2 > 80) < 1e-8.
    assert chi2 < 80.0, chi2
    assert counts.min() > 0.8 * expected and counts.max() < 1.2 * expected


def test_new_task_after_done_when_rollout_continues():
    torch.manual_seed(0)
    n, seed = 16, 5
    env = make_env(n, seed=seed)
    rollout = env.rollout(2 * HORIZON, break_when_any_done=False)
    g = torch.Generator().manual_seed(seed)
    first = GridNaviEnv(num_envs=1).sample_tasks(n, g)
    second = GridNaviEnv(num_envs=1).sample_tasks(n, g)
    assert not torch.equal(first, second)
    torch.testing.assert_close(rollout["task"][:, :HORIZON], first[:, None].expand(n, HORIZON, 2))
    torch.testing.assert_close(rollout["task"][:, HORIZON:], second[:, None].expand(n, HORIZON, 2))
    # The second BAMDP starts from scratch.
    assert rollout["observation"][:, HORIZON].eq(0).all()
    assert rollout["episode"][:, HORIZON].eq(0).all()
    done = rollout["next", "done"][..., 0]
    assert done.sum().item() == 2 * n
    assert done[:, HORIZON - 1].all() and done[:, -1].all()
    assert torch.equal(
        rollout["next", "episode_done"][..., 0].sum(1), torch.full((n,), 2 * EPISODES)
    )


def test_collector_reset_samples_new_task():
    torch.manual_seed(0)
    n = 4
    env = make_env(n, seed=11)
    collector = Collector(
        env,
        policy=None,
        frames_per_batch=n * 2 * HORIZON,
        total_frames=n * 2 * HORIZON,
        auto_register_policy_transforms=False,
    )
    try:
        batch = next(iter(collector))
    finally:
        collector.shutdown()
    assert batch.batch_size == torch.Size([n, 2 * HORIZON])
    g = torch.Generator().manual_seed(11)
    first = GridNaviEnv(num_envs=1).sample_tasks(n, g)
    second = GridNaviEnv(num_envs=1).sample_tasks(n, g)
    torch.testing.assert_close(batch["task"][:, 0], first)
    torch.testing.assert_close(batch["task"][:, HORIZON - 1], first)
    torch.testing.assert_close(batch["task"][:, HORIZON], second)
    assert batch["observation"][:, HORIZON].eq(0).all()
    assert batch["episode"][:, HORIZON].eq(0).all()
    assert batch["next", "done"][..., 0].sum().item() == 2 * n


def test_partial_reset_only_resets_masked_envs():
    n, seed = 4, 3
    env = make_env(n, seed=seed)
    g = torch.Generator().manual_seed(seed)
    first = GridNaviEnv(num_envs=1).sample_tasks(n, g)
    td = env.reset()
    torch.testing.assert_close(td["task"], first)
    actions = torch.tensor([1, 2, 1, 2])
    for _ in range(20):  # one inner episode and 5 steps into the second
        td["action"] = actions.clone()
        td = step_mdp(env.step(td))
    expected_pos = torch.tensor([[0.0, 4.0], [4.0, 0.0], [0.0, 4.0], [4.0, 0.0]])
    torch.testing.assert_close(td["observation"], expected_pos)
    assert td["episode"][..., 0].tolist() == [1, 1, 1, 1]

    mask = torch.tensor([True, False, True, False])
    td["_reset"] = mask[:, None]
    out = env.reset(td)
    new_tasks = GridNaviEnv(num_envs=1).sample_tasks(2, g)
    torch.testing.assert_close(out["observation"][mask], torch.zeros(2, 2))
    torch.testing.assert_close(out["observation"][~mask], expected_pos[~mask])
    assert out["episode"][..., 0].tolist() == [0, 1, 0, 1]
    torch.testing.assert_close(out["task"][mask], new_tasks)
    torch.testing.assert_close(out["task"][~mask], first[~mask])

    # The unmasked envs keep their step-in-episode counter: their episode ends 10 steps later,
    # the masked ones after a full 15 steps.
    td = out.exclude("_reset")
    ends = []
    for _ in range(15):
        td["action"] = actions.clone()
        nxt = env.step(td)
        ends.append(nxt["next", "episode_done"][..., 0])
        td = step_mdp(nxt)
    ends = torch.stack(ends, 1)
    assert ends[~mask].nonzero()[:, 1].tolist() == [9, 9]
    assert ends[mask].nonzero()[:, 1].tolist() == [14, 14]
    assert td["episode"][..., 0].tolist() == [1, 2, 1, 2]


def test_stratified_env_covers_every_goal_equally_and_keeps_them_across_resets():
    from torchrl_bamdp.envs import candidate_goal_cells, make_env

    env = make_env("gridworld", num_envs=42, stratified=True, seed=0)
    first = env.reset()["task"]
    goals = candidate_goal_cells(5).float()
    counts = (first[:, None, :] == goals[None]).all(-1).sum(0)
    assert counts.tolist() == [2] * 21
    # Every new task (reset) gets the same fixed task again: no sampling noise in evaluation.
    assert torch.equal(env.reset()["task"], first)


def test_stratified_env_rejects_a_batch_that_is_not_a_multiple_of_the_goals():
    from torchrl_bamdp.envs import make_env

    with pytest.raises(ValueError, match="multiple of the number of tasks"):
        make_env("gridworld", num_envs=20, stratified=True)


def test_fixed_tasks_must_match_the_batch():
    with pytest.raises(ValueError, match="fixed_tasks must have shape"):
        BAMDPEnv(GridNaviEnv(num_envs=3), 15, 4, fixed_tasks=torch.zeros(2, 2))


def test_end_of_a_task_is_truncated_or_terminated_by_option():
    from torchrl.objectives.value.functional import generalized_advantage_estimate

    for end, terminated in (("truncated", False), ("terminated", True)):
        env = BAMDPEnv(GridNaviEnv(num_envs=2), episode_length=3, episodes_per_task=2, end=end)
        rollout = env.rollout(6, break_when_any_done=False)
        last = rollout["next"][:, -1]
        assert bool(last["done"].all())
        assert bool(last["terminated"].all()) is terminated
        assert bool(last["truncated"].all()) is not terminated
        # inner-episode ends are neither
        assert not bool(rollout["next", "terminated"][:, 2].any())
        assert not bool(rollout["next", "truncated"][:, 2].any())
        # GAE bootstraps from V(s_H+) only when truncated
        reward = torch.zeros(1, 6, 1)
        value = torch.zeros(1, 6, 1)
        next_value = torch.ones(1, 6, 1)
        adv, _ = generalized_advantage_estimate(
            1.0,
            1.0,
            value,
            next_value,
            reward,
            rollout["next", "done"][:1],
            rollout["next", "terminated"][:1],
        )
        assert float(adv[0, -1, 0]) == (0.0 if terminated else 1.0)
    with pytest.raises(ValueError, match=r"end must be one of \['truncated', 'terminated'\]"):
        BAMDPEnv(GridNaviEnv(num_envs=2), episode_length=3, episodes_per_task=2, end="done")
