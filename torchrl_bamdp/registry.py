"""The open registry of task families: the shipped ones and yours, through the same call.

A task family is a name and a factory that builds its batched
:class:`~torchrl_bamdp.envs.TaskEnv`::

    factory(num_envs: int, device, seed: int | None, **options) -> TaskEnv

``options`` are the family's own keyword arguments (``env.kwargs`` in a config, plus
``grid_size`` / ``workers`` for the shipped families that have them). Once registered, a
family is an ``env.name`` like any other: ``load_config``, :class:`~torchrl_bamdp.trainers.Trainer`
(training, checkpoints, resume, W&B, meta-test, figures), ``bamdp-eval`` and ``bamdp-plot``
build it by name. A config can also name a factory by import path (``env.factory=
"my_pkg.tasks:make_env"``), which needs no registration and survives in the run's
``config.json``, so ``bamdp-train``, ``bamdp-eval`` and a resume in another process find it.

This module imports nothing but the standard library (and
:mod:`torchrl_bamdp.task_distributions`, itself standard-library only): the shipped families are
registered by import path and loaded only when built, so configs validate without loading torch.

Examples
--------
>>> "gridworld" in task_family_names() and "cheetah_vel" in task_family_names()
True
>>> family = register_task_family("doc_corridor", "torchrl_bamdp.envs.gridworld:GridNaviEnv")
>>> get_task_family("doc_corridor").factory_path
'torchrl_bamdp.envs.gridworld:GridNaviEnv'
>>> unregister_task_family("doc_corridor")
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torchrl_bamdp.task_distributions import (
    ALL_TASKS,
    CHEETAH_VEL_DISTRIBUTIONS,
    GRID_DISTRIBUTIONS,
    TaskDistribution,
    grid_goal_cells,
)

#: The reward decoders a family can declare (``algo.decoders.reward=auto`` picks its own).
REWARD_DECODER_KINDS = ("mse", "grid_cells")
#: Env config fields a shipped family may declare as its own options (``observation`` and
#: ``image_size``: the families that render their state as frames, ``env.observation=pixels``).
FAMILY_OPTIONS = ("grid_size", "workers", "observation", "image_size")
#: The values of ``env.observation``: the state vector, or ``3 x image_size x image_size`` frames.
OBSERVATIONS = ("state", "pixels")
#: ``env.image_size`` when ``env.observation=pixels`` and it is not given.
DEFAULT_IMAGE_SIZE = 32
#: Family-specific figures (``belief_heatmap``: the GridNavi belief rollout, Fig 3a/3b).
FAMILY_FIGURES = ("belief_heatmap",)

#: ``package.module:function`` (the form ``env.factory`` and the registry accept).
FACTORY_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


@dataclass(frozen=True)
class TaskFamily:
    """A registered task family: its name and the factory of its task env.

    Parameters
    ----------
    name : str
        The ``env.name`` it is selected by.
    factory : callable or str
        ``factory(num_envs, device, seed, **options) -> TaskEnv``, or its import path
        ``"package.module:function"`` (loaded on first use).
    description : str
        One line for listings.
    reward_decoder : str
        The ELBO's reward decoder that suits its rewards, what ``algo.decoders.reward=auto``
        picks: ``mse`` (Gaussian, any reward) or ``grid_cells`` (a Bernoulli "the goal is here"
        per cell: binary goal rewards on a grid, the belief heatmap).
    finite_tasks : int or callable, optional
        The size of its task set when tasks are drawn uniformly from a finite one (then
        meta-tests are stratified by default), or ``finite_tasks(env_config)`` computing it from
        the env settings; ``None`` for a continuous task distribution.
    options : tuple of str
        The env config fields that are its own options besides the BAMDP horizon (``grid_size``,
        ``workers``, ``observation`` and ``image_size``); the others must stay at their
        defaults.
    figures : tuple of str
        The family-specific figures it supports (``belief_heatmap``: GridNavi's Fig 3a/3b).
    switchable : bool
        Whether its task env can change task mid-rollout without a reset (it has a
        :func:`~torchrl_bamdp.envs.set_tasks`), so that ``env.switching_hazard > 0`` (the
        task-switching BAMDP, :class:`~torchrl_bamdp.envs.SwitchingBAMDPEnv`) accepts it.
    task_distributions : tuple of TaskDistribution
        Its named task distributions (:mod:`torchrl_bamdp.task_distributions`), which
        ``env.train_tasks`` / ``env.test_tasks`` select and its factory samples with
        ``tasks=<name>`` (and ``split_seed=``). ``all``, the family's one distribution when it
        declares none, is always among them (:attr:`distributions`).

    Examples
    --------
    >>> family = TaskFamily("gridworld", "torchrl_bamdp.envs.gridworld:GridNaviEnv")
    >>> family.load().__name__
    'GridNaviEnv'
    >>> family.distribution_names
    ('all',)
    >>> get_task_family("gridworld").disjoint("heldout_train", "heldout_test")
    True
    """

    name: str
    factory: Callable[..., Any] | str
    description: str = ""
    reward_decoder: str = "mse"
    finite_tasks: int | Callable[[Mapping[str, Any]], int] | None = None
    options: tuple[str, ...] = ()
    figures: tuple[str, ...] = ()
    task_distributions: tuple[TaskDistribution, ...] = ()
    switchable: bool = False

    @property
    def distributions(self) -> dict[str, TaskDistribution]:
        """Its task distributions by name, ``all`` first (declared or implicit)."""
        out = {ALL_TASKS: TaskDistribution(ALL_TASKS, "the family's task distribution")}
        out.update((d.name, d) for d in self.task_distributions)
        return out

    @property
    def distribution_names(self) -> tuple[str, ...]:
        """The names ``env.train_tasks`` / ``env.test_tasks`` accept, ``all`` first."""
        return tuple(self.distributions)

    def distribution(self, name: str, field: str = "env.train_tasks") -> TaskDistribution:
        """The distribution ``name``; a ``ValueError`` naming ``field`` and the declared ones.

        Examples
        --------
        >>> try:
        ...     get_task_family("cheetah_vel").distribution("gap", "env.test_tasks")
        ... except ValueError as err:
        ...     print(str(err).split(" (declared")[0])
        env.test_tasks: 'gap' is not a task distribution of env.name='cheetah_vel'
        """
        distributions = self.distributions
        if name not in distributions:
            raise ValueError(
                f"{field}: {name!r} is not a task distribution of env.name={self.name!r} "
                f"(declared: {list(distributions)})"
            )
        return distributions[name]

    def disjoint(self, a: str, b: str) -> bool:
        """Whether distributions ``a`` and ``b`` are declared disjoint (on either side)."""
        distributions = self.distributions
        return distributions[a].is_disjoint_from(b) or distributions[b].is_disjoint_from(a)

    def num_tasks(self, env_config: Mapping[str, Any]) -> int | None:
        """How many tasks its finite uniform task set holds for these env settings (``None``:
        the tasks come from a continuous distribution).

        Examples
        --------
        >>> get_task_family("gridworld").num_tasks({"grid_size": 5})
        21
        >>> get_task_family("cheetah_vel").num_tasks({}) is None
        True
        """
        if callable(self.finite_tasks):
            return int(self.finite_tasks(env_config))
        return self.finite_tasks

    @property
    def factory_path(self) -> str | None:
        """The import path of the factory, if it was given as one."""
        return self.factory if isinstance(self.factory, str) else None

    def load(self) -> Callable[..., Any]:
        """The factory callable (imported from its path on first use)."""
        if callable(self.factory):
            return self.factory
        return load_factory(self.factory, what=f"task family {self.name!r}")


_FAMILIES: dict[str, TaskFamily] = {}


def load_factory(path: str, what: str = "env.factory") -> Callable[..., Any]:
    """Import ``"package.module:function"`` and return the function; clear errors otherwise.

    Examples
    --------
    >>> load_factory("torchrl_bamdp.envs.gridworld:GridNaviEnv").__name__
    'GridNaviEnv'
    >>> try:
    ...     load_factory("no_such_package.tasks:make_env")
    ... except ValueError as err:
    ...     print(str(err).split(";")[0])
    env.factory='no_such_package.tasks:make_env': cannot import module 'no_such_package.tasks'
    """
    if not isinstance(path, str) or not FACTORY_PATH.fullmatch(path):
        raise ValueError(
            f"{what}={path!r} is not an import path of the form 'package.module:function'"
        )
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(
            f"{what}={path!r}: cannot import module {module_name!r}; is it installed or on "
            f"PYTHONPATH? ({type(err).__name__}: {err})"
        ) from err
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ValueError(f"{what}={path!r}: module {module_name!r} has no {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"{what}={path!r} is a {type(target).__name__}, not a callable")
    return target


def register_task_family(
    name: str,
    factory: Callable[..., Any] | str,
    description: str = "",
    replace: bool = False,
    *,
    reward_decoder: str = "mse",
    finite_tasks: int | Callable[[Mapping[str, Any]], int] | None = None,
    options: tuple[str, ...] = (),
    figures: tuple[str, ...] = (),
    task_distributions: tuple[TaskDistribution, ...] = (),
    switchable: bool = False,
) -> TaskFamily:
    """Register a task family under ``name`` (the call the shipped families use too).

    What the family *is* is declared here, never inferred from its name: the reward decoder
    that suits it, whether its task set is finite, its own config options and figures (see
    :class:`TaskFamily`).

    Parameters
    ----------
    name : str
        The ``env.name`` that selects it.
    factory : callable or str
        ``factory(num_envs, device, seed, **options) -> TaskEnv`` or its import path. A factory
        that does not take ``seed`` is called without it.
    description : str
        One line for listings.
    replace : bool
        Allow replacing a family of the same name (otherwise that is an error).
    reward_decoder, finite_tasks, options, figures, task_distributions, switchable
        Its declared traits (:class:`TaskFamily`). A family that declares task distributions
        has a factory taking ``tasks=<name>`` (and ``split_seed=<int>`` if one is ``seeded``);
        ``finite_tasks(env_config)`` then sees ``env_config["train_tasks"]``.

    Examples
    --------
    >>> def make(num_envs, device="cpu", seed=None):
    ...     from torchrl_bamdp.envs import GridNaviEnv
    ...     return GridNaviEnv(num_envs=num_envs, device=device)
    >>> register_task_family("doc_grid", make).name
    'doc_grid'
    >>> try:
    ...     register_task_family("doc_grid", make)
    ... except ValueError as err:
    ...     print(str(err).split(";")[0])
    task family 'doc_grid' is registered already
    >>> unregister_task_family("doc_grid")
    """
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z][\w-]*", name):
        raise ValueError(
            f"task family name must be a word of letters, digits, '_' or '-' starting with a "
            f"letter (got {name!r})"
        )
    if isinstance(factory, str):
        if not FACTORY_PATH.fullmatch(factory):
            raise ValueError(
                f"factory of task family {name!r} must be a callable or an import path "
                f"'package.module:function' (got {factory!r})"
            )
    elif not callable(factory):
        raise ValueError(f"factory of task family {name!r} must be callable (got {factory!r})")
    if name in _FAMILIES and not replace:
        raise ValueError(f"task family {name!r} is registered already; pass replace=True")
    if reward_decoder not in REWARD_DECODER_KINDS:
        raise ValueError(
            f"reward_decoder of task family {name!r} must be one of {REWARD_DECODER_KINDS} "
            f"(got {reward_decoder!r})"
        )
    unknown = sorted(set(options) - set(FAMILY_OPTIONS))
    if unknown:
        raise ValueError(
            f"options of task family {name!r} must be among {FAMILY_OPTIONS} (got {unknown}); "
            "a family of your own takes its options as env.kwargs"
        )
    unknown = sorted(set(figures) - set(FAMILY_FIGURES))
    if unknown:
        raise ValueError(
            f"figures of task family {name!r} must be among {FAMILY_FIGURES} (got {unknown})"
        )
    countable = isinstance(finite_tasks, int) and not isinstance(finite_tasks, bool)
    if not (finite_tasks is None or callable(finite_tasks) or (countable and finite_tasks >= 1)):
        raise ValueError(
            f"finite_tasks of task family {name!r} must be a positive int, a callable or None "
            f"(got {finite_tasks!r})"
        )
    task_distributions = tuple(task_distributions)
    declared = [d.name for d in task_distributions if isinstance(d, TaskDistribution)]
    if len(declared) != len(task_distributions):
        raise ValueError(
            f"task_distributions of task family {name!r} must be TaskDistribution objects "
            f"(torchrl_bamdp.task_distributions.TaskDistribution; got {task_distributions!r})"
        )
    if len(set(declared)) != len(declared):
        raise ValueError(f"task_distributions of task family {name!r} repeat a name ({declared})")
    for d in task_distributions:
        unknown = sorted(set(d.disjoint_from) - set(declared) - {ALL_TASKS})
        if unknown:
            raise ValueError(
                f"task distribution {d.name!r} of task family {name!r} is declared disjoint "
                f"from {unknown}, which it does not declare (declared: {declared})"
            )
    family = TaskFamily(
        name,
        factory,
        description,
        reward_decoder=reward_decoder,
        finite_tasks=finite_tasks,
        options=tuple(options),
        figures=tuple(figures),
        task_distributions=task_distributions,
        switchable=bool(switchable),
    )
    _FAMILIES[name] = family
    return family


def unregister_task_family(name: str) -> None:
    """Remove a registered task family (e.g. a test's)."""
    _FAMILIES.pop(name, None)


def task_family_names() -> tuple[str, ...]:
    """Names of the registered task families, in registration order."""
    return tuple(_FAMILIES)


def get_task_family(name: str) -> TaskFamily:
    """The registered family ``name``; ``ValueError`` naming the registered ones otherwise.

    Examples
    --------
    >>> try:
    ...     get_task_family("gridwrld")
    ... except ValueError as err:
    ...     print(str(err).split(" (registered")[0])
    env.name='gridwrld' is not a registered task family
    """
    if name not in _FAMILIES:
        raise ValueError(
            f"env.name={name!r} is not a registered task family (registered: "
            f"{list(_FAMILIES)}); register yours with "
            "torchrl_bamdp.registry.register_task_family(name, factory), or name its factory "
            "with env.factory='package.module:function'"
        )
    return _FAMILIES[name]


# -- the shipped families, registered the way a user registers theirs ---------------------------
def _grid_goals(env_config: Mapping[str, Any]) -> int:
    """GridNavi's goals under the training distribution (all: every cell but the four next to
    the start)."""
    return len(
        grid_goal_cells(
            int(env_config.get("grid_size") or 5),
            env_config.get("train_tasks") or ALL_TASKS,
            int(env_config.get("split_seed") or 0),
        )
    )


_MUJOCO = {"options": ("workers",)}
_PIXELS = {"options": ("observation", "image_size")}
_SHIPPED: tuple[tuple[str, str, str, dict[str, Any]], ...] = (
    (
        "gridworld",
        "torchrl_bamdp.envs.gridworld:GridNaviEnv",
        "GridNavi: unknown goal cell",
        {
            "reward_decoder": "grid_cells",
            "finite_tasks": _grid_goals,
            "options": ("grid_size", "observation", "image_size"),
            "figures": ("belief_heatmap",),
            "task_distributions": GRID_DISTRIBUTIONS,
            "switchable": True,
        },
    ),
    (
        "point_robot_sparse",
        "torchrl_bamdp.envs.point_robot:sparse_point_robot",
        "point robot, goal on the unit half circle, sparse reward",
        {**_PIXELS, "switchable": True},
    ),
    (
        "point_robot_dense",
        "torchrl_bamdp.envs.point_robot:dense_point_robot",
        "point robot, goal on the unit half circle, dense reward",
        {**_PIXELS, "switchable": True},
    ),
    (
        "cheetah_vel",
        "torchrl_bamdp.envs.mujoco:CheetahVelEnv",
        "HalfCheetah, target velocity",
        {**_MUJOCO, "task_distributions": CHEETAH_VEL_DISTRIBUTIONS},
    ),
    (
        "cheetah_dir",
        "torchrl_bamdp.envs.mujoco:CheetahDirEnv",
        "HalfCheetah, forward/backward",
        {**_MUJOCO, "finite_tasks": 2},
    ),
    (
        "ant_dir",
        "torchrl_bamdp.envs.mujoco:AntDirEnv",
        "Ant, forward/backward",
        {**_MUJOCO, "finite_tasks": 2},
    ),
    (
        "ant_goal",
        "torchrl_bamdp.envs.mujoco:AntGoalEnv",
        "Ant, goal on a disc of radius 3",
        _MUJOCO,
    ),
    (
        "walker_rand_params",
        "torchrl_bamdp.envs.mujoco:WalkerRandParamsEnv",
        "Walker2d, random body parameters",
        _MUJOCO,
    ),
    (
        "humanoid_dir",
        "torchrl_bamdp.envs.mujoco:HumanoidDirEnv",
        "Humanoid, direction angle",
        _MUJOCO,
    ),
)
for _name, _path, _description, _traits in _SHIPPED:
    register_task_family(_name, _path, description=_description, **_traits)

#: The names of the shipped task families, in order (the config schema's ``ENV_NAMES``).
SHIPPED_TASK_FAMILIES = tuple(name for name, *_ in _SHIPPED)
