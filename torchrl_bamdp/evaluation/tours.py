"""Where a GridNavi policy walks: its greedy tour per goal, next to the Bayes-optimal one.

A per-episode mean return says *that* a policy is below the Bayes-optimal one, not *why*. On
GridNavi the reason is visible in the paths: a policy can rule out as many goal cells in
episode 1 as the Bayes-optimal policy does (the same episode-1 return) yet leave a set of cells
that episode 2 cannot sweep at their shortest distances. :func:`gridnavi_tours` runs one task
per goal and returns every step's cell; :func:`format_tours` prints them with the cells left
unvisited after episode 1.

Run: ``python -m torchrl_bamdp.trainers.runs tours <run_dir> [--episodes 2]`` prints a trained
run's tours and the exact Bayes-optimal policy's on the same tasks (opening the run needs a
``Trainer``, so that command lives in :mod:`torchrl_bamdp.trainers.runs`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tensordict import TensorDictBase
from torchrl.envs import EnvBase, ExplorationType, set_exploration_type

from torchrl_bamdp.envs.gridworld import GRID_MOVES, candidate_goal_cells, grid_move
from torchrl_bamdp.evaluation.meta_test import per_episode_returns
from torchrl_bamdp.transforms.exact_belief import find_grid_navi

__all__ = ["GoalTour", "format_tours", "gridnavi_tours"]

Cell = tuple[int, int]


@dataclass(frozen=True)
class GoalTour:
    """One task's walk: the cell after every step of every inner episode.

    Attributes
    ----------
    goal : tuple of int
        The task's goal cell ``(x, y)``.
    paths : tuple of tuple of cells
        ``paths[k][t]``: the cell reached by step ``t + 1`` of inner episode ``k`` (the true
        cell, also on an episode's last step, before the env puts the agent back at the start).
    returns : tuple of float
        Undiscounted return of each inner episode.

    Examples
    --------
    >>> tour = GoalTour((2, 0), (((1, 0), (2, 0)), ((0, 1), (0, 2))), (0.9, -0.2))
    >>> tour.found_at
    (2, None)
    >>> sorted(tour.unvisited_after(1, grid_size=3))
    [(0, 2), (1, 2), (2, 1), (2, 2)]
    """

    goal: Cell
    paths: tuple[tuple[Cell, ...], ...]
    returns: tuple[float, ...]

    @property
    def found_at(self) -> tuple[int | None, ...]:
        """Per inner episode, the first step (1-based) on the goal, or ``None``."""
        return tuple(
            next((t + 1 for t, cell in enumerate(path) if cell == self.goal), None)
            for path in self.paths
        )

    def unvisited_after(self, episodes: int, grid_size: int) -> set[Cell]:
        """Candidate goal cells not stepped on in the first ``episodes`` inner episodes."""
        visited = {cell for path in self.paths[:episodes] for cell in path}
        candidates = {tuple(c) for c in candidate_goal_cells(grid_size).tolist()}
        return candidates - visited


def gridnavi_tours(
    env: EnvBase,
    policy: Callable[[TensorDictBase], TensorDictBase],
    seed: int = 0,
    deterministic: bool = True,
) -> list[GoalTour]:
    """Run one BAMDP per batch element of a (transformed) GridNavi env and record the cells.

    The cells are recomputed from the observed start cell and the action of every step with
    the env's own move (:func:`~torchrl_bamdp.envs.gridworld.grid_move`), so an episode's last
    step shows where the agent went, not the start cell it is put back on.

    Parameters
    ----------
    env : EnvBase
        A batched GridNavi BAMDP with the transforms that build ``policy``'s input; use
        ``stratified=True`` to get every goal equally often.
    policy : callable
        A TensorDict policy.
    seed : int
        Seed of the env's tasks.
    deterministic : bool
        Greedy (mode) actions if ``True``.

    Examples
    --------
    The exact Bayes-optimal policy's tours on the 21 goals:

    >>> from torchrl.envs import TransformedEnv
    >>> from torchrl_bamdp.envs import make_env
    >>> from torchrl_bamdp.policies import BayesOptimalPolicy
    >>> from torchrl_bamdp.transforms import exact_belief_transforms
    >>> env = TransformedEnv(make_env(num_envs=21, episodes_per_task=2, stratified=True),
    ...                      exact_belief_transforms(grid_size=5))
    >>> tours = gridnavi_tours(env, BayesOptimalPolicy.from_env(env))
    >>> len(tours), len(tours[0].paths), len(tours[0].paths[0])
    (21, 2, 15)
    """
    grid = find_grid_navi(env)
    # TransformedEnv forwards these to the BAMDPEnv inside, however deeply it is wrapped.
    episode_length, episodes = env.episode_length, env.episodes_per_task
    env.set_seed(seed)
    exploration = ExplorationType.DETERMINISTIC if deterministic else ExplorationType.RANDOM
    with set_exploration_type(exploration), torch.no_grad():
        rollout = env.rollout(episodes * episode_length, policy, break_when_any_done=False)
    moves = torch.tensor(GRID_MOVES)
    # The cells the policy acted in (read back from the frames with pixel observations).
    start = grid.positions_of(rollout.get("observation")).long().cpu()
    action = rollout.get("action").cpu()
    if action.ndim == start.ndim:  # one-hot actions
        action = action.argmax(-1)
    cells = grid_move(start, action, moves, grid.grid_size)
    returns = per_episode_returns(rollout, episodes).cpu()
    goals = rollout.get("task").long().cpu()[:, 0]
    tours = []
    for i in range(rollout.shape[0]):
        paths = tuple(
            tuple(
                tuple(c) for c in cells[i, k * episode_length : (k + 1) * episode_length].tolist()
            )
            for k in range(episodes)
        )
        tours.append(GoalTour(tuple(goals[i].tolist()), paths, tuple(returns[i].tolist())))
    return tours


def _cells(cells: Sequence[Cell] | set[Cell]) -> str:
    return " ".join(f"{x}{y}" for x, y in cells)


def format_tours(tours: Sequence[GoalTour], grid_size: int, title: str = "") -> str:
    """A text table: per goal, the step it was found in each episode, the path of episode 1 and
    the cells left unvisited after it (cells written ``xy``).

    Examples
    --------
    >>> tour = GoalTour((2, 0), (((1, 0), (2, 0)), ((1, 0), (2, 0))), (0.9, 0.9))
    >>> print(format_tours([tour], grid_size=3, title="demo"))
    demo
    goal | found at step (per episode) | return ep1, ep2 | episode 1 path | left after episode 1
    20 | 2 2 | 0.90, 0.90 | 10 20 | 02 12 21 22
    mean return per episode: 0.900 0.900
    """
    lines = [title] if title else []
    lines.append(
        "goal | found at step (per episode) | return ep1, ep2 | episode 1 path | "
        "left after episode 1"
    )
    for tour in sorted(tours, key=lambda t: t.goal):
        found = " ".join("-" if f is None else str(f) for f in tour.found_at)
        returns = ", ".join(f"{r:.2f}" for r in tour.returns[:2])
        left = sorted(tour.unvisited_after(1, grid_size))
        lines.append(
            f"{_cells([tour.goal])} | {found} | {returns} | {_cells(tour.paths[0])} | "
            f"{_cells(left)}"
        )
    episodes = len(tours[0].returns) if tours else 0
    means = [sum(t.returns[k] for t in tours) / len(tours) for k in range(episodes)]
    lines.append("mean return per episode: " + " ".join(f"{m:.3f}" for m in means))
    return "\n".join(lines)
