"""Named task distributions of a task family: training and out-of-distribution test splits.

A task family samples its tasks from one distribution by default, ``all`` (the original work's:
GridNavi's 21 goal cells, ``cheetah_vel``'s ``U[0, 3]``). A family may declare more, by name,
in its registration (:func:`torchrl_bamdp.registry.register_task_family`, argument
``task_distributions``). A run trains on one of them (``env.train_tasks``) and ``bamdp-eval``
meta-tests it on that one (in distribution) and on the out-of-distribution ones
(``env.test_tasks``, or ``bamdp-eval test_tasks=...``), side by side.

Why the distributions are named, declared here and built by the env
---------------------------------------------------------------------
* **One place per concept.** A distribution is a property of the task family, so the family's
  registration declares it (name, one line, which distributions it is disjoint from), and the
  family's task env samples it (``factory(..., tasks=<name>, split_seed=<seed>)``). The cell
  sets and intervals themselves are defined here, in plain Python, so that the env, the exact
  belief, the Bayes-optimal solver and the config validation (which runs without torch) read
  the same definition.
* **Splits are a train/test pair of names, not a config of numbers.** ``heldout_train`` and
  ``heldout_test`` are complementary by construction (the same seeded choice of goals, one
  side each), so a run cannot test on goals it trained on by a typo in a list of cells. A
  distribution declares the ones its support is disjoint from (:attr:`TaskDistribution.
  disjoint_from`); reports mark a test distribution disjoint from the training one as
  out-of-distribution, and ``tests/envs/test_task_distributions.py`` checks every declared
  disjointness on sampled tasks.
* **Seeded.** The held-out goals are drawn by ``env.split_seed`` (a Fisher-Yates shuffle on
  :meth:`random.Random.random`, whose sequence Python guarantees across versions), so a split is
  reproducible everywhere and a second split seed is a second experiment.

GridNavi (``gridworld``)
------------------------
The candidate goals are the cells of an ``N x N`` grid but the four nearest the start
(:func:`grid_goal_cells`; 21 on 5 x 5).

==================  ===========================================================================
``all``             every candidate goal (the original)
``heldout_train``   all but ``max(1, G // 4)`` goals held out by ``split_seed`` (16 of 21)
``heldout_test``    the held-out goals (5 of 21); disjoint from ``heldout_train``
``region_train``    goals in the columns ``x < N - 2`` (11 of 21)
``region_test``     goals in the two rightmost columns, ``x >= N - 2`` (10 of 21): the goal
                    region shifted right; disjoint from ``region_train``
==================  ===========================================================================

HalfCheetahVel (``cheetah_vel``)
--------------------------------
Target velocities uniform on a union of half-open intervals (:data:`VELOCITY_INTERVALS`):

=======================  ================================  ====================================
``all``                  ``U[0, 3)`` (the original)
``extrapolation_train``  ``U[0, 2)``
``extrapolation_test``   ``U[2, 3)``                       disjoint from ``extrapolation_train``
``gap_train``            ``U([0, 1) u [2, 3))``
``gap_test``             ``U[1, 2)`` (interpolation)       disjoint from ``gap_train``
=======================  ================================  ====================================

Longer meta-test horizons (6 episodes for an agent trained on 4, as the original evaluates) are
not a task distribution: they are ``bamdp-eval episodes=6`` on any of them.

This module imports only the standard library (the registry and the config schema use it).

Examples
--------
>>> len(grid_goal_cells(5, "heldout_train")), len(grid_goal_cells(5, "heldout_test"))
(16, 5)
>>> set(grid_goal_cells(5, "heldout_train")).isdisjoint(grid_goal_cells(5, "heldout_test"))
True
>>> VELOCITY_INTERVALS["gap_train"]
((0.0, 1.0), (2.0, 3.0))
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ALL_TASKS",
    "CHEETAH_VEL_DISTRIBUTIONS",
    "GRID_DISTRIBUTIONS",
    "VELOCITY_INTERVALS",
    "TaskDistribution",
    "grid_goal_cells",
    "heldout_goal_count",
    "interval_length",
]

#: The name of every family's default distribution: the one it samples without a ``tasks``
#: option (the original work's).
ALL_TASKS = "all"

Cell = tuple[int, int]


@dataclass(frozen=True)
class TaskDistribution:
    """One named task distribution of a task family (declared at registration).

    Parameters
    ----------
    name : str
        What ``env.train_tasks`` / ``env.test_tasks`` select it by (a word).
    description : str
        One line for listings and reports (its support, in the family's terms).
    disjoint_from : tuple of str
        The distributions of the same family whose support this one's never meets (declared on
        either side, the relation is symmetric): a test distribution disjoint from the training
        one is out of distribution by construction. ``tests/envs/test_task_distributions.py``
        checks each declaration on sampled tasks.
    seeded : bool
        Whether its support depends on ``env.split_seed`` (GridNavi's held-out goals).

    Examples
    --------
    >>> d = TaskDistribution("heldout_test", "the held-out goals", ("heldout_train",), True)
    >>> d.is_disjoint_from("heldout_train"), d.is_disjoint_from("all")
    (True, False)
    """

    name: str
    description: str = ""
    disjoint_from: tuple[str, ...] = ()
    seeded: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z][\w-]*", self.name):
            raise ValueError(
                f"TaskDistribution.name must be a word of letters, digits, '_' or '-' starting "
                f"with a letter (got {self.name!r})"
            )
        if self.name in self.disjoint_from:
            raise ValueError(f"TaskDistribution {self.name!r} cannot be disjoint from itself")

    def is_disjoint_from(self, other: str) -> bool:
        """Whether this distribution declares itself disjoint from ``other`` (one side only;
        :meth:`TaskFamily.disjoint <torchrl_bamdp.registry.TaskFamily.disjoint>` checks both)."""
        return other in self.disjoint_from


# -- GridNavi -------------------------------------------------------------------------------------
GRID_DISTRIBUTIONS: tuple[TaskDistribution, ...] = (
    TaskDistribution(ALL_TASKS, "every candidate goal (21 on 5x5; the original)"),
    TaskDistribution(
        "heldout_train",
        "all goals but max(1, G // 4) held out by env.split_seed (16 of 21 on 5x5)",
        seeded=True,
    ),
    TaskDistribution(
        "heldout_test",
        "the held-out goals (5 of 21 on 5x5)",
        disjoint_from=("heldout_train",),
        seeded=True,
    ),
    TaskDistribution("region_train", "goals in the columns x < N - 2 (11 of 21 on 5x5)"),
    TaskDistribution(
        "region_test",
        "goals in the two rightmost columns x >= N - 2 (10 of 21 on 5x5): the region shifted",
        disjoint_from=("region_train",),
    ),
)


def _candidate_cells(grid_size: int) -> list[Cell]:
    return [(x, y) for x in range(grid_size) for y in range(grid_size) if not (x <= 1 and y <= 1)]


def heldout_goal_count(grid_size: int) -> int:
    """How many of GridNavi's goals ``heldout_test`` holds out: ``max(1, G // 4)``.

    Examples
    --------
    >>> heldout_goal_count(5), heldout_goal_count(3), heldout_goal_count(7)
    (5, 1, 11)
    """
    return max(1, len(_candidate_cells(grid_size)) // 4)


def _seeded_order(cells: Sequence[Cell], seed: int) -> list[Cell]:
    """``cells`` shuffled by ``seed``: Fisher-Yates on ``Random.random()`` (stable across
    Python versions, unlike ``Random.shuffle``'s integer draws)."""
    rng = random.Random(int(seed))
    order = list(cells)
    for i in range(len(order) - 1, 0, -1):
        j = int(rng.random() * (i + 1))
        order[i], order[j] = order[j], order[i]
    return order


def grid_goal_cells(grid_size: int, tasks: str = ALL_TASKS, split_seed: int = 0) -> list[Cell]:
    """GridNavi's goal cells ``(x, y)`` under task distribution ``tasks``, sorted.

    Parameters
    ----------
    grid_size : int
        Side ``N`` of the grid (``>= 3``).
    tasks : str
        A name of :data:`GRID_DISTRIBUTIONS`.
    split_seed : int
        Which goals ``heldout_*`` hold out (``>= 0``); unused by the others.

    Examples
    --------
    >>> grid_goal_cells(5, "heldout_test", split_seed=0)
    [(0, 2), (1, 2), (2, 4), (3, 3), (4, 0)]
    >>> grid_goal_cells(5, "region_test")[:3]
    [(3, 0), (3, 1), (3, 2)]
    >>> grid_goal_cells(5, "heldout")
    Traceback (most recent call last):
    ...
    ValueError: tasks='heldout' is not a GridNavi task distribution (declared: ['all', \
'heldout_train', 'heldout_test', 'region_train', 'region_test'])
    """
    names = [d.name for d in GRID_DISTRIBUTIONS]
    if tasks not in names:
        raise ValueError(f"tasks={tasks!r} is not a GridNavi task distribution (declared: {names})")
    if isinstance(grid_size, bool) or not isinstance(grid_size, int) or grid_size < 3:
        raise ValueError(
            f"grid_size must be an integer >= 3 (got {grid_size!r}): the 4 start cells are excluded"
        )
    if isinstance(split_seed, bool) or not isinstance(split_seed, int) or split_seed < 0:
        raise ValueError(f"split_seed must be an integer >= 0 (got {split_seed!r})")
    cells = _candidate_cells(grid_size)
    if tasks == ALL_TASKS:
        return cells
    if tasks.startswith("heldout"):
        held = set(_seeded_order(cells, split_seed)[: heldout_goal_count(grid_size)])
        keep = (lambda c: c in held) if tasks == "heldout_test" else (lambda c: c not in held)
        return [c for c in cells if keep(c)]
    right = grid_size - 2
    if tasks == "region_test":
        return [c for c in cells if c[0] >= right]
    return [c for c in cells if c[0] < right]


# -- HalfCheetahVel -------------------------------------------------------------------------------
#: Target-velocity supports: unions of half-open intervals ``[low, high)``, sampled uniformly.
VELOCITY_INTERVALS: dict[str, tuple[tuple[float, float], ...]] = {
    ALL_TASKS: ((0.0, 3.0),),
    "extrapolation_train": ((0.0, 2.0),),
    "extrapolation_test": ((2.0, 3.0),),
    "gap_train": ((0.0, 1.0), (2.0, 3.0)),
    "gap_test": ((1.0, 2.0),),
}

CHEETAH_VEL_DISTRIBUTIONS: tuple[TaskDistribution, ...] = (
    TaskDistribution(ALL_TASKS, "v* ~ U[0, 3) (the original)"),
    TaskDistribution("extrapolation_train", "v* ~ U[0, 2)"),
    TaskDistribution(
        "extrapolation_test",
        "v* ~ U[2, 3): faster than any trained target",
        disjoint_from=("extrapolation_train",),
    ),
    TaskDistribution("gap_train", "v* ~ U([0, 1) u [2, 3))"),
    TaskDistribution(
        "gap_test", "v* ~ U[1, 2): inside the training gap", disjoint_from=("gap_train",)
    ),
)


def interval_length(intervals: Sequence[tuple[float, float]]) -> float:
    """Total length of a union of disjoint intervals.

    Examples
    --------
    >>> interval_length(VELOCITY_INTERVALS["gap_train"])
    2.0
    """
    return float(sum(high - low for low, high in intervals))
