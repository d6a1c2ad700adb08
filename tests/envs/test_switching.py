"""SwitchingBAMDPEnv / make_switching_env: a task redrawn at random times within one rollout."""

from __future__ import annotations

import math

import pytest
import torch
from torchrl.envs.utils import check_env_specs, step_mdp

from torchrl_bamdp.envs import (
    TASK_SWITCHED,
    BAMDPEnv,
    GridNaviEnv,
    SwitchingBAMDPEnv,
    TaskEnv,
    candidate_goal_cells,
    make_switching_env,
)


def random_actions(num_envs: int, steps: int, seed: int) -> torch.Tensor:
    return torch.randint(5, (steps, num_envs), generator=torch.Generator().manual_seed(seed))


def scripted_rollout(env: SwitchingBAMDPEnv, actions: torch.Tensor):
    """Roll ``env`` with the given ``[T, B]`` actions (the same actions for every seed check)."""
    td = env.reset()
    steps = []
    for action in actions:
        td["action"] = action
        td = env.step(td)
        steps.append(td.clone())
        td = step_mdp(td)
    return torch.stack(steps, dim=1)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("gridworld", {}), ("gridworld", {"grid_size": 3}), ("point_robot_sparse", {})],
)
def test_check_env_specs(name: str, kwargs: dict) -> None:
    env = make_switching_env(name, num_envs=3, horizon=20, hazard=0.3, seed=0, **kwargs)
    check_env_specs(env)


def test_done_only_at_the_end_and_state_carries_over() -> None:
    env = make_switching_env("gridworld", num_envs=8, horizon=40, hazard=0.5, seed=3)
    rollout = env.rollout(40, break_when_any_done=False)
    done = rollout["next", "done"][..., 0]
    assert bool(done[:, -1].all()) and not bool(done[:, :-1].any())
    # No inner episodes: the next observation is always where the step landed, and the policy's
    # next position is that same position (no reset to the start at a switch).
    assert torch.equal(rollout["next", "observation"], rollout["next", "true_observation"])
    assert torch.equal(rollout["observation"][:, 1:], rollout["next", "observation"][:, :-1])
    assert bool(rollout["next", TASK_SWITCHED].any())
    # The root task of step t+1 is the next task of step t; it changes only where a switch was
    # drawn, and every task is a candidate goal.
    assert torch.equal(rollout["task"][:, 1:], rollout["next", "task"][:, :-1])
    changed = (rollout["next", "task"] != rollout["task"]).any(-1)
    assert not bool((changed & ~rollout["next", TASK_SWITCHED][..., 0]).any())
    goals = {tuple(g) for g in candidate_goal_cells(5).tolist()}
    assert {tuple(g) for g in rollout["task"].reshape(-1, 2).long().tolist()} <= goals


def test_reward_uses_the_task_in_force_before_the_step() -> None:
    env = make_switching_env("gridworld", num_envs=16, horizon=60, hazard=0.3, seed=1)
    rollout = env.rollout(60, break_when_any_done=False)
    on_goal = (rollout["next", "observation"] == rollout["task"]).all(-1, keepdim=True)
    expected = torch.where(on_goal, 1.0, -0.1)
    assert torch.equal(rollout["next", "reward"], expected)


def test_same_seed_same_switches_and_tasks_whatever_the_actions() -> None:
    def run(seed: int, action_seed: int):
        env = make_switching_env("gridworld", num_envs=6, horizon=50, hazard=0.1, seed=seed)
        return scripted_rollout(env, random_actions(6, 50, action_seed))

    a, b = run(7, 0), run(7, 0)
    assert torch.equal(a["next", "task"], b["next", "task"])
    assert torch.equal(a["next", TASK_SWITCHED], b["next", TASK_SWITCHED])
    assert torch.equal(a["next", "reward"], b["next", "reward"])
    # Switch times and tasks depend on the seed only, not on the policy.
    c = run(7, 1)
    assert torch.equal(a["next", "task"], c["next", "task"])
    assert torch.equal(a["next", TASK_SWITCHED], c["next", TASK_SWITCHED])
    d = run(8, 0)
    assert not torch.equal(a["next", "task"], d["next", "task"])
    # set_seed reseeds the switches as well.
    env = make_switching_env("gridworld", num_envs=6, horizon=50, hazard=0.1, seed=0)
    env.set_seed(7)
    e = scripted_rollout(env, random_actions(6, 50, 0))
    assert torch.equal(a["next", "task"], e["next", "task"])


def test_hazard_zero_keeps_one_task_and_is_a_one_episode_bamdp() -> None:
    env = make_switching_env("gridworld", num_envs=8, horizon=30, hazard=0.0, seed=5)
    plain = BAMDPEnv(GridNaviEnv(num_envs=8), episode_length=30, episodes_per_task=1, seed=5)
    actions = random_actions(8, 30, 2)
    rollout, reference = scripted_rollout(env, actions), scripted_rollout(plain, actions)
    assert not bool(rollout["next", TASK_SWITCHED].any())
    assert bool((rollout["next", "task"] == rollout["task"][:, :1]).all())
    for key in (("next", "task"), ("next", "reward"), ("next", "observation"), ("next", "done")):
        assert torch.equal(rollout[key], reference[key])


def test_hazard_one_redraws_every_step() -> None:
    env = make_switching_env("gridworld", num_envs=4, horizon=10, hazard=1.0, seed=0)
    switched = env.rollout(10, break_when_any_done=False)["next", TASK_SWITCHED][..., 0]
    # Every step but the last (a finished rollout keeps its task until the reset redraws it).
    assert bool(switched[:, :-1].all()) and not bool(switched[:, -1].any())


@pytest.mark.parametrize("hazard", [0.02, 0.2])
def test_empirical_switch_rate_matches_hazard(hazard: float) -> None:
    # 64 envs x 500 steps = 31,936 Bernoulli(h) draws (the last step of a rollout never
    # switches). The rate's standard error is sqrt(h (1 - h) / n): 7.8e-4 at h = 0.02 and
    # 2.2e-3 at h = 0.2; a 5-sigma band fails a correct env with probability < 1e-6 and still
    # catches an off-by-a-factor hazard or a switch that never fires. The fixed seed makes the
    # test deterministic; the band is what makes it meaningful for any seed.
    num_envs, horizon = 64, 500
    env = make_switching_env("gridworld", num_envs=num_envs, horizon=horizon, hazard=hazard, seed=0)
    rollout = env.rollout(horizon, break_when_any_done=False)
    switched = rollout["next", TASK_SWITCHED][:, :-1, 0]
    n = switched.numel()
    rate = switched.float().mean().item()
    assert abs(rate - hazard) < 5 * math.sqrt(hazard * (1 - hazard) / n)
    # A redraw is a fresh prior draw: it changes the goal with probability 1 - 1/21.
    changed = (rollout["next", "task"] != rollout["task"]).any(-1)[:, :-1]
    expected = hazard * (1 - 1 / 21)
    assert abs(changed.float().mean().item() - expected) < 5 * math.sqrt(expected / n)


def test_switched_task_is_used_by_the_dynamics() -> None:
    # After a switch the reward follows the new goal: the env's own goal moved, not just the key.
    env = make_switching_env("gridworld", num_envs=32, horizon=200, hazard=0.2, seed=2)
    rollout = env.rollout(200, break_when_any_done=False)
    assert bool(rollout["next", TASK_SWITCHED].any())
    assert torch.equal(env.task_env._goal.float(), rollout["next", "task"][:, -1])


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="hazard"):
        make_switching_env("gridworld", num_envs=2, horizon=10, hazard=1.5)
    with pytest.raises(ValueError, match="unknown option"):
        make_switching_env("gridworld", num_envs=2, horizon=10, hazard=0.1, colour="red")

    class Frozen(GridNaviEnv):
        """A user's subclass of GridNavi."""

    # A subclass of GridNavi inherits the registered switch; a TaskEnv unknown to set_tasks and
    # without a set_tasks method is refused at construction, with the way out in the message.
    SwitchingBAMDPEnv(Frozen(num_envs=2), horizon=5, hazard=0.1)

    class Unknown(TaskEnv):
        def __init__(self) -> None:
            super().__init__(batch_size=torch.Size([2]))

        def sample_tasks(self, num, generator=None):
            return torch.zeros(num, 1)

        @property
        def task_dim(self) -> int:
            return 1

        def _reset(self, tensordict=None, **kwargs):
            raise NotImplementedError

        def _step(self, tensordict):
            raise NotImplementedError

    with pytest.raises(TypeError, match="set_tasks.register"):
        SwitchingBAMDPEnv(Unknown(), horizon=5, hazard=0.1)
