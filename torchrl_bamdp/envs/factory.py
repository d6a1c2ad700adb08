"""One entry point for building any task family as a BAMDP env."""

from __future__ import annotations

import torch

from torchrl_bamdp.envs.bamdp import BAMDPEnv
from torchrl_bamdp.envs.gridworld import GridNaviEnv

ENV_FAMILIES = ("gridworld",)


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
        Seed of task sampling.
    device : torch.device or str
        Device of the env's tensors.
    stratified : bool
        For a finite uniform task distribution (GridNavi), give every task to the same number of
        envs instead of sampling (``num_envs`` must be a multiple of the number of tasks), so
        that averages over the envs are exact expectations over the task distribution.
    **family_kwargs
        Passed to the family's task env (e.g. ``grid_size`` for GridNavi).

    Examples
    --------
    >>> env = make_env("gridworld", num_envs=4, seed=0)
    >>> env.horizon
    60
    """
    if name == "gridworld":
        task_env = GridNaviEnv(num_envs=num_envs, device=device, **family_kwargs)
    else:
        raise ValueError(f"env name must be one of {list(ENV_FAMILIES)} (got {name!r})")
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
