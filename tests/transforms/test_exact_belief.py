"""ExactGridBelief / exact_belief_transforms: the exact GridNavi goal posterior, online."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.collectors import Collector
from torchrl.envs import TransformedEnv
from torchrl.envs.utils import check_env_specs, step_mdp

from torchrl_bamdp.envs import BAMDPEnv, GridNaviEnv, candidate_goal_cells, make_env
from torchrl_bamdp.transforms import (
    BELIEF_PROBS,
    ExactGridBelief,
    exact_belief_transforms,
)

GOAL_REWARD, STEP_PENALTY = 1.0, -0.1
# noop, up, right, down, left, written out independently of the package.
MOVES = {0: (0, 0), 1: (0, 1), 2: (1, 0), 3: (0, -1), 4: (-1, 0)}


def make_belief_env(
    num_envs: int = 3,
    grid_size: int = 5,
    episode_length: int = 15,
    episodes: int = 4,
    seed: int = 0,
    goals: list[tuple[int, int]] | None = None,
) -> TransformedEnv:
    fixed = None if goals is None else torch.tensor(goals, dtype=torch.float32)
    base = BAMDPEnv(
        GridNaviEnv(num_envs=num_envs, grid_size=grid_size),
        episode_length=episode_length,
        episodes_per_task=episodes,
        seed=seed,
        fixed_tasks=fixed,
    )
    return TransformedEnv(base, exact_belief_transforms(grid_size=grid_size))


def cell(x: int, y: int, grid_size: int) -> int:
    return x * grid_size + y


def prior(grid_size: int) -> torch.Tensor:
    out = torch.zeros(grid_size * grid_size)
    goals = candidate_goal_cells(grid_size)
    out[goals[:, 0] * grid_size + goals[:, 1]] = 1.0 / len(goals)
    return out


def walk_to(x_goal: int, y_goal: int):
    """Scripted policy: right until x = x_goal, then up until y = y_goal, then noop."""

    def policy(td: TensorDictBase) -> TensorDictBase:
        obs = td["observation"]
        action = torch.where(
            obs[..., 0] < x_goal,
            torch.full_like(obs[..., 0], 2),
            torch.where(obs[..., 1] < y_goal, torch.full_like(obs[..., 0], 1), 0),
        )
        td["action"] = action.long()
        return td

    return policy


def brute_force_posteriors(
    rollout: TensorDictBase, grid_size: int, episode_length: int, horizon: int
) -> torch.Tensor:
    """Posterior after every step of a ``[B, T]`` rollout, by enumerating every goal.

    For each candidate goal the env is re-simulated along the rollout's actions (start at (0, 0),
    back to the start after every ``episode_length`` steps, a new task every ``horizon`` steps);
    the posterior is uniform over the goals whose simulated rewards match every observed reward
    of the current task so far.
    """
    goals = [tuple(g) for g in candidate_goal_cells(grid_size).tolist()]
    actions = rollout["action"].tolist()
    rewards = rollout["next", "reward"][..., 0].tolist()
    num_envs, steps = rollout.batch_size
    out = torch.zeros(num_envs, steps, grid_size * grid_size)
    for b in range(num_envs):
        for t in range(steps):
            if t % horizon == 0:  # a new task: every goal is possible again
                alive = dict.fromkeys(goals, True)
            if t % episode_length == 0:
                positions = dict.fromkeys(goals, (0, 0))
            dx, dy = MOVES[actions[b][t]]
            for goal in goals:
                x, y = positions[goal]
                new = (min(grid_size - 1, max(0, x + dx)), min(grid_size - 1, max(0, y + dy)))
                positions[goal] = new
                simulated = GOAL_REWARD if new == goal else STEP_PENALTY
                if abs(simulated - rewards[b][t]) > 1e-5:
                    alive[goal] = False
            consistent = [goal for goal in goals if alive[goal]]
            for goal in consistent:
                out[b, t, cell(*goal, grid_size)] = 1.0 / len(consistent)
    return out


# -- specs and prior -----------------------------------------------------------------------------
@pytest.mark.parametrize(("num_envs", "grid_size"), [(1, 5), (4, 5), (3, 3)])
def test_check_env_specs(num_envs, grid_size):
    env = make_belief_env(num_envs=num_envs, grid_size=grid_size)
    check_env_specs(env)
    spec = env.observation_spec[BELIEF_PROBS]
    assert spec.shape == (num_envs, grid_size * grid_size)
    assert env.observation_spec["hyper_state"].shape == (num_envs, 2 + grid_size * grid_size)


def test_prior_is_uniform_over_the_21_candidates():
    env = make_belief_env(num_envs=4)
    td = env.reset()
    probs = td[BELIEF_PROBS]
    assert probs.shape == (4, 25)
    assert probs.dtype == torch.float32
    assert ((probs > 0).sum(-1) == 21).all()
    torch.testing.assert_close(probs, prior(5).expand(4, 25), rtol=0, atol=0)
    for x, y in ((0, 0), (0, 1), (1, 0), (1, 1)):
        assert (probs[:, cell(x, y, 5)] == 0).all()
    torch.testing.assert_close(probs.sum(-1), torch.ones(4))
    expected = torch.cat([td["observation"], probs], -1)
    torch.testing.assert_close(td["hyper_state"], expected, rtol=0, atol=0)


def test_cell_index_agrees_with_the_env():
    grid = GridNaviEnv(num_envs=1)
    belief = ExactGridBelief()
    position = torch.tensor([[3.0, 1.0]])
    assert belief.landing_cell(position, torch.tensor([0])).item() == grid.cell_index(position)


# -- exactness -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("grid_size", "episode_length", "episodes", "num_envs", "seed"),
    [(3, 4, 3, 16, 0), (3, 2, 4, 16, 1), (5, 15, 4, 8, 2), (5, 6, 3, 16, 3)],
)
def test_online_belief_equals_brute_force_bayes(
    grid_size, episode_length, episodes, num_envs, seed
):
    env = make_belief_env(num_envs, grid_size, episode_length, episodes, seed=seed)
    horizon = episode_length * episodes
    torch.manual_seed(seed)
    with torch.no_grad():
        rollout = env.rollout(2 * horizon, break_when_any_done=False)  # two tasks per env
    expected = brute_force_posteriors(rollout, grid_size, episode_length, horizon)
    nxt = rollout["next", *BELIEF_PROBS]
    torch.testing.assert_close(nxt, expected, rtol=0, atol=1e-6)
    # The root belief (what the policy sees) is the prior at a task start, else the last one.
    root = rollout[BELIEF_PROBS]
    torch.testing.assert_close(root[:, 0], prior(grid_size).expand(num_envs, -1), rtol=0, atol=0)
    torch.testing.assert_close(root[:, horizon], root[:, 0], rtol=0, atol=0)
    keep = [t for t in range(1, 2 * horizon) if t != horizon]
    torch.testing.assert_close(root[:, keep], nxt[:, [t - 1 for t in keep]], rtol=0, atol=0)
    for td in (rollout, rollout["next"]):
        cat = torch.cat([td["observation"], td[BELIEF_PROBS]], -1)
        torch.testing.assert_close(td["hyper_state"], cat, rtol=0, atol=0)
    # The data exercise the update: candidates were ruled out, and (small grids) goals found.
    assert ((nxt > 0).sum(-1) < len(candidate_goal_cells(grid_size))).any()
    if grid_size == 3:
        assert ((nxt > 0).sum(-1) == 1).any()


def test_goal_found_is_one_hot_and_stays_one_hot_across_inner_episodes():
    env = make_belief_env(num_envs=2, goals=[(2, 0), (2, 0)])
    with torch.no_grad():
        rollout = env.rollout(60, walk_to(2, 0), break_when_any_done=False)
    nxt = rollout["next", *BELIEF_PROBS]
    goal = torch.zeros(25)
    goal[cell(2, 0, 5)] = 1.0
    # Step 1 lands on (1, 0): not a candidate, nothing learned; step 2 lands on the goal.
    torch.testing.assert_close(nxt[:, 0], prior(5).expand(2, -1), rtol=0, atol=0)
    assert (rollout["next", "reward"][:, 1] == GOAL_REWARD).all()
    torch.testing.assert_close(nxt[:, 1:], goal.expand(2, 59, 25), rtol=0, atol=0)
    # ... including at the starts of the later inner episodes (observation back at (0, 0)).
    for start in (15, 30, 45):
        assert (rollout["observation"][:, start] == 0).all()
        torch.testing.assert_close(rollout[BELIEF_PROBS][:, start], goal.expand(2, 25))


def test_reward_on_the_last_step_of_an_inner_episode():
    # 3x3, 2 steps per episode: right, right lands on (2, 0) at the episode's last step; the
    # next observation is the start (0, 0), not the cell the reward was received in.
    env = make_belief_env(num_envs=2, grid_size=3, episode_length=2, episodes=3)
    env.base_env.fixed_tasks = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    with torch.no_grad():
        rollout = env.rollout(6, walk_to(2, 0), break_when_any_done=False)
    assert rollout["next", "episode_done"][:, 1].all()
    assert (rollout["next", "observation"][:, 1] == 0).all()
    probs = rollout["next", *BELIEF_PROBS][:, 1]
    # Env 0: the goal (2, 0) was found on the last step.
    assert rollout["next", "reward"][0, 1].item() == GOAL_REWARD
    expected = torch.zeros(9)
    expected[cell(2, 0, 3)] = 1.0
    torch.testing.assert_close(probs[0], expected, rtol=0, atol=0)
    # Env 1: (2, 0) is ruled out, the 4 other candidates stay equally likely.
    expected = prior(3) * 5 / 4
    expected[cell(2, 0, 3)] = 0.0
    torch.testing.assert_close(probs[1], expected, rtol=0, atol=1e-7)
    # Env 0 walks to the known goal in the next episodes; the belief stays one-hot.
    assert rollout["next", "reward"][0, 3].item() == GOAL_REWARD
    assert (rollout["next", *BELIEF_PROBS][0, 2:, cell(2, 0, 3)] == 1).all()


# -- resets --------------------------------------------------------------------------------------
def test_new_task_resets_the_belief_to_the_prior():
    env = make_belief_env(num_envs=2, goals=[(2, 0), (3, 0)])
    horizon = 60
    with torch.no_grad():
        rollout = env.rollout(2 * horizon, walk_to(3, 0), break_when_any_done=False)
    assert rollout["next", "done"][:, horizon - 1].all()
    assert ((rollout["next", *BELIEF_PROBS][:, horizon - 1] > 0).sum(-1) < 21).all()
    torch.testing.assert_close(rollout[BELIEF_PROBS][:, horizon], prior(5).expand(2, 25))
    # After env.reset() too.
    torch.testing.assert_close(env.reset()[BELIEF_PROBS], prior(5).expand(2, 25))


def test_partial_reset_only_resets_the_masked_belief():
    env = make_belief_env(num_envs=3, goals=[(2, 0)] * 3)
    policy = walk_to(2, 0)
    with torch.no_grad():
        td = env.reset()
        for _ in range(3):
            td = step_mdp(env.step(policy(td)))
        before = td.clone()
        assert (before[BELIEF_PROBS].max(-1).values == 1).all()
        td["_reset"] = torch.tensor([[False], [True], [False]])
        out = env.reset(td)
    torch.testing.assert_close(out[BELIEF_PROBS][1], prior(5))
    torch.testing.assert_close(out[BELIEF_PROBS][[0, 2]], before[BELIEF_PROBS][[0, 2]])


def test_collector_new_task_gets_the_prior():
    env = make_belief_env(num_envs=2, grid_size=3, episode_length=2, episodes=2, seed=4)
    torch.manual_seed(4)
    collector = Collector(
        env,
        policy=None,
        frames_per_batch=2 * 8,
        total_frames=2 * 8,
        auto_register_policy_transforms=False,
    )
    try:
        batch = next(iter(collector))
    finally:
        collector.shutdown()
    assert batch.batch_size == (2, 8)
    for start in (0, 4):
        torch.testing.assert_close(batch[BELIEF_PROBS][:, start], prior(3).expand(2, 9))
    expected = brute_force_posteriors(batch, grid_size=3, episode_length=2, horizon=4)
    torch.testing.assert_close(batch["next", *BELIEF_PROBS], expected, rtol=0, atol=1e-6)


# -- errors and helpers --------------------------------------------------------------------------
def test_inconsistent_data_raise_a_value_error_naming_the_env():
    env = make_belief_env(num_envs=2, goals=[(2, 0), (2, 0)])
    policy = walk_to(2, 0)
    td = env.reset()
    td = step_mdp(env.step(policy(td)))
    # Hand-made belief for env 1: only (4, 4) possible, but the next step finds (2, 0).
    probs = td[BELIEF_PROBS].clone()
    probs[1] = 0.0
    probs[1, cell(4, 4, 5)] = 1.0
    td[BELIEF_PROBS] = probs
    with pytest.raises(ValueError, match=r"env\(s\) \[1\]"):
        env.step(policy(td))


def test_step_without_a_belief_raises():
    env = make_belief_env(num_envs=2)
    td = env.reset().exclude("belief")
    td["action"] = torch.zeros(2, dtype=torch.long)
    with pytest.raises(KeyError, match="belief"):
        env.step(td)


def test_forward_is_not_supported():
    with pytest.raises(NotImplementedError):
        ExactGridBelief()(TensorDict({}, batch_size=[]))


def test_landing_cell_keeps_off_grid_moves_in_place_and_accepts_action_layouts():
    belief = ExactGridBelief(grid_size=3)
    corners = torch.tensor([[0.0, 0.0], [0.0, 0.0], [2.0, 2.0], [2.0, 2.0], [1.0, 1.0]])
    index = torch.tensor([3, 4, 1, 2, 0])
    expected = [0, 0, 8, 8, 4]
    assert belief.landing_cell(corners, index).tolist() == expected
    assert belief.landing_cell(corners, index[:, None]).tolist() == expected
    one_hot = torch.nn.functional.one_hot(index, 5)
    assert belief.landing_cell(corners, one_hot).tolist() == expected
    with pytest.raises(ValueError, match="action of shape"):
        belief.landing_cell(corners, index[:3])


def test_update_is_exact_bayes_on_a_hand_example():
    belief = ExactGridBelief(grid_size=3)
    probs = belief.prior.expand(2, 9)
    position = torch.tensor([[1.0, 2.0], [1.0, 2.0]])
    action = torch.tensor([2, 2])  # both land on (2, 2)
    reward = torch.tensor([[STEP_PENALTY], [GOAL_REWARD]])
    out = belief.update(probs, position, action, reward)
    expected = torch.zeros(2, 9)
    expected[0, [cell(0, 2, 3), cell(1, 2, 3), cell(2, 0, 3), cell(2, 1, 3)]] = 0.25
    expected[1, cell(2, 2, 3)] = 1.0
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="rule out every candidate"):
        belief.update(out, position, action, reward.flip(0))


def test_custom_candidates_and_validation():
    belief = ExactGridBelief(grid_size=3, candidates=torch.tensor([[2, 2], [0, 2]]))
    expected = torch.zeros(9)
    expected[[cell(2, 2, 3), cell(0, 2, 3)]] = 0.5
    torch.testing.assert_close(belief.prior, expected)
    with pytest.raises(ValueError, match="on the 3x3 grid"):
        ExactGridBelief(grid_size=3, candidates=torch.tensor([[3, 0]]))
    with pytest.raises(ValueError, match=r"\[G, 2\]"):
        ExactGridBelief(grid_size=3, candidates=torch.zeros(0, 2, dtype=torch.long))


def test_from_env_and_compose():
    env = make_env(num_envs=2, grid_size=4, seed=0)
    belief = ExactGridBelief.from_env(TransformedEnv(env, exact_belief_transforms(grid_size=4)))
    assert belief.grid_size == 4 and belief.num_cells == 16
    torch.testing.assert_close(belief.prior, prior(4))
    with pytest.raises(TypeError, match="GridNaviEnv"):
        ExactGridBelief.from_env(object())
    composed = exact_belief_transforms(grid_size=3)
    assert isinstance(composed[0], ExactGridBelief)
    assert composed[1].out_keys == ["hyper_state"]
    assert BELIEF_PROBS == ("belief", "probs")


def test_goal_found_on_the_last_step_of_episode_one_on_the_default_grid():
    """5x5, 15 steps: 11 noops and 4 ups reach the goal (0, 4) on the episode's last step.
    The posterior is one-hot there although the next observation is the start (0, 0), and its
    landing cell is the true terminal observation the env keeps."""
    env = make_belief_env(num_envs=1, goals=[(0, 4)])
    actions = ([0] * 11 + [1] * 4) * 4
    calls = {"t": 0}

    def policy(td: TensorDictBase) -> TensorDictBase:
        td["action"] = torch.tensor([actions[calls["t"]]])
        calls["t"] += 1
        return td

    with torch.no_grad():
        rollout = env.rollout(60, policy, break_when_any_done=False)
    nxt = rollout["next"]
    assert nxt["reward"][0, 14].item() == GOAL_REWARD and (nxt["reward"][0, :14] < 0).all()
    assert (nxt["observation"][0, 14] == 0).all()
    assert nxt["true_observation"][0, 14].tolist() == [0.0, 4.0]
    expected = torch.zeros(25)
    expected[cell(0, 4, 5)] = 1.0
    torch.testing.assert_close(nxt[BELIEF_PROBS][0, 14], expected, rtol=0, atol=0)
    torch.testing.assert_close(rollout[BELIEF_PROBS][0, 15], expected, rtol=0, atol=0)
    # Before that step only the visited candidates were ruled out: (0, 2) and (0, 3).
    assert int((nxt[BELIEF_PROBS][0, 13] > 0).sum()) == 21 - 2


def test_landing_cell_is_the_true_observation_on_every_step():
    env = make_belief_env(num_envs=8, seed=3)
    belief = env.transform[0]
    torch.manual_seed(0)
    with torch.no_grad():
        rollout = env.rollout(60, break_when_any_done=False)
    landed = belief.landing_cell(rollout["observation"], rollout["action"])
    true_cell = rollout["next", "true_observation"].long()
    assert torch.equal(landed, true_cell[..., 0] * 5 + true_cell[..., 1])
    ends = rollout["next", "episode_done"][..., 0] & ~rollout["next", "done"][..., 0]
    assert bool((rollout["next", "true_observation"][ends] != 0).any())  # a real check


# -- whose prior: the env's, or a training prior with a fallback (issue 20) -----------------------
def _walk(env: TransformedEnv, actions: list[int]) -> TensorDictBase:
    """Step a 1-env belief env through ``actions``; return the last tensordict (root side)."""
    td = env.reset()
    for action in actions:
        td["action"] = torch.tensor([action])
        td = step_mdp(env.step(td))
    return td


def _support(td: TensorDictBase) -> set[int]:
    return set((td[BELIEF_PROBS][0] > 0).nonzero().flatten().tolist())


def test_default_prior_is_the_attached_envs_task_distribution():
    """The agent that knows the prior of the tasks it is given (the Bayes-optimal reference)."""
    from torchrl_bamdp.task_distributions import grid_goal_cells

    env = TransformedEnv(make_env(num_envs=2, tasks="heldout_test"), exact_belief_transforms())
    cells = {x * 5 + y for x, y in grid_goal_cells(5, "heldout_test")}
    assert _support(env.reset()) == cells
    check_env_specs(env, seed=0)


def test_training_prior_falls_back_once_every_training_goal_is_ruled_out():
    """Prior U({(2,0), (3,0)}), fallback every goal; true goal (4, 0), outside the prior."""
    goal = torch.tensor([[4.0, 0.0]])
    base = BAMDPEnv(GridNaviEnv(num_envs=1), 15, 2, fixed_tasks=goal)
    belief = ExactGridBelief(
        candidates=torch.tensor([[2, 0], [3, 0]]), fallback=candidate_goal_cells(5)
    )
    env = TransformedEnv(base, belief)
    assert _support(env.reset()) == {10, 15}
    td = _walk(env, [2, 2])  # (1,0) then (2,0): one training goal left
    assert _support(td) == {15}
    td = _walk(env, [2, 2, 2])  # (3,0) too: the training prior is empty -> every other goal
    expected = {x * 5 + y for x, y in candidate_goal_cells(5).tolist()} - {10, 15}
    assert _support(td) == expected
    assert torch.allclose(td[BELIEF_PROBS][0, list(expected)], torch.tensor(1 / len(expected)))
    td = _walk(env, [2, 2, 2, 2])  # lands on (4, 0): the goal
    assert _support(td) == {20}


def test_a_goal_found_outside_the_training_prior_is_believed():
    base = BAMDPEnv(GridNaviEnv(num_envs=1), 15, 2, fixed_tasks=torch.tensor([[2.0, 0.0]]))
    belief = ExactGridBelief(candidates=torch.tensor([[4, 4]]), fallback=candidate_goal_cells(5))
    env = TransformedEnv(base, belief)
    td = _walk(env, [2, 2])  # (2, 0): reward 1 where the training prior has no mass
    assert _support(td) == {10}


def test_without_fallback_an_outside_goal_is_an_error_naming_the_cure():
    base = BAMDPEnv(GridNaviEnv(num_envs=1), 15, 2, fixed_tasks=torch.tensor([[2.0, 0.0]]))
    env = TransformedEnv(base, ExactGridBelief(candidates=torch.tensor([[4, 4]])))
    with pytest.raises(ValueError, match="give the transform a fallback prior"):
        _walk(env, [2, 2])
