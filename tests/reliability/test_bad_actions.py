"""Malformed actions are rejected early, with a message naming the env, the key and the rule.

Every case goes through the public ``env.step`` of the task env, the BAMDP env and the
belief-transformed env (the validation lives in ``GridNaviEnv._step``, which both wrap).
"""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict
from torchrl.envs import TransformedEnv

from torchrl_bamdp.envs import BAMDPEnv, GridNaviEnv
from torchrl_bamdp.modules import BeliefEncoder
from torchrl_bamdp.transforms import varibad_transforms

NUM_ENVS = 4


def task_env():
    return GridNaviEnv(num_envs=NUM_ENVS)


def bamdp_env():
    return BAMDPEnv(GridNaviEnv(num_envs=NUM_ENVS), episode_length=15, episodes_per_task=4, seed=0)


def varibad_env():
    torch.manual_seed(0)
    encoder = BeliefEncoder(obs_dim=2, action_dim=5, discrete_actions=True)
    return TransformedEnv(bamdp_env(), varibad_transforms(encoder))


ENVS = {"GridNaviEnv": task_env, "BAMDPEnv": bamdp_env, "varibad": varibad_env}


@pytest.fixture(params=sorted(ENVS))
def env(request):
    return ENVS[request.param]()


def step_with(env, action: torch.Tensor):
    td = env.reset()
    td.set("action", action)
    return env.step(td)


def assert_rejected(env, action: torch.Tensor, *phrases: str) -> str:
    with pytest.raises(ValueError) as info:
        step_with(env, action)
    msg = str(info.value)
    assert "GridNaviEnv" in msg and "'action'" in msg, msg
    assert "allowed: one integer index in 0..4" in msg, msg  # what is allowed
    assert f"shape ({NUM_ENVS},)" in msg, msg
    for phrase in phrases:
        assert phrase in msg, msg
    return msg


# -- valid actions -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "action",
    [
        torch.tensor([0, 1, 2, 4]),
        torch.tensor([0, 1, 2, 4], dtype=torch.int32),
        torch.tensor([0, 1, 2, 4], dtype=torch.uint8),
        torch.tensor([0.0, 1.0, 2.0, 4.0]),  # integral floats are indices too
        torch.tensor([0.0, 1.0, 2.0, 4.0], dtype=torch.float64),
    ],
    ids=["int64", "int32", "uint8", "float32", "float64"],
)
def test_valid_actions_step(env, action):
    td = step_with(env, action)
    assert td["next", "observation"].shape == (NUM_ENVS, 2)
    assert torch.isfinite(td["next", "reward"]).all()


def test_rand_step_is_valid(env):
    td = env.reset()
    for _ in range(20):
        td = env.rand_step(td)
        assert td["next", "reward"].shape == (NUM_ENVS, 1)


# -- malformed actions -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("shape", "shown"),
    [((NUM_ENVS, 1), "(4, 1)"), ((NUM_ENVS, 5), "(4, 5)")],  # a trailing dim; a one-hot action
    ids=["trailing_dim", "one_hot"],
)
def test_wrong_shape(env, shape, shown):
    action = torch.zeros(shape, dtype=torch.long)
    assert_rejected(env, action, f"shape {shown} is not the batch shape")


@pytest.mark.parametrize("bad", [5, -1, 100, -(2**40)])
def test_out_of_range_index(env, bad):
    action = torch.tensor([0, 1, bad, 2])
    assert_rejected(env, action, "1 out-of-range value(s)", f"env 2: {bad}")


def test_out_of_range_reports_every_bad_entry(env):
    msg = assert_rejected(env, torch.tensor([7, 1, 9, -3]), "3 out-of-range value(s)")
    assert "env 0: 7" in msg and "env 2: 9" in msg and "env 3: -3" in msg


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_float(env, bad):
    action = torch.tensor([0.0, bad, 1.0, 2.0])
    assert_rejected(env, action, "1 non-finite (NaN/inf) value(s)", f"env 1: {bad}")


@pytest.mark.parametrize("bad", [1.5, 0.25, -0.5, 4.000001])
def test_non_integer_float(env, bad):
    action = torch.tensor([0.0, 1.0, 2.0, bad], dtype=torch.float64)
    assert_rejected(env, action, "1 non-integer value(s)", "env 3:")


@pytest.mark.parametrize("bad", [5.0, -1.0])
def test_out_of_range_float(env, bad):
    assert_rejected(env, torch.tensor([bad, 1.0, 2.0, 3.0]), "1 out-of-range value(s)")


def test_bool_dtype(env):
    assert_rejected(env, torch.tensor([True, False, True, False]), "dtype torch.bool")


def test_missing_action_names_the_key():
    env = task_env()
    with pytest.raises(KeyError, match="GridNaviEnv.step: the tensordict has no 'action'"):
        env._step(TensorDict({}, batch_size=[NUM_ENVS]))


def test_rejected_action_leaves_the_state_untouched():
    env = bamdp_env()
    td = env.reset()
    td.set("action", torch.tensor([2, 2, 9, 2]))  # 2 = right
    with pytest.raises(ValueError):
        env.step(td)
    td.set("action", torch.tensor([1, 1, 1, 1]))  # 1 = up
    out = env.step(td)
    # no move and no step of the inner-episode clock happened on the rejected call
    assert out["next", "observation"].tolist() == [[0.0, 1.0]] * NUM_ENVS
    assert env._step_in_episode.tolist() == [1] * NUM_ENVS
