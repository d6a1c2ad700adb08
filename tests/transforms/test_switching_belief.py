"""SwitchingGridBelief: the exact GridNavi goal posterior when the goal switches (HMM filter)."""

from __future__ import annotations

import itertools

import pytest
import torch
from tensordict import TensorDictBase
from torchrl.envs import TransformedEnv
from torchrl.envs.utils import check_env_specs

from torchrl_bamdp.envs import TASK_SWITCHED, BAMDPEnv, GridNaviEnv, make_switching_env
from torchrl_bamdp.transforms import (
    BELIEF_FILTERED,
    BELIEF_PROBS,
    ExactGridBelief,
    SwitchingGridBelief,
    switching_belief_transforms,
)

GOAL_REWARD, STEP_PENALTY = 1.0, -0.1


def belief_env(
    num_envs: int, horizon: int, hazard: float, seed: int, grid_size: int = 5
) -> TransformedEnv:
    base = make_switching_env(
        "gridworld",
        num_envs=num_envs,
        horizon=horizon,
        hazard=hazard,
        seed=seed,
        grid_size=grid_size,
    )
    return TransformedEnv(base, switching_belief_transforms(hazard=hazard, grid_size=grid_size))


def candidates(grid_size: int) -> list[tuple[int, int]]:
    """All cells but the four nearest the start (written out independently of the package)."""
    return [(x, y) for x in range(grid_size) for y in range(grid_size) if not (x <= 1 and y <= 1)]


def brute_force(
    landed: list[tuple[int, int]], rewards: list[float], hazard: float, grid_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(predictive, filtered) posteriors after ``len(rewards)`` steps, by enumerating every goal
    sequence m_0 .. m_T: prior(m_0) prod_t p(m_{t+1} | m_t), times the indicator that each reward
    r_{t+1} is what goal m_t gives in the landed cell; marginalised on m_T and on m_{T-1}."""
    goals = candidates(grid_size)
    prior = 1.0 / len(goals)
    steps = len(rewards)
    predictive = torch.zeros(grid_size * grid_size, dtype=torch.float64)
    filtered = torch.zeros_like(predictive)
    for sequence in itertools.product(goals, repeat=steps + 1):
        weight = prior
        for t in range(steps):
            expected = GOAL_REWARD if landed[t] == sequence[t] else STEP_PENALTY
            if abs(expected - rewards[t]) > 1e-6:
                weight = 0.0
                break
            stay = 1.0 - hazard if sequence[t + 1] == sequence[t] else 0.0
            weight *= stay + hazard * prior
        if weight:
            last, before = sequence[steps], sequence[steps - 1]
            predictive[last[0] * grid_size + last[1]] += weight
            filtered[before[0] * grid_size + before[1]] += weight
    return predictive / predictive.sum(), filtered / filtered.sum()


def test_check_env_specs() -> None:
    check_env_specs(belief_env(num_envs=3, horizon=20, hazard=0.1, seed=0))
    base = make_switching_env("gridworld", num_envs=2, horizon=10, hazard=0.3, grid_size=3)
    check_env_specs(TransformedEnv(base, SwitchingGridBelief.from_env(base)))


@pytest.mark.parametrize("hazard", [0.3, 0.05, 1.0])
def test_equals_brute_force_bayes(hazard: float) -> None:
    # 3x3 grid: 5 candidate goals, 5 steps -> 5^6 = 15,625 goal sequences per env and step.
    grid_size, steps, num_envs = 3, 5, 8
    env = belief_env(num_envs, steps, hazard, seed=4, grid_size=grid_size)
    # A sweep over 4 of the 5 candidates, (2,0) (2,1) (2,2) (1,2), so goals get found too.
    sweep = torch.tensor([2, 2, 1, 1, 4])

    def policy(td: TensorDictBase) -> TensorDictBase:
        td["action"] = sweep[td["step_in_episode"][..., 0]]
        return td

    rollout = env.rollout(steps, policy, break_when_any_done=False)
    checked_goal_reward = 0
    for i in range(num_envs):
        landed = [tuple(c) for c in rollout["next", "observation"][i].long().tolist()]
        rewards = rollout["next", "reward"][i, :, 0].tolist()
        checked_goal_reward += sum(r > 0 for r in rewards)
        for t in range(1, steps + 1):
            predictive, filtered = brute_force(landed[:t], rewards[:t], hazard, grid_size)
            got = rollout["next", BELIEF_PROBS][i, t - 1].double()
            got_filtered = rollout["next", BELIEF_FILTERED][i, t - 1].double()
            torch.testing.assert_close(got, predictive, atol=1e-6, rtol=0)
            torch.testing.assert_close(got_filtered, filtered, atol=1e-6, rtol=0)
    assert checked_goal_reward > 0  # the rollout exercised the "goal found" likelihood too


def test_hazard_zero_equals_exact_grid_belief() -> None:
    env = belief_env(num_envs=8, horizon=60, hazard=0.0, seed=1)
    rollout = env.rollout(60, break_when_any_done=False)
    exact = ExactGridBelief()
    probs = rollout[BELIEF_PROBS][:, 0]
    assert torch.equal(probs, exact.prior.expand_as(probs))
    for t in range(60):
        probs = exact.update(
            probs,
            rollout["observation"][:, t],
            rollout["action"][:, t],
            rollout["next", "reward"][:, t],
        )
        torch.testing.assert_close(rollout["next", BELIEF_PROBS][:, t], probs, atol=1e-6, rtol=0)
        torch.testing.assert_close(rollout["next", BELIEF_FILTERED][:, t], probs, atol=1e-6, rtol=0)
    assert bool((rollout["next", "reward"] > 0).any())


def test_on_plain_bamdp_with_hazard_zero_matches_exact_belief_online() -> None:
    base = BAMDPEnv(GridNaviEnv(num_envs=4), episode_length=15, episodes_per_task=1, seed=3)
    exact = TransformedEnv(base, ExactGridBelief()).rollout(15, break_when_any_done=False)
    base = BAMDPEnv(GridNaviEnv(num_envs=4), episode_length=15, episodes_per_task=1, seed=3)
    env = TransformedEnv(base, SwitchingGridBelief(hazard=0.0))
    actions = exact["action"]

    def replay(td: TensorDictBase) -> TensorDictBase:
        td["action"] = actions[:, int(td["step_in_episode"][0, 0])]
        return td

    switching = env.rollout(15, replay, break_when_any_done=False)
    torch.testing.assert_close(switching["next", BELIEF_PROBS], exact["next", BELIEF_PROBS])


def test_sums_to_one_stays_on_candidates_and_keeps_the_true_goal() -> None:
    hazard = 0.05
    env = belief_env(num_envs=16, horizon=400, hazard=hazard, seed=2)
    rollout = env.rollout(400, break_when_any_done=False)
    assert bool(rollout["next", TASK_SWITCHED].any())
    support = ExactGridBelief().prior > 0
    for key in (BELIEF_PROBS, BELIEF_FILTERED):
        probs = rollout["next", key]
        torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]), atol=1e-5, rtol=0)
        assert bool((probs[..., ~support] == 0).all()) and bool((probs >= 0).all())
    # The predictive belief never drops below the switch mass h / G on any candidate.
    assert bool((rollout["next", BELIEF_PROBS][..., support] >= hazard / 21 - 1e-7).all())
    # The goal that produced each reward (the root task) is never ruled out by the filter, and
    # the belief is about the goal in force: the true goal's mass after a goal reward without a
    # switch is (1 - h) + h / G.
    cell = (rollout["task"][..., 0] * 5 + rollout["task"][..., 1]).long()
    filtered_true = rollout["next", BELIEF_FILTERED].gather(-1, cell.unsqueeze(-1))
    assert bool((filtered_true > 0).all())
    found = rollout["next", "reward"][..., 0] > 0
    assert bool(found.any())
    next_cell = (rollout["next", "task"][..., 0] * 5 + rollout["next", "task"][..., 1]).long()
    true_mass = rollout["next", BELIEF_PROBS].gather(-1, next_cell.unsqueeze(-1))[..., 0]
    stayed = found & ~rollout["next", TASK_SWITCHED][..., 0]
    torch.testing.assert_close(
        true_mass[stayed], torch.full_like(true_mass[stayed], 1 - hazard + hazard / 21)
    )


def test_reset_to_the_prior_on_a_new_rollout() -> None:
    env = belief_env(num_envs=3, horizon=10, hazard=0.2, seed=0)
    rollout = env.rollout(25, break_when_any_done=False)
    prior = ExactGridBelief().prior
    for t in (0, 10, 20):  # the root of the first step of each rollout
        assert torch.equal(rollout[BELIEF_PROBS][:, t], prior.expand(3, 25))
        assert torch.equal(rollout[BELIEF_FILTERED][:, t], prior.expand(3, 25))


def test_hazard_is_read_from_the_env_and_validated() -> None:
    base = make_switching_env("gridworld", num_envs=2, horizon=10, hazard=0.25, grid_size=4)
    belief = SwitchingGridBelief.from_env(TransformedEnv(base))
    assert belief.hazard == 0.25 and belief.num_cells == 16
    plain = BAMDPEnv(GridNaviEnv(num_envs=2), episode_length=5, episodes_per_task=1)
    with pytest.raises(TypeError, match="hazard="):
        SwitchingGridBelief.from_env(plain)
    assert SwitchingGridBelief.from_env(plain, hazard=0.1).hazard == 0.1
    with pytest.raises(ValueError, match="hazard"):
        SwitchingGridBelief(hazard=-0.1)


def test_impossible_data_are_refused_with_hazard_zero() -> None:
    t = SwitchingGridBelief(hazard=0.0, grid_size=3)
    found = t.filter(
        t.prior.expand(1, 9), torch.tensor([[0.0, 1.0]]), torch.tensor([1]), torch.tensor([[1.0]])
    )
    with pytest.raises(ValueError, match="rule out every goal"):
        # The goal was found at (0, 2); a goal reward at (1, 2) contradicts it without a switch.
        t.filter(found, torch.tensor([[0.0, 2.0]]), torch.tensor([2]), torch.tensor([[1.0]]))
    # With a hazard the goal may have moved there: no contradiction.
    s = SwitchingGridBelief(hazard=0.1, grid_size=3)
    moved = s.update(
        s.predict(found), torch.tensor([[0.0, 2.0]]), torch.tensor([2]), torch.tensor([[1.0]])
    )
    assert moved[0, 1 * 3 + 2] > 0.9
