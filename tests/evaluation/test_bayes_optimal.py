"""Tests of the exact Bayes-optimal GridNavi solver (pure Python) and of its TorchRL policy."""

from __future__ import annotations

import math
from fractions import Fraction
from functools import cache

import pytest
import torch
from tensordict import TensorDict
from torchrl.collectors import Collector
from torchrl.envs import TransformedEnv

from torchrl_bamdp.envs import GridNaviEnv, make_env
from torchrl_bamdp.evaluation.meta_test import meta_test, per_episode_returns
from torchrl_bamdp.policies.bayes_optimal import (
    ACTION_MOVES,
    BayesOptimalGridNavi,
    BayesOptimalPolicy,
    GridNaviSpec,
    main,
)
from torchrl_bamdp.transforms import BELIEF_PROBS, ExactGridBelief, exact_belief_transforms


def _solver(grid_size: int, length: int, episodes: int, **rewards: float) -> BayesOptimalGridNavi:
    spec = GridNaviSpec(
        grid_size=grid_size, episode_length=length, episodes_per_task=episodes, **rewards
    )
    return BayesOptimalGridNavi(spec)


def _move(cell: tuple[int, int], action: int, grid_size: int) -> tuple[int, int]:
    dx, dy = ACTION_MOVES[action]
    return (
        min(grid_size - 1, max(0, cell[0] + dx)),
        min(grid_size - 1, max(0, cell[1] + dy)),
    )


# -- independent reference solvers ---------------------------------------------------------------
def _belief_expectimax(spec: GridNaviSpec) -> tuple[Fraction, list[Fraction]]:
    """Plain expectimax over (episode, step, position, set of goals consistent with the history).

    No score transformation, no bounds, no "stay on the goal" shortcut: every action is tried at
    every node, with the real rewards as exact fractions, and the goal-found case is just a
    singleton belief. Returns the optimal value and the per-episode expected returns of the
    policy that takes the lowest-index optimal action.
    """
    goal_r, penalty = Fraction(spec.goal_reward), Fraction(spec.step_penalty)
    length, episodes, n = spec.episode_length, spec.episodes_per_task, spec.grid_size
    goals = frozenset(spec.candidate_goals())

    @cache
    def q_values(episode: int, step: int, pos: tuple[int, int], belief: frozenset) -> list:
        values = []
        for action in range(5):
            new = _move(pos, action, n)
            if new in belief:
                p_goal = Fraction(1, len(belief))
                total = p_goal * (goal_r + value(episode, step + 1, new, frozenset([new])))
                if len(belief) > 1:
                    rest = belief - {new}
                    total += (1 - p_goal) * (penalty + value(episode, step + 1, new, rest))
            else:
                total = penalty + value(episode, step + 1, new, belief)
            values.append(total)
        return values

    @cache
    def value(episode: int, step: int, pos: tuple[int, int], belief: frozenset) -> Fraction:
        if step == length:
            return Fraction(0) if episode == episodes - 1 else value(episode + 1, 0, (0, 0), belief)
        return max(q_values(episode, step, pos, belief))

    per_episode = [Fraction(0)] * episodes
    for goal in goals:
        belief = goals
        for episode in range(episodes):
            pos = (0, 0)
            for step in range(length):
                q = q_values(episode, step, pos, belief)
                pos = _move(pos, q.index(max(q)), n)
                found = pos == goal
                per_episode[episode] += goal_r if found else penalty
                belief = frozenset([goal]) if found else belief - {pos}
    return value(0, 0, (0, 0), goals), [total / len(goals) for total in per_episode]


def _full_history_expectimax(spec: GridNaviSpec) -> Fraction:
    """Expectimax over full histories of (action, reward) pairs, no memoisation at all.

    The posterior at a history is found by replaying the history against every candidate goal.
    """
    goal_r, penalty = Fraction(spec.goal_reward), Fraction(spec.step_penalty)
    length, horizon = spec.episode_length, spec.episode_length * spec.episodes_per_task
    goals = spec.candidate_goals()

    def replay(goal: tuple[int, int], actions: list[int]) -> list[Fraction]:
        rewards, pos = [], (0, 0)
        for i, action in enumerate(actions):
            if i % length == 0:
                pos = (0, 0)
            pos = _move(pos, action, spec.grid_size)
            rewards.append(goal_r if pos == goal else penalty)
        return rewards

    def value(history: tuple[tuple[int, Fraction], ...]) -> Fraction:
        if len(history) == horizon:
            return Fraction(0)
        actions = [a for a, _ in history]
        seen = [r for _, r in history]
        posterior = [g for g in goals if replay(g, actions) == seen]
        best = None
        for action in range(5):
            outcomes: dict[Fraction, int] = {}
            for g in posterior:
                reward = replay(g, [*actions, action])[-1]
                outcomes[reward] = outcomes.get(reward, 0) + 1
            total = sum(
                Fraction(count, len(posterior)) * (reward + value((*history, (action, reward))))
                for reward, count in outcomes.items()
            )
            best = total if best is None else max(best, total)
        return best

    return value(())


# -- spec ----------------------------------------------------------------------------------------
def test_candidate_goals_exclude_the_four_cells_nearest_the_start():
    goals = GridNaviSpec().candidate_goals()
    assert len(goals) == 21
    assert not {(0, 0), (0, 1), (1, 0), (1, 1)} & set(goals)
    assert GridNaviSpec(grid_size=3).candidate_goals() == [(0, 2), (1, 2), (2, 0), (2, 1), (2, 2)]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"grid_size": 2}, "grid_size"),
        ({"grid_size": 4.0}, "grid_size"),
        ({"episode_length": 0}, "episode_length"),
        ({"episodes_per_task": 0}, "episodes_per_task"),
        ({"episodes_per_task": True}, "episodes_per_task"),
        ({"step_penalty": math.nan}, "step_penalty"),
        ({"goal_reward": -0.1}, "goal_reward"),
        ({"goal_reward": math.inf}, "goal_reward"),
    ],
)
def test_spec_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"GridNaviSpec\.{field} must"):
        GridNaviSpec(**kwargs)


# -- hand-checked values -------------------------------------------------------------------------
@pytest.mark.parametrize("grid_size", [3, 5])
def test_one_episode_of_one_step_cannot_reach_a_goal(grid_size):
    # After one step the agent is on (0,0), (0,1) or (1,0): never a candidate goal.
    solver = _solver(grid_size, 1, 1)
    assert solver.expected_returns() == pytest.approx([-0.1])
    assert solver.total_expected_return() == pytest.approx(-0.1)


def test_grid3_two_steps_two_episodes_by_hand():
    # 5 candidates. Episode 1 can only test one distance-2 cell at step 2: up, up -> (0,2).
    #   goal (0,2): 0.9 (= -0.1 + 1) in episode 1, then walks to it again: 0.9.
    #   otherwise: -0.2 in episode 1; episode 2 tests (2,0) at step 2: 0.9 if it is the goal.
    #   (1,2), (2,1), (2,2) are out of reach in 2 steps: -0.2 each episode.
    # Episode 1: (0.9 + 4 * -0.2) / 5 = 0.02; episode 2: (0.9 + 0.9 + 3 * -0.2) / 5 = 0.24.
    solver = _solver(3, 2, 2)
    assert solver.expected_returns() == pytest.approx([0.02, 0.24], abs=1e-12)
    assert solver.total_expected_return() == pytest.approx(0.26, abs=1e-12)
    assert solver.act((0, 0), 0, 0, None, None) == 1  # up and right tie: lowest index
    assert solver.act((0, 1), 1, 0, frozenset(solver.spec.candidate_goals()), None) == 1
    remaining = frozenset({(1, 2), (2, 0), (2, 1), (2, 2)})
    assert solver.act((0, 0), 0, 1, remaining, None) == 2  # heads right to (2, 0)
    assert solver.simulate((0, 2)) == pytest.approx([0.9, 0.9])
    assert solver.simulate((2, 0)) == pytest.approx([-0.2, 0.9])
    assert solver.simulate((2, 2)) == pytest.approx([-0.2, -0.2])


def test_grid3_three_steps_one_episode_by_hand():
    # Best: (0,1), (0,2), (1,2): tests (0,2) at step 2 and (1,2) at step 3 (no path tests more).
    #   goal (0,2): -0.1 + 1 + 1 = 1.9; goal (1,2): -0.1 - 0.1 + 1 = 0.8; 3 others: -0.3.
    # (1.9 + 0.8 - 0.9) / 5 = 0.36.
    solver = _solver(3, 3, 1)
    assert solver.expected_returns() == pytest.approx([0.36], abs=1e-12)


def test_grid3_four_steps_one_episode_by_hand():
    # up, up, right, right tests (0,2), (1,2), (2,2) at steps 2, 3, 4; a goal found at step t
    # returns (t - 1) * -0.1 + (5 - t) * 1: 2.9, 1.8, 0.7, and the 2 others -0.4 each.
    # (2.9 + 1.8 + 0.7 - 0.8) / 5 = 0.92.
    solver = _solver(3, 4, 1)
    assert solver.expected_returns() == pytest.approx([0.92], abs=1e-12)
    pos, remaining, actions = (0, 0), set(solver.spec.candidate_goals()), []
    for step in range(4):
        action = solver.act(pos, step, 0, frozenset(remaining), None)
        actions.append(action)
        pos = _move(pos, action, 3)
        remaining.discard(pos)
    assert actions == [1, 1, 2, 2]


def test_known_goal_return_default_by_hand():
    # Distances of the 21 goals from the start: 2 (x2), 3 (x4), 4 (x5), 5 (x4), 6 (x3), 7 (x2),
    # 8 (x1); sum 96. Return at distance d: (16 - d) - 0.1 (d - 1) = 16.1 - 1.1 d.
    # Mean: 16.1 - 1.1 * 96 / 21 = 232.5 / 21.
    assert BayesOptimalGridNavi().known_goal_return() == pytest.approx(232.5 / 21, abs=1e-12)


def test_known_goal_return_counts_out_of_reach_goals():
    # 3x3, L=2: (0,2) and (2,0) give -0.1 + 1 = 0.9; the other 3 are out of reach: -0.2.
    assert _solver(3, 2, 1).known_goal_return() == pytest.approx((1.8 - 0.6) / 5, abs=1e-12)


def test_default_first_episode_tests_a_new_cell_every_step_by_hand():
    # Episode 1 tests 14 new cells at steps 2..15: sum_t (16 - t) - 0.1 (t - 1) = 105 - 10.5,
    # the other 7 goals give -1.5: (94.5 - 10.5) / 21 = 4.0.
    returns = BayesOptimalGridNavi().expected_returns()
    assert returns[0] == pytest.approx(4.0, abs=1e-12)


# -- against independent solvers -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("grid_size", "length", "episodes", "rewards"),
    [
        (3, 4, 2, {}),
        (3, 5, 3, {}),
        (3, 3, 4, {}),
        (4, 5, 2, {}),
        (4, 6, 2, {"goal_reward": 2.0, "step_penalty": -0.5}),
        (4, 5, 2, {"goal_reward": 0.5, "step_penalty": 0.25}),
    ],
)
def test_dp_equals_belief_expectimax(grid_size, length, episodes, rewards):
    solver = _solver(grid_size, length, episodes, **rewards)
    value, per_episode = _belief_expectimax(solver.spec)
    # Exact equality: both sides are rationals built from the same float rewards.
    assert sum(solver.expected_returns_exact()) == value
    # Same lowest-index tie-breaking, so the same policy and the same per-episode returns.
    assert solver.expected_returns_exact() == per_episode


@pytest.mark.parametrize(("grid_size", "length", "episodes"), [(3, 2, 2), (3, 3, 1), (3, 4, 1)])
def test_dp_value_equals_full_history_expectimax(grid_size, length, episodes):
    solver = _solver(grid_size, length, episodes)
    assert sum(solver.expected_returns_exact()) == _full_history_expectimax(solver.spec)


@pytest.mark.parametrize(
    "spec",
    [GridNaviSpec(), GridNaviSpec(3, 4, 2), GridNaviSpec(4, 7, 3), GridNaviSpec(5, 10, 3)],
    ids=lambda s: f"{s.grid_size}x{s.grid_size}-L{s.episode_length}-K{s.episodes_per_task}",
)
def test_simulated_returns_average_to_expected_returns(spec):
    solver = BayesOptimalGridNavi(spec)
    goals = spec.candidate_goals()
    runs = [solver.simulate(goal) for goal in goals]
    for episode, expected in enumerate(solver.expected_returns()):
        mean = math.fsum(run[episode] for run in runs) / len(goals)
        assert mean == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert math.fsum(map(math.fsum, runs)) / len(goals) == pytest.approx(
        solver.total_expected_return(), rel=1e-12
    )


# -- structure of the default solution -----------------------------------------------------------
def test_default_returns_improve_then_equal_the_known_goal_return():
    solver = BayesOptimalGridNavi()
    returns = solver.expected_returns()
    known = solver.known_goal_return()
    assert len(returns) == 4
    assert returns[0] < returns[1]
    # Every goal is found within two episodes, the second one testing the 7 cells left in
    # order of distance from the start at step = distance: from episode 2 on, each episode
    # returns exactly what a walk to the known goal does.
    assert returns[1] == returns[2] == returns[3] == known
    assert solver.total_expected_return() == pytest.approx(4.0 + 3 * 232.5 / 21, abs=1e-12)
    for goal in solver.spec.candidate_goals():
        run = solver.simulate(goal)
        assert run[2] == run[3]
        assert run[1] >= run[0]


def test_more_episodes_only_add_known_goal_episodes_once_the_goal_is_surely_found():
    two, four = BayesOptimalGridNavi(GridNaviSpec(episodes_per_task=2)), BayesOptimalGridNavi()
    assert four.expected_returns()[:2] == pytest.approx(two.expected_returns(), abs=1e-12)


# -- policy interface ----------------------------------------------------------------------------
def test_act_with_a_known_goal_walks_a_shortest_path_then_stays():
    solver = BayesOptimalGridNavi()
    assert solver.act((0, 0), 0, 1, None, goal_known=(3, 0)) == 2
    assert solver.act((0, 0), 0, 1, None, goal_known=(0, 3)) == 1
    assert solver.act((0, 0), 0, 1, None, goal_known=(2, 2)) == 1  # up before right
    assert solver.act((4, 4), 0, 1, None, goal_known=(2, 2)) == 3  # down before left
    assert solver.act((2, 2), 5, 1, None, goal_known=(2, 2)) == 0
    # Out of reach in the last step: every action is equally bad, so noop.
    assert solver.act((0, 0), 14, 3, None, goal_known=(4, 4)) == 0


def test_act_with_a_single_remaining_cell_heads_for_it():
    solver = BayesOptimalGridNavi()
    assert solver.act((0, 0), 0, 0, frozenset({(4, 0)}), None) == 2
    assert solver.act((2, 0), 2, 0, frozenset({(2, 3), (2, 0)}), None) == 1  # (2,0) ruled out


def test_act_accepts_non_tuple_integer_pairs():
    solver = _solver(3, 2, 2)
    assert solver.act([0, 0], 0, 0, None, None) == 1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"position": (5, 0)}, "position"),
        ({"position": "a"}, "position"),
        ({"step_in_episode": 15}, "step_in_episode"),
        ({"step_in_episode": -1}, "step_in_episode"),
        ({"episode": 4}, "episode"),
        ({"remaining": frozenset({(0, 0), (1, 1)})}, "belief is empty"),
        ({"remaining": frozenset({(9, 9)})}, "remaining cell"),
        ({"goal_known": (0, 7)}, "goal"),
    ],
)
def test_act_rejects_bad_inputs(kwargs, match):
    args = {"position": (0, 0), "step_in_episode": 0, "episode": 0, "remaining": None}
    args["goal_known"] = None
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        BayesOptimalGridNavi().act(**args)


def test_simulate_rejects_a_non_candidate_goal():
    with pytest.raises(ValueError, match="not a candidate goal"):
        BayesOptimalGridNavi().simulate((1, 1))


def test_policy_is_deterministic_across_instances():
    spec = GridNaviSpec(4, 7, 3)
    first, second = BayesOptimalGridNavi(spec), BayesOptimalGridNavi(spec)
    for goal in spec.candidate_goals():
        assert first.simulate(goal) == second.simulate(goal)


def test_main_prints_the_returns(capsys):
    main(["--grid-size", "3", "--episode-length", "2", "--episodes", "2"])
    out = capsys.readouterr().out
    assert "episode 1: expected return 0.020000" in out
    assert "episode 2: expected return 0.240000" in out
    assert "total:     0.260000" in out
    assert "known-goal return per episode: 0.240000" in out


# -- the policy in the real env ------------------------------------------------------------------
def _policy_env(grid_size: int, length: int, episodes: int, num_envs: int, **kwargs):
    base = make_env(
        num_envs=num_envs,
        grid_size=grid_size,
        episode_length=length,
        episodes_per_task=episodes,
        **kwargs,
    )
    return TransformedEnv(base, exact_belief_transforms(grid_size=grid_size))


def _run(env, policy) -> tuple[torch.Tensor, TensorDict]:
    base = env.base_env
    with torch.no_grad():
        rollout = env.rollout(base.horizon, policy, break_when_any_done=False)
    return per_episode_returns(rollout, base.episodes_per_task), rollout


@pytest.mark.parametrize(
    ("grid_size", "length", "episodes", "copies"),
    [(5, 15, 4, 2), (5, 15, 6, 1), (3, 4, 3, 2), (3, 4, 6, 1), (4, 7, 3, 1)],
)
def test_policy_in_the_env_attains_the_dp_returns_on_stratified_tasks(
    grid_size, length, episodes, copies
):
    spec = GridNaviSpec(grid_size=grid_size, episode_length=length, episodes_per_task=episodes)
    num_goals = len(spec.candidate_goals())
    env = _policy_env(grid_size, length, episodes, copies * num_goals, stratified=True, seed=0)
    policy = BayesOptimalPolicy.from_env(env)
    assert policy.problem == spec
    returns, rollout = _run(env, policy)
    assert returns.shape == (copies * num_goals, episodes)
    # Deterministic env and policy, every goal equally often: the mean is the exact expectation.
    expected = BayesOptimalGridNavi(spec).expected_returns()
    assert returns.double().mean(0).tolist() == pytest.approx(expected, abs=1e-5)
    # Per task, the env run equals the solver's own simulation against that goal.
    goals = env.base_env.fixed_tasks.long().tolist()
    for task, goal in enumerate(goals):
        assert returns[task].tolist() == pytest.approx(
            policy.solver.simulate(tuple(goal)), abs=1e-5
        )
    assert rollout["action"].dtype == torch.long
    assert env.action_spec.is_in(rollout["action"][:, 0])


def test_policy_on_random_tasks_is_within_three_standard_errors_of_the_dp_value():
    env = _policy_env(5, 15, 4, 500, seed=123)
    policy = BayesOptimalPolicy.from_env(env)
    returns, rollout = _run(env, policy)
    goals = rollout["task"][:, 0]
    assert len(torch.unique(goals, dim=0)) == 21  # a random sample, not stratified
    total = returns.double().sum(1)
    stderr = total.std() / math.sqrt(len(total))
    value = BayesOptimalGridNavi(GridNaviSpec()).total_expected_return()
    assert abs(total.mean().item() - value) <= 3 * stderr.item()


def test_policy_handles_any_batch_shape_and_caches_states():
    policy = BayesOptimalPolicy(GridNaviSpec())
    belief = ExactGridBelief()
    td = TensorDict(
        {
            "observation": torch.zeros(2, 3, 2),
            "step_in_episode": torch.zeros(2, 3, 1, dtype=torch.long),
            "episode": torch.zeros(2, 3, 1, dtype=torch.long),
            "belief": {"probs": belief.prior.expand(2, 3, 25).clone()},
        },
        batch_size=[2, 3],
    )
    out = policy(td)
    first = policy.solver.act((0, 0), 0, 0, None, None)
    assert out["action"].shape == (2, 3) and out["action"].dtype == torch.long
    assert (out["action"] == first).all()
    assert len(policy._actions) == 1  # one distinct state, one solver call
    # A known goal (a one-hot belief) is walked to; the state after a task's end gets a noop.
    td = td[0]
    td["belief", "probs"] = torch.zeros(3, 25)
    td["belief", "probs"][:, 3 * 5 + 0] = 1.0
    td["observation"][1] = torch.tensor([3.0, 0.0])
    td["step_in_episode"][2] = 15
    td["episode"][2] = 3
    assert policy(td)["action"].tolist() == [2, 0, 0]
    # A single env (batch size 1) in the real env.
    env = _policy_env(3, 4, 2, 1, seed=0)
    returns, _ = _run(env, BayesOptimalPolicy.from_env(env))
    assert returns.shape == (1, 2)


def test_policy_needs_the_exact_belief_of_the_same_grid():
    env = make_env(num_envs=2, seed=0)
    policy = BayesOptimalPolicy.from_env(env)
    with pytest.raises(KeyError, match="ExactGridBelief"):
        env.rollout(3, policy)
    small = _policy_env(3, 4, 2, 2, seed=0)
    with pytest.raises(ValueError, match=r"\[\*batch, 25\]"):
        small.rollout(3, policy)
    td = small.reset()
    td["belief", "probs"] = torch.zeros(2, 9)
    td["belief", "probs"][:, 4] = 1.0  # (1, 1): never a candidate goal
    with pytest.raises(ValueError, match="not candidate goals"):
        BayesOptimalPolicy.from_env(small)(td)
    with pytest.raises(TypeError, match="BAMDPEnv"):
        BayesOptimalPolicy.from_env(GridNaviEnv(num_envs=1))
    assert BayesOptimalPolicy().probs_key == BELIEF_PROBS


def test_policy_runs_in_a_collector_and_meta_test():
    env = _policy_env(3, 4, 2, 5, stratified=True, seed=0)
    policy = BayesOptimalPolicy.from_env(env)
    expected = policy.solver.expected_returns()
    collector = Collector(
        env,
        policy,
        frames_per_batch=5 * 16,
        total_frames=5 * 16,
        auto_register_policy_transforms=False,
    )
    try:
        batch = next(iter(collector))
    finally:
        collector.shutdown()
    assert batch.batch_size == (5, 16)
    for task in range(2):  # two tasks per env, the belief reset in between
        returns = per_episode_returns(batch[:, 8 * task : 8 * (task + 1)], 2)
        assert returns.double().mean(0).tolist() == pytest.approx(expected, abs=1e-5)
    assert meta_test(env, policy, 2, 4).mean == pytest.approx(expected, abs=1e-5)


# -- a goal prior on a subset of the goals (a task distribution, issue 20) ---------------------
@pytest.mark.parametrize(
    ("tasks", "episodes"), [("heldout_test", 6), ("region_test", 3), ("heldout_train", 2)]
)
def test_subset_prior_dp_equals_the_policy_rolled_out_on_that_distribution(tasks, episodes):
    """The env's distribution is the policy's prior (from_env) and the DP's (spec.goals)."""
    from torchrl_bamdp.task_distributions import grid_goal_cells

    goals = grid_goal_cells(5, tasks)
    base = make_env(num_envs=len(goals), tasks=tasks, stratified=True, episodes_per_task=episodes)
    env = TransformedEnv(base, exact_belief_transforms())
    policy = BayesOptimalPolicy.from_env(env)
    assert policy.problem.goals == tuple(goals)
    rollout = env.rollout(15 * episodes, policy, break_when_any_done=False)
    simulated = per_episode_returns(rollout, episodes).double().mean(0).tolist()
    spec = GridNaviSpec(episodes_per_task=episodes, goals=tuple(goals))
    assert simulated == pytest.approx(BayesOptimalGridNavi(spec).expected_returns(), abs=1e-5)


def test_subset_prior_is_worth_more_than_the_full_one_in_episode_one():
    """Fewer goals to search: the 5 held-out goals are found sooner than 1 of 21."""
    from torchrl_bamdp.task_distributions import grid_goal_cells

    held = GridNaviSpec(episodes_per_task=6, goals=tuple(grid_goal_cells(5, "heldout_test")))
    returns = BayesOptimalGridNavi(held).expected_returns()
    assert returns == pytest.approx([9.28, 11.48, 11.48, 11.48, 11.48, 11.48])
    assert (
        returns[0] > BayesOptimalGridNavi(GridNaviSpec(episodes_per_task=6)).expected_returns()[0]
    )


@pytest.mark.parametrize("goals", [(), ((0, 0),), ((2, 0), (2, 0)), ((9, 9),), "ab"])
def test_bad_goal_priors_are_refused(goals):
    with pytest.raises(ValueError, match="GridNaviSpec.goals must be a non-empty tuple"):
        GridNaviSpec(goals=goals)
