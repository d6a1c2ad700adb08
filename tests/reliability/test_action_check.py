"""BAMDPEnv checks the actions of *any* TaskEnv against its action spec (issue 18, item 6).

A user's task env gets the same clear rejection GridNavi gives, before its own step code runs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, OneHot
from torchrl.envs.utils import check_env_specs

from torchrl_bamdp.envs import BAMDPEnv
from torchrl_bamdp.envs.action_check import ActionCheck

NUM_ENVS = 4


def _walk_env_class():
    """The benchmark's pure-torch WalkEnv (one task env for both, not two copies)."""
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "action_check_cost.py"
    spec = importlib.util.spec_from_file_location("action_check_cost_for_tests", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.WalkEnv


class LineEnv(_walk_env_class()):
    """A user's task env as a user writes it: its step code trusts the action's shape."""

    def __init__(self, num_envs: int = NUM_ENVS) -> None:
        super().__init__(num_envs)
        self.steps = 0

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        self.steps += 1
        move = tensordict["action"].view(self.batch_size.numel()).float() - 1  # trusts the shape
        self._position += move
        reward = (self._position == self._goal).float().view(-1, 1)
        done = torch.zeros(*self.batch_size, 1, dtype=torch.bool)
        out = self._task_output(self._position.view(-1, 1).clone(), self._goal.view(-1, 1), done)
        out.set("reward", reward)
        return out


def bamdp(**kwargs) -> BAMDPEnv:
    return BAMDPEnv(LineEnv(), episode_length=5, episodes_per_task=2, seed=0, **kwargs)


def step_with(env: BAMDPEnv, action: torch.Tensor):
    td = env.reset()
    td.set("action", action)
    return env.step(td)


def test_user_env_specs_and_valid_actions():
    env = bamdp()
    check_env_specs(env)
    out = step_with(env, torch.tensor([0, 1, 2, 2]))
    assert out["next", "observation"].flatten().tolist() == [-1.0, 0.0, 1.0, 1.0]
    # integral floats are indices too, as on GridNavi
    step_with(env, torch.tensor([0.0, 1.0, 2.0, 2.0]))


@pytest.mark.parametrize(
    ("action", "phrase"),
    [
        (torch.zeros(NUM_ENVS, 1, dtype=torch.long), "shape (4, 1) is not the action spec's shape"),
        (torch.zeros(NUM_ENVS, 2, dtype=torch.long), "shape (4, 2)"),
        (torch.tensor([0, 1, 3, 2]), "1 out-of-range value(s) (entry 2: 3)"),
        (torch.tensor([0, -1, -1, 2]), "2 out-of-range value(s)"),
        (torch.tensor([0.0, 1.5, 2.0, 2.0]), "1 non-integer value(s) (entry 1: 1.5)"),
        (torch.tensor([0.0, float("nan"), 2.0, 2.0]), "1 non-finite (NaN/inf) value(s)"),
        (torch.ones(NUM_ENVS, dtype=torch.bool), "dtype torch.bool is not allowed"),
    ],
)
def test_malformed_actions_of_a_user_env_are_rejected_before_its_step(action, phrase):
    env = bamdp()
    with pytest.raises(ValueError) as info:
        step_with(env, action)
    message = str(info.value)
    assert message.startswith("LineEnv.step (in BAMDPEnv): invalid 'action'"), message
    assert phrase in message, message
    assert "allowed: one integer index in 0..2 per env, shape (4,)" in message
    assert env.task_env.steps == 0  # the user's step code never ran


def test_missing_action_names_the_key():
    env = bamdp()
    td = env.reset()
    with pytest.raises(KeyError, match="no 'action' entry"):
        env.step(td)


def test_check_can_be_limited_to_shape_and_dtype():
    env = bamdp(check_actions="shape")
    step_with(env, torch.tensor([0, 1, 7, 2]))  # out of range passes unchecked
    with pytest.raises(ValueError, match="shape"):
        step_with(env, torch.zeros(NUM_ENVS, 1, dtype=torch.long))
    env = bamdp(check_actions="off")
    with pytest.raises(RuntimeError):  # the user's own code fails, as it did before
        step_with(env, torch.zeros(NUM_ENVS, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="check_actions must be one of"):
        bamdp(check_actions="sometimes")


def test_continuous_specs_check_finiteness_not_range():
    check = ActionCheck(Bounded(-1.0, 1.0, shape=(3, 2)), owner="Robot.step")
    check(torch.full((3, 2), 5.0))  # clipped by the env, as the original's Gaussian policy needs
    with pytest.raises(ValueError) as info:
        check(torch.tensor([[0.0, 0.0], [float("inf"), 0.0], [0.0, 0.0]]))
    assert "1 non-finite (NaN/inf) value(s) (entry 1: [inf, 0.0])" in str(info.value)
    assert "values outside [-1, 1] are clipped by the env" in str(info.value)
    with pytest.raises(ValueError, match="not a float dtype"):
        check(torch.zeros(3, 2, dtype=torch.long))


def test_one_hot_specs():
    check = ActionCheck(OneHot(3, shape=(2, 3)), owner="E.step")
    check(torch.tensor([[0, 1, 0], [1, 0, 0]]))
    with pytest.raises(ValueError, match="1 not one-hot value"):
        check(torch.tensor([[0, 1, 1], [1, 0, 0]]))


def test_task_env_that_checks_its_own_actions_is_not_checked_twice():
    from torchrl_bamdp.envs import GridNaviEnv

    env = BAMDPEnv(GridNaviEnv(num_envs=2), episode_length=15, episodes_per_task=2)
    assert env.action_check is None  # GridNavi validates its actions itself
    td = env.reset()
    td.set("action", torch.tensor([0, 9]))
    with pytest.raises(ValueError, match="GridNaviEnv.step: invalid 'action'"):
        env.step(td)


def test_rollout_tensordict_is_accepted():
    env = bamdp()
    rollout = env.rollout(10, break_when_any_done=False)
    assert isinstance(rollout, TensorDict) and rollout.shape == (NUM_ENVS, 10)


def test_cost_benchmark_runs_and_reports_every_mode(tmp_path, load_script):
    module = load_script(
        Path(__file__).resolve().parents[2] / "benchmarks" / "action_check_cost.py"
    )
    out = tmp_path / "cost.json"
    report = module.main(["--num-envs", "4", "--steps", "20", "--rounds", "1", "--out", str(out)])
    assert set(report["results"]["4"]) == {"full", "shape", "off"}
    assert report["results"]["4"]["off"]["ratio_to_off"] == 1.0
    assert all(r["steps_per_s"] > 0 for r in report["results"]["4"].values())
