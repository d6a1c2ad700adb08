"""MuJoCo task families: specs, v5 dynamics, hand-computed rewards, tasks, resets, registry."""

from __future__ import annotations

import math

import gymnasium
import mujoco
import numpy as np
import pytest
import torch
from gymnasium.envs.mujoco.humanoid_v5 import mass_center
from tensordict import TensorDict
from torchrl.envs.utils import check_env_specs

from torchrl_bamdp.configs import ConfigError, load_config
from torchrl_bamdp.configs.schema import ENV_NAMES
from torchrl_bamdp.envs import (
    ENV_FAMILIES,
    AntDirEnv,
    AntGoalEnv,
    BAMDPEnv,
    CheetahDirEnv,
    CheetahVelEnv,
    HumanoidDirEnv,
    MujocoTaskEnv,
    TaskEnv,
    WalkerRandParamsEnv,
    make_env,
)
from torchrl_bamdp.envs.mujoco import MUJOCO_FAMILIES

FAMILIES = sorted(MUJOCO_FAMILIES)


def _reset_with_tasks(env: MujocoTaskEnv, tasks: torch.Tensor) -> TensorDict:
    return env.reset(TensorDict({"task": tasks}, batch_size=env.batch_size))


def _step(env: MujocoTaskEnv, td: TensorDict, action: np.ndarray | torch.Tensor) -> TensorDict:
    td["action"] = torch.as_tensor(action, dtype=torch.float32).reshape(env.num_envs, -1)
    return env.step(td)["next"]


# -- specs and registry ------------------------------------------------------------------------
@pytest.mark.parametrize("name", FAMILIES)
def test_check_env_specs_in_bamdp(name):
    torch.manual_seed(0)
    task_env = MUJOCO_FAMILIES[name](num_envs=2, seed=0)
    assert isinstance(task_env, TaskEnv)
    check_env_specs(BAMDPEnv(task_env, episode_length=3, episodes_per_task=2, seed=0), seed=0)


@pytest.mark.parametrize(
    ("name", "obs_dim", "action_dim", "task_dim", "high"),
    [
        ("cheetah_vel", 17, 6, 1, 1.0),
        ("cheetah_dir", 17, 6, 1, 1.0),
        ("ant_dir", 105, 8, 1, 1.0),
        ("ant_goal", 107, 8, 2, 1.0),
        ("walker_rand_params", 17, 6, 65, 1.0),
        ("humanoid_dir", 348, 17, 1, 0.4),
    ],
)
def test_shapes_and_bounds(name, obs_dim, action_dim, task_dim, high):
    env = MUJOCO_FAMILIES[name](num_envs=2)
    td = env.reset()
    assert td["observation"].shape == (2, obs_dim) and td["observation"].dtype == torch.float32
    assert td["task"].shape == (2, task_dim) and env.task_dim == task_dim
    space = env.action_spec.space
    assert space.low.shape == (2, action_dim)
    assert (space.high == high).all() and (space.low == -high).all()


def test_every_family_is_registered_and_in_the_schema():
    assert set(MUJOCO_FAMILIES) | {"gridworld", "point_robot_sparse", "point_robot_dense"} == set(
        ENV_FAMILIES
    )
    assert tuple(ENV_NAMES) == tuple(ENV_FAMILIES)
    for name, cls in MUJOCO_FAMILIES.items():
        env = make_env(name, num_envs=2, episode_length=200, episodes_per_task=2, seed=1)
        assert type(env.task_env) is cls and env.horizon == 400
    with pytest.raises(TypeError, match="abstract"):
        MujocoTaskEnv(num_envs=1)
    # grid_size is GridNavi's: the other families have none (a legacy 5 reads as none).
    mse = {"decoders": {"reward": "mse"}}
    assert load_config({"env": {"name": "ant_goal"}, "algo": mse}).env.grid_size is None
    legacy = {"env": {"name": "ant_goal", "grid_size": 5}, "algo": mse}
    assert load_config(legacy).env.grid_size is None
    with pytest.raises(ConfigError, match="config.env.grid_size is a GridNavi option"):
        load_config({"env": {"name": "ant_goal", "grid_size": 7}, "algo": mse})


def test_make_env_options_are_checked():
    env = make_env("ant_dir", num_envs=2, grid_size=5, terminate_when_unhealthy=True)
    assert env.task_env.terminate_when_unhealthy
    with pytest.raises(ValueError, match="grid_size is a GridNavi option"):
        make_env("cheetah_vel", num_envs=2, grid_size=6)
    with pytest.raises(ValueError, match="unknown option.*goal_radius"):
        make_env("cheetah_vel", num_envs=2, goal_radius=0.2)
    with pytest.raises(ValueError, match="no health condition"):
        make_env("cheetah_dir", num_envs=2, terminate_when_unhealthy=True)
    # Finite task sets support stratified evaluation; continuous ones do not.
    strat = make_env("cheetah_dir", num_envs=4, stratified=True)
    assert strat.reset()["task"][:, 0].tolist() == [-1.0, 1.0, -1.0, 1.0]
    with pytest.raises(ValueError, match="finite task distribution"):
        make_env("cheetah_vel", num_envs=4, stratified=True)


# -- tasks -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", FAMILIES)
def test_task_sampling_is_reproducible(name):
    env = MUJOCO_FAMILIES[name](num_envs=1)
    a = env.sample_tasks(500, torch.Generator().manual_seed(7))
    b = env.sample_tasks(500, torch.Generator().manual_seed(7))
    c = env.sample_tasks(500, torch.Generator().manual_seed(8))
    assert a.shape == (500, env.task_dim) and a.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)


def test_task_distributions():
    gen = torch.Generator().manual_seed(0)
    vel = CheetahVelEnv(num_envs=1).sample_tasks(4000, gen)
    assert 0 <= vel.min() < 0.05 and 2.95 < vel.max() <= 3 and abs(vel.mean() - 1.5) < 0.05
    for cls in (CheetahDirEnv, AntDirEnv):
        d = cls(num_envs=1).sample_tasks(4000, gen)
        assert set(d.flatten().tolist()) == {-1.0, 1.0} and abs(d.mean()) < 0.05
        assert cls(num_envs=1).task_support().flatten().tolist() == [-1.0, 1.0]
    goal = AntGoalEnv(num_envs=1).sample_tasks(4000, gen)
    radius = goal.norm(dim=-1)
    assert radius.max() <= 3.0 + 1e-5
    # Uniform by area: P(r < 1.5) = 1/4.
    assert abs((radius < 1.5).float().mean() - 0.25) < 0.03
    angle = HumanoidDirEnv(num_envs=1).sample_tasks(4000, gen)
    assert 0 <= angle.min() < 0.01 and 2 * math.pi - 0.01 < angle.max() < 2 * math.pi
    u = WalkerRandParamsEnv(num_envs=1).sample_tasks(400, gen)
    assert u.shape == (400, 65) and -3 <= u.min() < -2.95 and 2.95 < u.max() <= 3


# -- dynamics and rewards ----------------------------------------------------------------------
def _reference_env(env: MujocoTaskEnv, index: int):
    """A plain gymnasium v5 env with the same model parameters and state as ``env.envs[index]``."""
    ref = gymnasium.make(env.gym_id, **env.make_kwargs).unwrapped
    ref.reset(seed=0)
    src = env.envs[index]
    if isinstance(env, WalkerRandParamsEnv):
        for field, _ in env.RAND_PARAMS:
            getattr(ref.model, field)[:] = getattr(src.model, field)
        mujoco.mj_setConst(ref.model, ref.data)
    ref.set_state(src.data.qpos.copy(), src.data.qvel.copy())
    return ref


def _task_term(name: str, info: dict, ref, task: np.ndarray) -> float:
    """The task term of each family, from gymnasium's step info (velocities as v5 measures)."""
    vx, vy = info["x_velocity"], info.get("y_velocity", 0.0)
    if name == "cheetah_vel":
        return -abs(vx - task[0])
    if name in ("cheetah_dir", "ant_dir"):
        return task[0] * vx
    if name == "ant_goal":  # the torso position after the step, as v5 reads it (data.xpos)
        return -np.abs(ref.data.xpos[1, :2] - task).sum()
    if name == "walker_rand_params":
        return vx
    assert name == "humanoid_dir"
    return 1.25 * (vx * math.cos(task[0]) + vy * math.sin(task[0]))


@pytest.mark.parametrize("name", FAMILIES)
def test_steps_match_gymnasium_v5(name):
    """Same observations as gymnasium's own ``step``; reward = task term + v5's standard terms."""
    env = MUJOCO_FAMILIES[name](num_envs=2, seed=3)
    td = env.reset()
    ref = _reference_env(env, 1)
    rng = np.random.default_rng(0)
    task = env.tasks[1].double().numpy()
    for _ in range(4):
        action = (rng.uniform(-1, 1, (2, env.action_dim)) * env.action_high).astype(np.float32)
        nxt = _step(env, td, action)
        obs, _, _, _, info = ref.step(action[1])
        np.testing.assert_array_equal(nxt["observation"][1].numpy(), obs.astype(np.float32))
        standard = (
            info.get("reward_survive", 0.0) + info["reward_ctrl"] + info.get("reward_contact", 0.0)
        )
        term = _task_term(name, info, ref, task)
        assert nxt["reward"][1, 0].item() == pytest.approx(term + standard, abs=1e-5)
        td = nxt


def _set_state_and_step_zero(env: MujocoTaskEnv, seed: int = 0):
    """Put env 0 in a random state; step every env with a zero action; return the simulator
    quantities before/after and the reward of env 0."""
    td = env.reset()
    sim = env.envs[0]
    rng = np.random.default_rng(seed)
    qpos = sim.init_qpos + rng.uniform(-0.1, 0.1, sim.model.nq)
    qvel = rng.normal(0, 1.0, sim.model.nv)
    sim.set_state(qpos, qvel)
    before = {"qpos": sim.data.qpos.copy(), "xpos": sim.data.xpos.copy()}
    before["com"] = mass_center(sim.model, sim.data)
    nxt = _step(env, td, np.zeros((env.num_envs, env.action_dim)))
    return before, sim, nxt["reward"][0, 0].item()


def test_cheetah_rewards_by_hand():
    env = CheetahVelEnv(num_envs=2)
    _reset_with_tasks(env, torch.tensor([[1.7], [0.3]]))
    before, sim, reward = _set_state_and_step_zero(env)
    vx = (sim.data.qpos[0] - before["qpos"][0]) / (sim.model.opt.timestep * 5)
    assert reward == pytest.approx(-abs(vx - 1.7), abs=1e-5)
    assert env.ctrl_cost_weight == 0.05

    env = CheetahDirEnv(num_envs=2)
    _reset_with_tasks(env, torch.tensor([[-1.0], [1.0]]))
    before, sim, reward = _set_state_and_step_zero(env, seed=1)
    vx = (sim.data.qpos[0] - before["qpos"][0]) / 0.05
    assert reward == pytest.approx(-vx, abs=1e-5)
    # The control cost: 0.05 * |a|^2 on the clipped action.
    td = env.reset()
    a = np.full((2, 6), 0.5)
    a[1] = 3.0  # clipped to 1
    x0 = [s.data.qpos[0] for s in env.envs]
    r = _step(env, td, a)["reward"][:, 0]
    for i, expected_ctrl in enumerate((0.05 * 6 * 0.25, 0.05 * 6)):
        v = (env.envs[i].data.qpos[0] - x0[i]) / 0.05
        assert r[i].item() == pytest.approx(env.tasks[i].item() * v - expected_ctrl, abs=1e-5)


def test_ant_rewards_by_hand():
    env = AntDirEnv(num_envs=2)
    _reset_with_tasks(env, torch.tensor([[-1.0], [1.0]]))
    before, sim, reward = _set_state_and_step_zero(env)
    vx = (sim.data.xpos[1, 0] - before["xpos"][1, 0]) / 0.05
    contact = 5e-4 * np.square(np.clip(sim.data.cfrc_ext, -1, 1)).sum()
    healthy = float(np.isfinite(sim.data.qpos).all() and 0.2 <= sim.data.qpos[2] <= 1.0)
    assert reward == pytest.approx(-vx + 1.0 * healthy - contact, abs=1e-5)

    env = AntGoalEnv(num_envs=2)
    _reset_with_tasks(env, torch.tensor([[1.0, -2.0], [0.0, 0.0]]))
    before, sim, reward = _set_state_and_step_zero(env)
    contact = 5e-4 * np.square(np.clip(sim.data.cfrc_ext, -1, 1)).sum()
    distance = np.abs(sim.data.xpos[1, :2] - np.array([1.0, -2.0])).sum()
    assert reward == pytest.approx(-distance - contact, abs=1e-5)
    # The observation includes the xy position (the agent must know where it is).
    obs = env._output(torch.zeros(2, 1, dtype=torch.bool))["observation"][0]
    torch.testing.assert_close(obs[:2], torch.tensor(sim.data.qpos[:2], dtype=torch.float32))


def test_humanoid_reward_by_hand():
    env = HumanoidDirEnv(num_envs=2)
    _reset_with_tasks(env, torch.tensor([[2.0], [0.0]]))
    before, sim, reward = _set_state_and_step_zero(env)
    v = (mass_center(sim.model, sim.data) - before["com"]) / 0.015
    contact = min(5e-7 * np.square(sim.data.cfrc_ext).sum(), 10.0)
    healthy = float(1.0 < sim.data.qpos[2] < 2.0)
    expected = 1.25 * (v[0] * math.cos(2.0) + v[1] * math.sin(2.0)) + 5.0 * healthy - contact
    assert reward == pytest.approx(expected, abs=1e-4)


def test_walker_reward_and_optional_termination():
    env = WalkerRandParamsEnv(num_envs=2, terminate_when_unhealthy=True)
    td = env.reset()
    before, sim, reward = _set_state_and_step_zero(env)
    vx = (sim.data.qpos[0] - before["qpos"][0]) / 0.008
    z, angle = sim.data.qpos[1:3]
    healthy = 0.8 < z < 2.0 and -1.0 < angle < 1.0
    assert reward == pytest.approx(vx + float(healthy), abs=1e-5)
    # Lying on the floor: unhealthy, so terminated (only with terminate_when_unhealthy).
    td = env.reset()
    qpos = sim.init_qpos.copy()
    qpos[1] = 0.5  # torso height 0.5 < 0.8: unhealthy
    sim.set_state(qpos, sim.init_qvel)
    nxt = _step(env, td, np.zeros((2, 6)))
    assert nxt["terminated"][:, 0].tolist() == [True, False] and nxt["done"][0, 0]
    assert nxt["reward"][0, 0].item() == pytest.approx(
        (sim.data.qpos[0] - qpos[0]) / 0.008, abs=1e-5
    )
    # Without it the same fall is not terminal (the default).
    env = WalkerRandParamsEnv(num_envs=1)
    td = env.reset()
    env.envs[0].set_state(qpos, env.envs[0].init_qvel)
    assert not _step(env, td, np.zeros((1, 6)))["terminated"].any()


# -- walker rand params ----------------------------------------------------------------------
def test_rand_params_change_and_restore_the_model():
    env = WalkerRandParamsEnv(num_envs=2)
    defaults = {k: v.copy() for k, v in env.default_params[0].items()}
    reference = gymnasium.make("Walker2d-v5").unwrapped.model
    np.testing.assert_array_equal(defaults["body_mass"], reference.body_mass)
    gen = torch.Generator().manual_seed(0)
    tasks = env.sample_tasks(2, gen)
    _reset_with_tasks(env, tasks)
    model = env.envs[0].model
    u = tasks[0].double().numpy()
    sizes = {"body_mass": 8, "body_inertia": 24, "dof_damping": 9, "geom_friction": 24}
    start = 0
    for (field, base), size in zip(env.RAND_PARAMS, sizes.values(), strict=True):
        scale = base ** u[start : start + size].reshape(defaults[field].shape)
        np.testing.assert_allclose(getattr(model, field), defaults[field] * scale, rtol=1e-12)
        start += size
    assert start == env.task_dim
    assert not np.allclose(model.body_mass[1:], defaults["body_mass"][1:])
    # A second task is applied to the defaults, not on top of the first task's values.
    other = env.sample_tasks(2, gen)
    _reset_with_tasks(env, other)
    np.testing.assert_allclose(
        model.body_mass, defaults["body_mass"] * env.scales(other[0])["body_mass"], rtol=1e-12
    )
    # The zero task restores the defaults exactly.
    _reset_with_tasks(env, torch.zeros(2, env.task_dim))
    for field, _ in env.RAND_PARAMS:
        np.testing.assert_array_equal(getattr(model, field), defaults[field])


def test_rand_params_change_the_dynamics():
    env = WalkerRandParamsEnv(num_envs=2)
    heavy = torch.zeros(2, env.task_dim)
    heavy[1, :8] = 3.0  # env 1: every body 1.5^3 times heavier
    td = _reset_with_tasks(env, heavy)
    for sim in env.envs:  # same start state
        sim.set_state(sim.init_qpos, sim.init_qvel)
    action = np.tile(np.linspace(-1, 1, 6), (2, 1))
    for _ in range(5):
        td = _step(env, td, action)
    obs = td["observation"]
    assert not torch.allclose(obs[0], obs[1])


def test_inner_episode_reset_keeps_the_task_and_its_params():
    task_env = WalkerRandParamsEnv(num_envs=2, seed=0)
    env = BAMDPEnv(task_env, episode_length=3, episodes_per_task=2, seed=0)
    td = env.reset()
    masses = [sim.model.body_mass.copy() for sim in task_env.envs]
    task = td["task"].clone()
    for t in range(6):
        td["action"] = torch.zeros(2, 6)
        nxt = env.step(td)["next"]
        torch.testing.assert_close(nxt["task"], task)
        for sim, mass in zip(task_env.envs, masses, strict=True):
            np.testing.assert_array_equal(sim.model.body_mass, mass)
        if t == 2:
            assert nxt["episode_done"].all() and not nxt["done"].any()
            # The next observation is a start state: the root back near its initial pose.
            np.testing.assert_allclose(
                nxt["observation"][:, :8].numpy(),
                np.stack([sim.init_qpos[1:] for sim in task_env.envs]),
                atol=6e-3,
            )
        td = nxt
    assert td["done"].all()
    # A new BAMDP draws new tasks and so new parameters.
    td = env.reset()
    assert not torch.equal(td["task"], task)
    assert not np.array_equal(task_env.envs[0].model.body_mass, masses[0])


def test_inner_episode_reset_keeps_velocity_task():
    env = BAMDPEnv(CheetahVelEnv(num_envs=3, seed=0), episode_length=2, episodes_per_task=3, seed=1)
    rollout = env.rollout(6, break_when_any_done=False)
    task = rollout["task"]
    assert (task == task[:, :1]).all()
    assert rollout["next", "episode_done"][:, [1, 3, 5]].all()
    assert rollout["next", "done"][:, 5].all() and not rollout["next", "done"][:, :5].any()


# -- resets ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cheetah_vel", "ant_goal", "walker_rand_params"])
def test_partial_reset_only_touches_masked_envs(name):
    env = MUJOCO_FAMILIES[name](num_envs=3, seed=0)
    td = env.reset()
    for _ in range(3):
        td = _step(env, td, np.full((3, env.action_dim), 0.3))
    qpos = [sim.data.qpos.copy() for sim in env.envs]
    masses = [sim.model.body_mass.copy() for sim in env.envs]
    old_tasks = env.tasks
    new_tasks = env.sample_tasks(3, torch.Generator().manual_seed(99))
    td["_reset"] = torch.tensor([[False], [True], [False]])
    td["task"] = new_tasks
    out = env.reset(td)
    for i in (0, 2):
        np.testing.assert_array_equal(env.envs[i].data.qpos, qpos[i])
        np.testing.assert_array_equal(env.envs[i].model.body_mass, masses[i])
        torch.testing.assert_close(out["observation"][i], td["observation"][i])
    assert not np.allclose(env.envs[1].data.qpos, qpos[1])
    expected_tasks = old_tasks.clone()
    expected_tasks[1] = new_tasks[1]
    torch.testing.assert_close(env.tasks, expected_tasks)


def test_reset_noise_is_seeded_per_env():
    a = CheetahVelEnv(num_envs=2, seed=5).reset()["observation"]
    b = CheetahVelEnv(num_envs=2, seed=5).reset()["observation"]
    c = CheetahVelEnv(num_envs=2, seed=6).reset()["observation"]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # every env has its own generator
    env = CheetahVelEnv(num_envs=2, seed=0)
    env.set_seed(5)
    torch.testing.assert_close(env.reset()["observation"], a, rtol=0, atol=0)


# -- bad actions -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("action", "match"),
    [
        (torch.full((2, 6), math.nan), "non-finite"),
        (torch.tensor([[0.0] * 6, [math.inf] + [0.0] * 5]), r"non-finite.*env\(s\) \[1\]"),
        (torch.zeros(2, 5), "shape"),
        (torch.zeros(2, 6, 1), "shape"),
        (torch.zeros(2, 6, dtype=torch.long), "dtype"),
    ],
)
def test_bad_actions_raise_naming_the_env(action, match):
    env = CheetahVelEnv(num_envs=2)
    td = env.reset()
    td["action"] = action
    with pytest.raises(ValueError, match=f"CheetahVelEnv.step.*{match}"):
        env._step(td)
    bamdp = BAMDPEnv(WalkerRandParamsEnv(num_envs=2), 5, 2)
    td = bamdp.reset()
    td.set("action", action)
    with pytest.raises(ValueError, match="WalkerRandParamsEnv.step"):
        bamdp._step(td)


def test_out_of_bound_actions_are_clipped():
    envs = [CheetahDirEnv(num_envs=1, seed=0) for _ in range(2)]
    tds = [env.reset() for env in envs]
    clipped = _step(envs[0], tds[0], np.ones((1, 6)))
    large = _step(envs[1], tds[1], np.full((1, 6), 50.0))
    torch.testing.assert_close(clipped["observation"], large["observation"], rtol=0, atol=0)
    torch.testing.assert_close(clipped["reward"], large["reward"], rtol=0, atol=0)


def test_known_compiler_warnings_of_gymnasium_models_are_silenced(capfd, tmp_path, monkeypatch):
    """HalfCheetah v5's XML uses the deprecated ``settotalmass``: no 16x stdout spam or log file."""
    from torchrl_bamdp.envs.mujoco import CheetahVelEnv

    monkeypatch.chdir(tmp_path)  # MuJoCo would append the warning to ./MUJOCO_LOG.TXT
    before = mujoco.get_mju_user_warning()
    CheetahVelEnv(num_envs=2).close()
    out, err = capfd.readouterr()
    assert "settotalmass" not in out + err
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
    assert mujoco.get_mju_user_warning() is before  # the user's handler (or none) is restored
