"""A task-switching BAMDP: the task changes at random, unannounced times within one rollout.

Issue 20, item 2 ("beyond the paper's limitations"): VariBAD assumes the task is fixed for the
whole BAMDP. Here it is not. One rollout lasts ``horizon`` steps with no inner episodes (the agent
is never put back to a start state and is told of no episode structure); after every step each
env independently *redraws* its task from the family's task distribution with probability
``hazard``. The redrawn task may equal the old one (it is a fresh draw from the prior, which is
what makes the exact posterior a hidden-Markov-model filter with transition
``(1 - h) * 1[m' = m] + h * prior(m')``); the agent's state (GridNavi: its position) carries on,
only the task changes. TorchRL's ``done`` fires only at the end of the rollout.

Timing: the reward of a step is computed with the task in force *before* the step (the root
tensordict's ``task``); the switch is drawn after it, so ``("next", "task")`` is the task in force
for the *next* step and ``("next", "task_switched")`` says whether it was redrawn after this step.

Privileged keys
---------------
``task`` (the true task in force) and :data:`TASK_SWITCHED` (``task_switched``: whether the task
was redrawn after this step) are written for oracles, critics and evaluation only. A policy or a
belief that reads them is told what it must infer; the hyper-state transforms of this package
never read them. ``task_switched`` marks the hazard event, not a change of the task: a redraw that
draws the same task is flagged too (with probability ``1 / num_tasks`` for GridNavi).

Seeding: switch times and redrawn tasks come from the BAMDP's task generator, with a fixed number
of draws per step whatever the actions, so the same seed gives the same initial tasks, switch
times and tasks for any policy.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from tensordict import TensorDictBase
from torchrl.data import Categorical

from torchrl_bamdp.envs.bamdp import BAMDPEnv
from torchrl_bamdp.envs.factory import _make_task_env
from torchrl_bamdp.envs.gridworld import GridNaviEnv
from torchrl_bamdp.envs.point_robot import PointRobotEnv
from torchrl_bamdp.envs.task_env import TaskEnv

__all__ = ["TASK_SWITCHED", "SwitchingBAMDPEnv", "make_switching_env", "set_tasks"]

#: Privileged flag (evaluation only): the task was redrawn after this step (read it from the next
#: tensordict). ``False`` at a reset.
TASK_SWITCHED = "task_switched"


@functools.singledispatch
def set_tasks(task_env: TaskEnv, tasks: torch.Tensor, mask: torch.Tensor) -> None:
    """Change the task of the masked envs of ``task_env`` *without* resetting their state.

    The one operation a task family needs to be switchable. ``TaskEnv`` has no such call (its
    only way to set a task is a reset, which also moves the agent back to a start state), so it
    is dispatched on the task env's type: GridNavi and the point robot are registered here; a
    user's family either registers its own (``@set_tasks.register(MyEnv)``) or defines a method
    ``set_tasks(tasks, mask)``, which this default calls.

    Parameters
    ----------
    task_env : TaskEnv
        The batched task env.
    tasks : torch.Tensor
        ``[num_envs, task_dim]`` new tasks (only the masked rows are used).
    mask : torch.Tensor
        ``[num_envs]`` bool: which envs switch.

    Raises
    ------
    TypeError
        If ``task_env``'s family has no way to switch tasks.

    Examples
    --------
    >>> env = GridNaviEnv(num_envs=2)
    >>> _ = env.reset()
    >>> set_tasks(env, torch.tensor([[2.0, 2.0], [4.0, 4.0]]), torch.tensor([True, False]))
    >>> env._goal.tolist()
    [[2, 2], [4, 4]]
    """
    method = getattr(task_env, "set_tasks", None)
    if not callable(method):
        raise TypeError(_not_switchable(task_env))
    method(tasks, mask)


def _not_switchable(task_env: TaskEnv) -> str:
    name = type(task_env).__name__
    return (
        f"{name} cannot switch tasks mid-rollout: register a function with "
        f"@torchrl_bamdp.envs.switching.set_tasks.register({name}) or give it a method "
        "set_tasks(tasks, mask) that changes the task of the masked envs without resetting "
        "their state"
    )


@set_tasks.register
def _(task_env: GridNaviEnv, tasks: torch.Tensor, mask: torch.Tensor) -> None:
    # GridNavi keeps its goal as a [B, 2] long tensor; the position is untouched.
    # torch.where, not mask indexing: a boolean index is a host sync on a GPU.
    new = tasks.to(task_env.device).round().long()
    task_env._goal = torch.where(mask.reshape(-1, 1), new, task_env._goal)


@set_tasks.register
def _(task_env: PointRobotEnv, tasks: torch.Tensor, mask: torch.Tensor) -> None:
    task_env._goal = torch.where(mask.reshape(-1, 1), tasks.to(task_env._goal), task_env._goal)


class SwitchingBAMDPEnv(BAMDPEnv):
    """One long rollout of a task env whose task is redrawn with probability ``hazard`` per step.

    A :class:`~torchrl_bamdp.envs.BAMDPEnv` with a single inner episode of ``horizon`` steps
    (so ``episode_done`` fires only with ``done``, at the end, and ``true_observation`` always
    equals ``observation``: every consumer of BAMDPEnv works unchanged), plus the switches: after
    every step each env independently redraws its task from ``task_env.sample_tasks`` with
    probability ``hazard``, without resetting its state (see :func:`set_tasks`). The new task is
    written under ``("next", "task")`` and the privileged flag ``("next", "task_switched")``.

    Parameters
    ----------
    task_env : TaskEnv
        A switchable task env (one :func:`set_tasks` knows).
    horizon : int
        Steps of one rollout (one task *sequence*); ``done`` fires after the last.
    hazard : float
        Probability in ``[0, 1]`` that an env's task is redrawn after a step. ``0`` is a
        one-episode BAMDPEnv with the same seed, step for step.
    seed : int, optional
        Seed of the generator of initial tasks, switch times and redrawn tasks.
    check_actions, end, sync_free
        As :class:`~torchrl_bamdp.envs.BAMDPEnv`.
    fixed_tasks : torch.Tensor, optional
        ``[num_envs, task_dim]``: the task each env *starts* every rollout with (stratified
        meta-tests); the switches redraw from the task distribution as usual.

    Examples
    --------
    >>> env = SwitchingBAMDPEnv(GridNaviEnv(num_envs=2), horizon=50, hazard=0.1, seed=0)
    >>> rollout = env.rollout(50, break_when_any_done=False)
    >>> rollout["next", "done"].sum().item(), rollout["next", "episode_done"].sum().item()
    (2, 2)
    >>> rollout["next", "task_switched"].shape
    torch.Size([2, 50, 1])
    """

    def __init__(
        self,
        task_env: TaskEnv,
        horizon: int,
        hazard: float,
        seed: int | None = None,
        check_actions: str = "full",
        end: str = "truncated",
        sync_free: bool | None = None,
        fixed_tasks: torch.Tensor | None = None,
    ) -> None:
        hazard = float(hazard)
        if not 0.0 <= hazard <= 1.0:
            raise ValueError(f"hazard must be a probability in [0, 1] (got {hazard})")
        if isinstance(task_env, TaskEnv):
            # Fail at construction, not at the first switch deep inside a collector.
            _check_switchable(task_env)
        self.hazard = hazard
        super().__init__(
            task_env,
            episode_length=horizon,
            episodes_per_task=1,
            seed=seed,
            fixed_tasks=fixed_tasks,
            check_actions=check_actions,
            end=end,
            sync_free=sync_free,
        )

    def _make_specs(self) -> None:
        super()._make_specs()
        self.observation_spec[TASK_SWITCHED] = Categorical(
            2, shape=(*self.batch_size, 1), dtype=torch.bool, device=self.device
        )

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        out = super()._reset(tensordict, **kwargs)
        out.set(
            TASK_SWITCHED, torch.zeros(*self.batch_size, 1, dtype=torch.bool, device=self.device)
        )
        return out

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        out = super()._step(tensordict)  # the reward used the task in force before the step
        n = self.batch_size.numel()
        switched = torch.zeros(n, dtype=torch.bool, device=self.device)
        if self.hazard > 0.0:
            # A fixed number of draws per step (n uniforms, n tasks), whatever the actions and
            # whoever switches: switch times and tasks depend on the seed only.
            u = torch.rand(n, generator=self.task_generator)
            fresh = self.task_env.sample_tasks(n, self.task_generator).to(self._task)
            # An env that just finished its rollout keeps its task: the next reset draws anew.
            switched = (u < self.hazard).to(self.device) & ~out.get("done").reshape(n)
            if self.sync_free or bool(switched.any()):
                self._task = torch.where(switched.unsqueeze(-1), fresh, self._task)
                set_tasks(self.task_env, self._task, switched)
        out.set("task", self._task.reshape(*self.batch_size, -1).clone())
        out.set(TASK_SWITCHED, switched.reshape(*self.batch_size, 1))
        return out


def _check_switchable(task_env: TaskEnv) -> None:
    default = set_tasks.dispatch(object)
    if set_tasks.dispatch(type(task_env)) is default and not callable(
        getattr(task_env, "set_tasks", None)
    ):
        raise TypeError(_not_switchable(task_env))


def make_switching_env(
    name: str = "gridworld",
    num_envs: int = 16,
    horizon: int = 200,
    hazard: float = 0.02,
    seed: int | None = None,
    device: torch.device | str = "cpu",
    factory: str | None = None,
    check_actions: str = "full",
    end: str = "truncated",
    sync_free: bool | None = None,
    **family_kwargs: Any,
) -> SwitchingBAMDPEnv:
    """Build the task-switching env of a registered task family, like :func:`make_env`.

    Parameters
    ----------
    name : str
        A registered task family whose task env :func:`set_tasks` can switch (``gridworld``,
        ``point_robot_sparse``, ``point_robot_dense``, or a user's that registers one), or a
        label when ``factory`` is given.
    num_envs : int
        Rollouts run in parallel.
    horizon : int
        Steps of one rollout.
    hazard : float
        Per-step probability that an env's task is redrawn.
    seed : int, optional
        Seed of initial tasks, switch times and redrawn tasks.
    device : torch.device or str
        Device of the env's tensors.
    factory, check_actions, end, sync_free, **family_kwargs
        As :func:`~torchrl_bamdp.envs.make_env` (e.g. ``grid_size`` for GridNavi).

    Examples
    --------
    >>> env = make_switching_env("gridworld", num_envs=4, horizon=100, hazard=0.05, seed=0)
    >>> env.horizon, env.hazard, env.task_env.grid_size
    (100, 0.05, 5)
    """
    task_env = _make_task_env(name, num_envs, seed, device, dict(family_kwargs), factory)
    return SwitchingBAMDPEnv(
        task_env,
        horizon,
        hazard,
        seed=seed,
        check_actions=check_actions,
        end=end,
        sync_free=sync_free,
    )
