"""The MuJoCo task families of VariBAD on gymnasium v5, as batched TaskEnvs.

Each family is a :class:`~torchrl_bamdp.envs.mujoco.base.MujocoTaskEnv` that only adds its
task term and its task distribution; the dynamics, observations, reset noise and the
standard reward terms are gymnasium v5's:

========================  ======================================================================
family                    task, task reward (``v`` = velocity from positions before/after / dt)
========================  ======================================================================
``cheetah_vel``           ``v* ~ U[0, 3]``; ``-|v_x - v*|``; ctrl cost ``0.05 * |a|^2``
``cheetah_dir``           ``d`` uniform in ``{-1, +1}``; ``d * v_x``; ctrl cost ``0.05 * |a|^2``
``ant_dir``               ``d`` uniform in ``{-1, +1}`` (backward/forward along x); ``d * v_x``
                          of the torso; v5 terms: ctrl ``0.5|a|^2``, contact ``5e-4``, healthy 1
``ant_goal``              goal ``r (cos t, sin t)``, ``t ~ U[0, 2pi)``, ``r = 3 sqrt(U[0, 1])``
                          (uniform on the disc of radius 3); ``-||xy - goal||_1`` of the torso
                          after the step; ctrl ``0.1|a|^2``, contact ``5e-4``, healthy 0
``walker_rand_params``    exponents ``u ~ U[-3, 3]`` per entry of body_mass, body_inertia,
                          dof_damping, geom_friction; model value = default * base^u (bases
                          1.5, 1.5, 1.3, 1.5); v5 reward ``v_x + healthy 1 - 1e-3|a|^2``
``humanoid_dir``          angle ``t ~ U[0, 2pi)``; ``1.25 * v_com . (cos t, sin t)`` (mass-centre
                          velocity); v5 terms: ctrl ``0.1|a|^2``, contact, healthy 5
========================  ======================================================================

These are the original VariBAD task distributions and reward constants (``environments/mujoco``
of lmzintgraf/varibad) on gymnasium v5's models (the original used older gym XML files), with
these deliberate differences, each documented in its class:

* ``ant_dir`` is true backward/forward; the original uses +-1 as an *angle* (about +-57 deg);
* no family terminates inner episodes by default (``terminate_when_unhealthy=False``; the
  original ends AntDir, HumanoidDir and Walker episodes when unhealthy), so every task lasts
  exactly ``episodes_per_task x episode_length`` steps, as the trainer's whole-task batches need.
  When unhealthy and not terminating, v5's healthy reward is 0 for that step;
* actions are clipped to the action bounds before the control cost (the simulator clips the
  control to the same range); HumanoidDir keeps v5's ``[-0.4, 0.4]`` bounds (the original
  rescales ``[-1, 1]`` to them);
* walker_rand_params calls ``mj_setConst`` after changing the parameters.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import mujoco
import numpy as np
import torch
from gymnasium.envs.mujoco.humanoid_v5 import mass_center

from torchrl_bamdp.envs.mujoco.base import MujocoTaskEnv
from torchrl_bamdp.task_distributions import ALL_TASKS, VELOCITY_INTERVALS, interval_length

__all__ = [
    "MUJOCO_FAMILIES",
    "AntDirEnv",
    "AntGoalEnv",
    "CheetahDirEnv",
    "CheetahVelEnv",
    "HumanoidDirEnv",
    "WalkerRandParamsEnv",
]


# -- HalfCheetah ---------------------------------------------------------------------------------
class _CheetahTaskEnv(MujocoTaskEnv):
    # VariBAD's cheetah cost: 0.5 * 1e-1 * sum(a^2) (v5 default: 0.1).
    gym_id = "HalfCheetah-v5"
    gym_kwargs: ClassVar[Mapping[str, Any]] = {"ctrl_cost_weight": 0.05}


class CheetahVelEnv(_CheetahTaskEnv):
    """HalfCheetah with a target velocity ``v* ~ U[0, 3]`` (task ``[v*]``).

    Reward ``-|v_x - v*| - 0.05 * |a|^2`` with ``v_x`` the root x velocity
    (``(x_after - x_before) / dt``, as v5); no termination. Observation: v5's 17 dims.

    Parameters
    ----------
    tasks : str
        The task distribution, uniform on a union of intervals
        (:data:`~torchrl_bamdp.task_distributions.VELOCITY_INTERVALS`): ``all`` (``[0, 3)``,
        the original), ``extrapolation_train`` / ``extrapolation_test`` (``[0, 2)`` /
        ``[2, 3)``), ``gap_train`` / ``gap_test`` (``[0, 1) u [2, 3)`` / ``[1, 2)``).
    num_envs, seed, terminate_when_unhealthy, gym_kwargs, device, workers
        As :class:`~torchrl_bamdp.envs.mujoco.base.MujocoTaskEnv`.

    Examples
    --------
    >>> env = CheetahVelEnv(num_envs=2)
    >>> env.sample_tasks(3, torch.Generator().manual_seed(0)).shape
    torch.Size([3, 1])
    >>> gap = CheetahVelEnv(num_envs=1, tasks="gap_test").sample_tasks(100)
    >>> bool(((gap >= 1) & (gap < 2)).all())
    True
    """

    max_velocity: ClassVar[float] = 3.0

    def __init__(
        self,
        num_envs: int = 1,
        seed: int = 0,
        terminate_when_unhealthy: bool = False,
        gym_kwargs: Mapping[str, Any] | None = None,
        device: torch.device | str = "cpu",
        workers: int = 0,
        tasks: str = ALL_TASKS,
    ) -> None:
        if tasks not in VELOCITY_INTERVALS:
            raise ValueError(
                f"{type(self).__name__}: tasks={tasks!r} is not a cheetah_vel task distribution "
                f"(declared: {list(VELOCITY_INTERVALS)})"
            )
        self.task_distribution = tasks
        #: The support of its target velocities: half-open intervals ``[low, high)``.
        self.velocity_intervals = VELOCITY_INTERVALS[tasks]
        super().__init__(
            num_envs=num_envs,
            seed=seed,
            terminate_when_unhealthy=terminate_when_unhealthy,
            gym_kwargs=gym_kwargs,
            device=device,
            workers=workers,
        )

    @property
    def task_dim(self) -> int:
        return 1

    def sample_tasks(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        # One float32 uniform draw per task, laid onto the union of the intervals by length:
        # for the default [0, 3) that is the original's u * 3 exactly (the same tasks as before
        # the distributions existed). Each value is kept below its interval's upper end, so
        # rounding never lands a sample on a neighbouring distribution's support.
        u = torch.rand(num, 1, generator=generator)
        if self.velocity_intervals == ((0.0, self.max_velocity),):
            return (u * self.max_velocity).to(self.device)
        position = u.double() * interval_length(self.velocity_intervals)
        velocity = torch.zeros_like(u)
        start = 0.0
        for low, high in self.velocity_intervals:
            inside = (position >= start) & (position < start + (high - low))
            value = (low + (position - start)).float()
            below = torch.nextafter(torch.tensor(high), torch.tensor(low))
            velocity = torch.where(inside, torch.minimum(value, below), velocity)
            start += high - low
        return velocity.to(self.device)

    def _worker_kwargs(self) -> dict[str, Any]:
        return {**super()._worker_kwargs(), "tasks": self.task_distribution}

    def _task_reward(
        self, velocity: np.ndarray, position: np.ndarray, task: np.ndarray
    ) -> np.ndarray:
        return -np.abs(velocity[:, 0] - task[:, 0])


class _DirectionMixin:
    """Tasks ``d`` uniform in ``{-1, +1}`` (a finite task set, usable for stratified eval)."""

    @property
    def task_dim(self) -> int:
        return 1

    def sample_tasks(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        sign = torch.randint(0, 2, (num, 1), generator=generator).float() * 2.0 - 1.0
        return sign.to(self.device)

    def task_support(self) -> torch.Tensor:
        return torch.tensor([[-1.0], [1.0]], device=self.device)

    def _task_reward(
        self, velocity: np.ndarray, position: np.ndarray, task: np.ndarray
    ) -> np.ndarray:
        return task[:, 0] * velocity[:, 0]


class CheetahDirEnv(_DirectionMixin, _CheetahTaskEnv):
    """HalfCheetah running backward (``d = -1``) or forward (``d = +1``), ``d`` uniform.

    Reward ``d * v_x - 0.05 * |a|^2``; no termination. Observation: v5's 17 dims.

    Examples
    --------
    >>> env = CheetahDirEnv(num_envs=2)
    >>> env.task_support().flatten().tolist()
    [-1.0, 1.0]
    """


# -- Ant ---------------------------------------------------------------------------------------
class _AntTaskEnv(MujocoTaskEnv):
    gym_id = "Ant-v5"
    position_dim = 2

    def _on_envs_created(self) -> None:
        # v5 measures the velocity on its main body (the torso).
        self._body = int(self.envs[0].data.body(self.envs[0]._main_body).id)

    def _position(self, env: Any) -> np.ndarray:
        return env.data.xpos[self._body, :2]


class AntDirEnv(_DirectionMixin, _AntTaskEnv):
    """Ant running backward (``d = -1``) or forward (``d = +1``) along x, ``d`` uniform.

    Reward (v5 terms, which equal the original AntDir's): ``d * v_x + 1 * healthy
    - 0.5 * |a|^2 - 5e-4 * |clip(cfrc_ext, -1, 1)|^2`` with ``v_x`` the torso x velocity.
    The original VariBAD AntDir uses ``d`` as an *angle* (direction ``(cos d, sin d)``, about
    +-57 degrees) although described as forward/backward; we use true forward/backward. No
    termination by default (the original terminates when the torso height leaves [0.2, 1]).
    Observation: v5's 105 dims (no xy, with contact forces).

    Examples
    --------
    >>> env = AntDirEnv(num_envs=2)
    >>> env.reset()["observation"].shape
    torch.Size([2, 105])
    """


class AntGoalEnv(_AntTaskEnv):
    """Ant walking to a goal uniform on the disc of radius 3.

    Goal ``r (cos t, sin t)``, ``t ~ U[0, 2pi)``, ``r = 3 sqrt(u)``, ``u ~ U[0, 1]`` (task
    ``[gx, gy]``). Reward (original AntGoal): ``-||xy - goal||_1 - 0.1 * |a|^2
    - 5e-4 * |clip(cfrc_ext, -1, 1)|^2`` with ``xy`` the torso position after the step, no
    survive reward and no termination. Observation: v5's with the xy position included
    (``exclude_current_positions_from_observation=False``, 107 dims), as the original
    includes the full ``qpos``: the agent must know where it is to find the goal.

    Examples
    --------
    >>> env = AntGoalEnv(num_envs=2)
    >>> bool((env.sample_tasks(100).norm(dim=-1) <= 3).all())
    True
    """

    gym_kwargs: ClassVar[Mapping[str, Any]] = {
        "ctrl_cost_weight": 0.1,
        "contact_cost_weight": 5e-4,
        "healthy_reward": 0.0,
        "exclude_current_positions_from_observation": False,
    }
    goal_radius: ClassVar[float] = 3.0

    @property
    def task_dim(self) -> int:
        return 2

    def sample_tasks(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        u = torch.rand(num, 2, generator=generator)
        angle = u[:, 0] * (2.0 * math.pi)
        radius = self.goal_radius * u[:, 1].sqrt()
        goal = torch.stack([radius * angle.cos(), radius * angle.sin()], -1)
        return goal.to(self.device)

    def _task_reward(
        self, velocity: np.ndarray, position: np.ndarray, task: np.ndarray
    ) -> np.ndarray:
        return -np.abs(position - task).sum(-1)


# -- Walker2d with random physical parameters -------------------------------------------------
class WalkerRandParamsEnv(MujocoTaskEnv):
    """Walker2d whose physical parameters are drawn per task ("rand params").

    For every entry of ``body_mass`` (8), ``body_inertia`` (8 x 3), ``dof_damping`` (9) and
    ``geom_friction`` (8 x 3) an exponent ``u ~ U[-3, 3]`` is drawn and the model value is set to
    ``default * base^u``, with base 1.5 (1.3 for ``dof_damping``), as the original
    ``RandomEnv``. The task is the flat vector of exponents (65 values, in that order). At every
    reset of an env (new task *or* inner episode) its model is rebuilt from the saved defaults
    and the task's scales, then ``mj_setConst`` recomputes the derived constants (the original
    only overwrote the arrays). Reward (v5, equal to the original's):
    ``v_x + 1 * healthy - 1e-3 * |a|^2``; no termination by default (the original terminates
    when unhealthy). Observation: v5's 17 dims (velocities clipped to +-10).

    Examples
    --------
    >>> env = WalkerRandParamsEnv(num_envs=2)
    >>> env.task_dim
    65
    """

    gym_id = "Walker2d-v5"
    #: (model field, base of the per-entry multiplier base^u)
    RAND_PARAMS: ClassVar[tuple[tuple[str, float], ...]] = (
        ("body_mass", 1.5),
        ("body_inertia", 1.5),
        ("dof_damping", 1.3),
        ("geom_friction", 1.5),
    )
    log_scale_limit: ClassVar[float] = 3.0

    def _on_envs_created(self) -> None:
        model = self.envs[0].model
        self._param_shapes = [getattr(model, name).shape for name, _ in self.RAND_PARAMS]
        self._task_dim = int(sum(int(np.prod(s)) for s in self._param_shapes))
        #: Per env, the model's own parameter values: every task scales these.
        self.default_params = [
            {name: getattr(env.model, name).copy() for name, _ in self.RAND_PARAMS}
            for env in self.envs
        ]

    @property
    def task_dim(self) -> int:
        return self._task_dim

    def sample_tasks(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        u = torch.rand(num, self.task_dim, generator=generator, dtype=torch.float64)
        return ((u * 2.0 - 1.0) * self.log_scale_limit).float().to(self.device)

    def scales(self, task: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
        """The multipliers ``base^u`` of one task, per model field (shaped like the field)."""
        task = np.asarray(task.cpu() if isinstance(task, torch.Tensor) else task, np.float64)
        out, start = {}, 0
        for (name, base), shape in zip(self.RAND_PARAMS, self._param_shapes, strict=True):
            size = int(np.prod(shape))
            out[name] = np.power(base, task[start : start + size]).reshape(shape)
            start += size
        return out

    def _apply_task(self, index: int) -> None:
        env = self.envs[index]
        defaults = self.default_params[index]
        for name, scale in self.scales(self._task_np[index]).items():
            getattr(env.model, name)[:] = defaults[name] * scale
        mujoco.mj_setConst(env.model, env.data)

    def _task_reward(
        self, velocity: np.ndarray, position: np.ndarray, task: np.ndarray
    ) -> np.ndarray:
        return velocity[:, 0]


# -- Humanoid ----------------------------------------------------------------------------------
class HumanoidDirEnv(MujocoTaskEnv):
    """Humanoid running in a direction at angle ``t ~ U[0, 2pi)`` (task ``[t]``).

    Reward (v5 terms; the original HumanoidDir, after PEARL, uses the same constants):
    ``1.25 * v . (cos t, sin t) + 5 * healthy - 0.1 * |a|^2 - min(5e-7 * |cfrc_ext|^2, 10)``
    with ``v`` the xy velocity of the mass centre. Actions are v5's ``[-0.4, 0.4]^17`` (the
    original rescales ``[-1, 1]`` to it). No termination by default (the original terminates
    when the torso height leaves (1, 2)). Observation: v5's 348 dims.

    Examples
    --------
    >>> env = HumanoidDirEnv(num_envs=1)
    >>> env.action_spec.space.high[0, 0].item()
    0.4000000059604645
    """

    gym_id = "Humanoid-v5"
    position_dim = 2

    @property
    def task_dim(self) -> int:
        return 1

    def sample_tasks(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return (torch.rand(num, 1, generator=generator) * (2.0 * math.pi)).to(self.device)

    def _position(self, env: Any) -> np.ndarray:
        return mass_center(env.model, env.data)

    def _task_reward(
        self, velocity: np.ndarray, position: np.ndarray, task: np.ndarray
    ) -> np.ndarray:
        angle = task[:, 0]
        return self.forward_reward_weight * (
            velocity[:, 0] * np.cos(angle) + velocity[:, 1] * np.sin(angle)
        )


#: Family name -> class, as registered in :func:`~torchrl_bamdp.envs.make_env`.
MUJOCO_FAMILIES: dict[str, type[MujocoTaskEnv]] = {
    "cheetah_vel": CheetahVelEnv,
    "cheetah_dir": CheetahDirEnv,
    "ant_dir": AntDirEnv,
    "ant_goal": AntGoalEnv,
    "walker_rand_params": WalkerRandParamsEnv,
    "humanoid_dir": HumanoidDirEnv,
}
