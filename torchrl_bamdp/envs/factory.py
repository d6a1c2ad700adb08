"""One entry point for building any task family as a BAMDP env."""

from __future__ import annotations

import inspect
from typing import Any

import torch

from torchrl_bamdp.envs.bamdp import BAMDPEnv
from torchrl_bamdp.envs.gridworld import GridNaviEnv
from torchrl_bamdp.envs.task_env import TaskEnv
from torchrl_bamdp.registry import get_task_family, load_factory, task_family_names
from torchrl_bamdp.task_distributions import ALL_TASKS

#: The shipped task families (all registered through
#: :func:`torchrl_bamdp.registry.register_task_family`, as a user's are).
ENV_FAMILIES = task_family_names()
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
    factory: str | None = None,
    check_actions: str = "full",
    end: str = "truncated",
    sync_free: bool | None = None,
    tasks: str = ALL_TASKS,
    split_seed: int = 0,
    switching_hazard: float = 0.0,
    **family_kwargs,
) -> BAMDPEnv:
    """Build the batched BAMDP env of a task family.

    Parameters
    ----------
    name : str
        A registered task family (:func:`torchrl_bamdp.registry.task_family_names`: the
        shipped :data:`ENV_FAMILIES` and any registered since), or only a label when
        ``factory`` is given.
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
        ``step_size`` (point robot); ``observation`` (``"state"`` or ``"pixels"``) and
        ``image_size`` (GridNavi, point robot; ``observation="state"`` or ``None`` is ignored by
        the other families); ``terminate_when_unhealthy``, ``gym_kwargs``, ``workers``
        (MuJoCo: simulators stepped in that many worker processes, 0 in process). ``grid_size``
        unset (``None``) or equal to GridNavi's default (5) is ignored by the other families,
        and ``workers=0`` by the pure-torch ones; any other option a family does not have raises
        a ``ValueError``. For a user's family, its factory's own keyword arguments (``env.kwargs``).
    factory : str, optional
        ``"package.module:function"``: build the task env with that factory instead of a
        registered family's (``env.factory``; see :mod:`torchrl_bamdp.registry`).
    check_actions : str
        :class:`~torchrl_bamdp.envs.BAMDPEnv`'s action check (``full``, ``shape``, ``off``).
    end : str
        How a task ends for PPO's value targets: ``truncated`` or ``terminated``
        (``env.bamdp_end``).
    sync_free : bool, optional
        Step without host syncs (:class:`~torchrl_bamdp.envs.BAMDPEnv`; ``env.sync_free``);
        ``None``: on accelerators only.
    tasks : str
        The task distribution to sample (``env.train_tasks``; a name the family declares, see
        :mod:`torchrl_bamdp.task_distributions`); ``all``, the family's one distribution, is
        not passed to the factory, so families without named distributions need no option.
    split_seed : int
        Seed of the seeded distributions (GridNavi's held-out goals; ``env.split_seed``),
        passed to factories that take it.
    switching_hazard : float
        ``0`` (default): the tasks never change within a BAMDP. ``h > 0``: a
        :class:`~torchrl_bamdp.envs.SwitchingBAMDPEnv`, one rollout of ``episode_length``
        steps whose task is redrawn with probability ``h`` after every step, unannounced
        (``env.switching_hazard``); ``episodes_per_task`` must then be 1 (there are no inner
        episodes) and the family must be switchable (:func:`~torchrl_bamdp.envs.set_tasks`).

    Examples
    --------
    >>> env = make_env("gridworld", num_envs=4, seed=0)
    >>> env.horizon
    60
    >>> env = make_env("gridworld", num_envs=4, episode_length=200, episodes_per_task=1,
    ...                switching_hazard=0.05)
    >>> type(env).__name__, env.horizon, env.hazard
    ('SwitchingBAMDPEnv', 200, 0.05)
    >>> len(make_env("gridworld", num_envs=5, tasks="heldout_test", stratified=True).fixed_tasks)
    5
    """
    options = dict(family_kwargs)
    if tasks != ALL_TASKS:
        if factory is None:  # a registered family names the ones it declares
            get_task_family(name).distribution(tasks, field=f"make_env({name!r}): tasks")
        options["tasks"] = tasks
    options["split_seed"] = split_seed
    task_env = _make_task_env(name, num_envs, seed, device, options, factory)
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
    if switching_hazard:
        if episodes_per_task != 1:
            raise ValueError(
                f"switching_hazard={switching_hazard}: a switching env is one rollout of "
                f"episode_length steps with no inner episodes; episodes_per_task must be 1 (got "
                f"{episodes_per_task})"
            )
        # Imported here: envs.switching builds on this module's _make_task_env.
        from torchrl_bamdp.envs.switching import SwitchingBAMDPEnv

        return SwitchingBAMDPEnv(
            task_env,
            episode_length,
            switching_hazard,
            seed=seed,
            fixed_tasks=fixed_tasks,
            check_actions=check_actions,
            end=end,
            sync_free=sync_free,
        )
    return BAMDPEnv(
        task_env,
        episode_length,
        episodes_per_task,
        seed=seed,
        fixed_tasks=fixed_tasks,
        check_actions=check_actions,
        end=end,
        sync_free=sync_free,
    )


def make_env_from_config(
    env_config: Any, seed: int | None, device: torch.device | str = "cpu", **changes: Any
) -> BAMDPEnv:
    """:func:`make_env` with the fields of an env config (``config.env``), ``changes`` winning.

    ``env_config`` is a :class:`~torchrl_bamdp.configs.schema.EnvConfig` (or anything with its
    fields): ``name``, ``num_envs``, ``episode_length``, ``episodes_per_task``, ``grid_size``,
    ``workers``, ``observation``, ``image_size``, ``bamdp_end``, ``check_actions``,
    ``sync_free``, ``train_tasks`` (as ``tasks``; a meta-test on another distribution passes
    ``tasks=<name>`` in ``changes``), ``split_seed``, ``switching_hazard``, ``factory`` and
    ``kwargs`` (a user's family: its factory and options).

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
        "observation": getattr(env_config, "observation", "state"),
        "image_size": getattr(env_config, "image_size", None),
        "factory": getattr(env_config, "factory", None),
        "end": getattr(env_config, "bamdp_end", "truncated"),
        "check_actions": getattr(env_config, "check_actions", "full"),
        "sync_free": getattr(env_config, "sync_free", None),
        "tasks": getattr(env_config, "train_tasks", ALL_TASKS),
        "split_seed": getattr(env_config, "split_seed", 0),
        "switching_hazard": getattr(env_config, "switching_hazard", 0.0),
        **dict(getattr(env_config, "kwargs", None) or {}),
        **changes,
    }
    return make_env(seed=seed, device=device, **options)


def _accepted_options(factory: Any) -> tuple[set[str], bool]:
    """Keyword options ``factory`` accepts, and whether it takes ``**kwargs`` (then any)."""
    target = factory.__init__ if isinstance(factory, type) else factory
    params = inspect.signature(target).parameters
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    names = {
        n
        for n, p in params.items()
        if n != "self"
        and p.kind not in (inspect.Parameter.VAR_POSITIONAL,)
        and p.kind is not inspect.Parameter.VAR_KEYWORD
    }
    return names, var_kw


def _make_task_env(
    name: str,
    num_envs: int,
    seed: int | None,
    device: torch.device | str,
    options: dict,
    factory: str | None = None,
) -> TaskEnv:
    """The task env of family ``name`` (or of the ``factory`` import path), after checking
    ``options`` against what its factory accepts."""
    if factory is not None:
        build, label = load_factory(factory), f"env.factory={factory!r}"
    else:
        build, label = get_task_family(name).load(), f"task family {name!r}"
    accepted, any_option = _accepted_options(build)
    # The shared GridNavi / MuJoCo options: at their neutral values they are not passed to a
    # family that does not have them, so callers may pass them unconditionally.
    if "grid_size" not in accepted and options.get("grid_size") in (None, _DEFAULT_GRID_SIZE):
        options.pop("grid_size", None)
    if "workers" not in accepted and options.get("workers", 0) == 0:
        options.pop("workers", None)  # in-process, as the pure-torch families always are
    if "split_seed" not in accepted:  # only the seeded task distributions use it
        options.pop("split_seed", None)
    if "observation" not in accepted and options.get("observation") in (None, "state"):
        options.pop("observation", None)  # every family observes its state
    if options.get("image_size", 0) is None:  # unset: the family's own default (or no frames)
        options.pop("image_size")
    if "seed" in accepted:  # MuJoCo: the simulators' reset noise; pure-torch envs have none
        options.setdefault("seed", 0 if seed is None else int(seed))
    known = accepted - {"num_envs", "device"}
    unknown = sorted(set(options) - known) if not any_option else []
    if unknown:
        raise ValueError(
            f"make_env({name!r}): unknown option(s) {unknown}; {name} accepts "
            f"{sorted(known - {'seed'}) or 'none'}"
            + (" (grid_size is a GridNavi option)" if "grid_size" in unknown else "")
            + (" (workers is a MuJoCo option)" if "workers" in unknown else "")
            + (
                " (observation and image_size are options of the families that render pixels)"
                if {"observation", "image_size"} & set(unknown)
                else ""
            )
            + (
                f" (tasks={options['tasks']!r}: this family declares no task distributions but "
                "'all')"
                if "tasks" in unknown
                else ""
            )
        )
    task_env = build(num_envs=num_envs, device=device, **options)
    if not isinstance(task_env, TaskEnv):
        raise TypeError(
            f"{label} returned a {type(task_env).__name__}, not a TaskEnv (a batched TorchRL "
            "EnvBase that resets to the task it is given; see torchrl_bamdp.envs.TaskEnv)"
        )
    if tuple(task_env.batch_size) != (num_envs,):
        raise ValueError(
            f"{label} returned a task env of batch size {tuple(task_env.batch_size)}; it was "
            f"asked for num_envs={num_envs}, so it must be ({num_envs},)"
        )
    return task_env
