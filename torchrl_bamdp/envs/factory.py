"""One entry point for building any task family as a BAMDP env."""

from __future__ import annotations

import inspect
from typing import Any

import torch

from torchrl_bamdp.envs.bamdp import BAMDPEnv
from torchrl_bamdp.envs.gridworld import GridNaviEnv
from torchrl_bamdp.envs.mujoco import MUJOCO_FAMILIES
from torchrl_bamdp.envs.point_robot import PointRobotEnv
from torchrl_bamdp.envs.task_env import TaskEnv

#: Point-robot family name -> its ``sparse`` flag.
POINT_ROBOT_FAMILIES = {"point_robot_sparse": True, "point_robot_dense": False}
ENV_FAMILIES = ("gridworld", *POINT_ROBOT_FAMILIES, *MUJOCO_FAMILIES)
#: GridNavi's default grid size: the only ``grid_size`` other families accept (and ignore), so
#: that callers may pass the GridNavi option unconditionally.
_DEFAULT_GRID_SIZE = inspect.signature(GridNaviEnv.__init__).parameters["grid_size"].default


def make_env(
    name: str = "gridworld",
    num_envs: int = 16,
    episode_length: int = 15,
    episodes_per_task: int = 4,
    seed: int | None = None,
    device: torch.device | str = "cpu",
    stratified: bool = False,
    **family_kwargs,
) -> BAMDPEnv:
    """Build the batched BAMDP env of a task family.

    Parameters
    ----------
    name : str
        Task family, one of :data:`ENV_FAMILIES`.
    num_envs : int
        Tasks run in parallel (the batch size).
    episode_length, episodes_per_task : int
        The BAMDP horizon (see :class:`~torchrl_bamdp.envs.BAMDPEnv`).
    seed : int, optional
        Seed of task sampling (and of the MuJoCo simulators' reset noise).
    device : torch.device or str
        Device of the env's tensors.
    stratified : bool
        For a finite uniform task distribution (GridNavi), give every task to the same number of
        envs instead of sampling (``num_envs`` must be a multiple of the number of tasks), so
        that averages over the envs are exact expectations over the task distribution.
    **family_kwargs
        Passed to the family's task env: ``grid_size`` (GridNavi); ``goal_radius``,
        ``step_size`` (point robot); ``terminate_when_unhealthy``, ``gym_kwargs``, ``workers``
        (MuJoCo: simulators stepped in that many worker processes, 0 in process). ``grid_size``
        equal to GridNavi's default (5) is ignored by the other families, and ``workers=0`` by
        the pure-torch ones; any other option a family does not have raises a ``ValueError``.

    Examples
    --------
    >>> env = make_env("gridworld", num_envs=4, seed=0)
    >>> env.horizon
    60
    """
    task_env = _make_task_env(name, num_envs, seed, device, dict(family_kwargs))
    fixed_tasks = None
    if stratified:
        support = task_env.task_support()
        if support is None:
            raise ValueError(f"stratified=True needs a finite task distribution; {name!r} has none")
        if num_envs % len(support) != 0:
            raise ValueError(
                f"stratified=True: num_envs ({num_envs}) must be a multiple of the number of "
                f"tasks of {name!r} ({len(support)})"
            )
        fixed_tasks = support.repeat(num_envs // len(support), 1)
    return BAMDPEnv(task_env, episode_length, episodes_per_task, seed=seed, fixed_tasks=fixed_tasks)


def make_env_from_config(
    env_config: Any, seed: int | None, device: torch.device | str = "cpu", **changes: Any
) -> BAMDPEnv:
    """:func:`make_env` with the fields of an env config (``config.env``), ``changes`` winning.

    ``env_config`` is a :class:`~torchrl_bamdp.configs.schema.EnvConfig` (or anything with its
    fields): ``name``, ``num_envs``, ``episode_length``, ``episodes_per_task``, ``grid_size``,
    ``workers``.

    Examples
    --------
    >>> from torchrl_bamdp.configs import load_config
    >>> env = make_env_from_config(load_config({}).env, seed=0, num_envs=2, episodes_per_task=1)
    >>> env.batch_size, env.horizon
    (torch.Size([2]), 15)
    """
    options = {
        "name": env_config.name,
        "num_envs": env_config.num_envs,
        "episode_length": env_config.episode_length,
        "episodes_per_task": env_config.episodes_per_task,
        "grid_size": env_config.grid_size,
        "workers": env_config.workers,
        **changes,
    }
    return make_env(seed=seed, device=device, **options)


def _make_task_env(
    name: str, num_envs: int, seed: int | None, device: torch.device | str, options: dict
) -> TaskEnv:
    """The task env of family ``name``, after checking ``options`` against what it accepts."""
    if name not in ENV_FAMILIES:
        raise ValueError(f"env name must be one of {list(ENV_FAMILIES)} (got {name!r})")
    if name == "gridworld":
        cls, fixed = GridNaviEnv, {}
    elif name in POINT_ROBOT_FAMILIES:
        cls, fixed = PointRobotEnv, {"sparse": POINT_ROBOT_FAMILIES[name]}
    else:
        cls, fixed = MUJOCO_FAMILIES[name], {"seed": 0 if seed is None else int(seed)}
    if name != "gridworld" and options.get("grid_size", _DEFAULT_GRID_SIZE) == _DEFAULT_GRID_SIZE:
        options.pop("grid_size", None)
    if name not in MUJOCO_FAMILIES and options.get("workers", 0) == 0:
        options.pop("workers", None)  # in-process, as the pure-torch families always are
    skip = {"self", "num_envs", "device", *fixed}
    accepted = set(inspect.signature(cls.__init__).parameters) - skip
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ValueError(
            f"make_env({name!r}): unknown option(s) {unknown}; {name} accepts "
            f"{sorted(accepted) or 'none'}"
            + (" (grid_size is a GridNavi option)" if "grid_size" in unknown else "")
            + (" (workers is a MuJoCo option)" if "workers" in unknown else "")
        )
    return cls(num_envs=num_envs, device=device, **fixed, **options)
