"""Exact Bayes-optimal policy and returns for GridNavi, by dynamic programming.

The problem is the VariBAD gridworld: an ``N x N`` grid, the agent starts every episode at
``(0, 0)``, the goal is uniform over every cell except the four nearest the start, actions are
noop/up/right/down/left (a move off the grid stays put), and each step gives ``goal_reward`` when
the new position is the goal and ``step_penalty`` otherwise. A task lasts ``episodes_per_task``
episodes of ``episode_length`` steps with the same goal; the agent remembers everything it saw.

The agent learns about the goal only by stepping on cells, so before it finds the goal its
belief is uniform over the candidate cells it has not stepped on yet (``remaining``), and the
only thing it can observe is "not the goal". Its behaviour up to the moment it finds the goal is
therefore one fixed plan, and after that it is deterministic (stay on the goal, and walk a
shortest path to it in later episodes). That turns the Bayes-adaptive MDP into a deterministic
search over states ``(episodes left, steps left, position, remaining)``.

Exact integer scores
--------------------
With ``G = goal_reward > P = step_penalty`` every goal ``g`` contributes to the undiscounted task
return ``episodes * length * P`` plus ``(G - P)`` times an integer *score*: finding ``g`` at the
``t``-th of ``T`` steps of an episode with ``k`` episodes after it scores
``(T - t + 1) + k * a(g)``, where ``a(g) = max(0, L - d(g) + 1)`` and ``d(g)`` is the Manhattan
distance of ``g`` from the start (an episode that walks straight to a known goal scores
``a(g)``). A goal never found scores 0. The search maximises the sum of the scores of the goals
in ``remaining`` in exact integers, so ties are exact and are broken by the lowest action
index.

The search is a memoised depth-first branch and bound: a state's value depends only on
``remaining`` (not on how the agent got there), the cells out of reach in the last episode are
dropped from the key, a single remaining cell is a known goal, and two admissible upper bounds
prune the rest. The default problem (``5 x 5``, 15 steps, 4 episodes) solves in well under a
second.

Why the solver lives here, with the policy
------------------------------------------
:class:`BayesOptimalPolicy` acts by asking :class:`BayesOptimalGridNavi` for the action of every
state, so the policy needs the solver; the evaluation needs only the solver's expected returns
(the reference line of tables and figures, ``evaluation.report.bayes_optimal_returns``) and the
policy (the reference tours of ``evaluation.tours``). Kept in ``evaluation/``, the solver would
make ``policies`` import ``evaluation`` while ``evaluation`` imports ``policies``; here both
depend one way, ``trainers -> evaluation -> policies -> transforms -> envs``, and the DP is one
concept in one place. ``python -m torchrl_bamdp.policies`` prints the values (:func:`main`).
"""

from __future__ import annotations

import argparse
import math
import operator
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey
from torchrl.envs import EnvBase

from torchrl_bamdp.envs.bamdp import BAMDPEnv
from torchrl_bamdp.task_distributions import GRID_DISTRIBUTIONS, grid_goal_cells
from torchrl_bamdp.transforms.exact_belief import BELIEF_PROBS, find_grid_navi

__all__ = [
    "ACTION_MOVES",
    "BayesOptimalGridNavi",
    "BayesOptimalPolicy",
    "GridNaviSpec",
    "main",
]

# Action index -> (dx, dy): noop, up, right, down, left (as in ``torchrl_bamdp.envs.gridworld``).
ACTION_MOVES: tuple[tuple[int, int], ...] = ((0, 0), (0, 1), (1, 0), (0, -1), (-1, 0))

Cell = tuple[int, int]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class GridNaviSpec:
    """The GridNavi problem that :class:`BayesOptimalGridNavi` solves.

    Parameters
    ----------
    grid_size : int
        Side ``N`` of the square grid, ``>= 3`` (the four cells nearest the start are never the
        goal, so a smaller grid has no goal cell).
    episode_length : int
        Steps ``L`` per episode, ``>= 1``.
    episodes_per_task : int
        Episodes ``K`` per task (same goal, the agent is put back at the start), ``>= 1``.
    goal_reward : float
        Reward of a step whose new position is the goal; must exceed ``step_penalty``.
    step_penalty : float
        Reward of every other step.
    goals : tuple of (int, int), optional
        The support of the goal prior (uniform over it), a subset of the candidate goals: a
        task distribution's goals (e.g. ``grid_goal_cells(5, "heldout_test")`` of
        :mod:`torchrl_bamdp.task_distributions`). ``None``: every candidate goal.

    Examples
    --------
    >>> spec = GridNaviSpec()
    >>> len(spec.candidate_goals())
    21
    >>> GridNaviSpec(grid_size=3).candidate_goals()
    [(0, 2), (1, 2), (2, 0), (2, 1), (2, 2)]
    >>> GridNaviSpec(grid_size=3, goals=((2, 2), (0, 2))).candidate_goals()
    [(0, 2), (2, 2)]
    """

    grid_size: int = 5
    episode_length: int = 15
    episodes_per_task: int = 4
    goal_reward: float = 1.0
    step_penalty: float = -0.1
    goals: tuple[Cell, ...] | None = None

    def __post_init__(self) -> None:
        if not _is_int(self.grid_size) or self.grid_size < 3:
            raise ValueError(
                f"GridNaviSpec.grid_size must be an integer >= 3 (got {self.grid_size!r}): the "
                "four cells nearest the start are never the goal"
            )
        if not _is_int(self.episode_length) or self.episode_length < 1:
            raise ValueError(
                f"GridNaviSpec.episode_length must be an integer >= 1 (got {self.episode_length!r})"
            )
        if not _is_int(self.episodes_per_task) or self.episodes_per_task < 1:
            raise ValueError(
                "GridNaviSpec.episodes_per_task must be an integer >= 1 "
                f"(got {self.episodes_per_task!r})"
            )
        if not _is_real(self.step_penalty):
            raise ValueError(
                f"GridNaviSpec.step_penalty must be a finite number (got {self.step_penalty!r})"
            )
        if not _is_real(self.goal_reward) or self.goal_reward <= self.step_penalty:
            raise ValueError(
                "GridNaviSpec.goal_reward must be a finite number greater than step_penalty "
                f"(got goal_reward={self.goal_reward!r}, step_penalty={self.step_penalty!r})"
            )
        if self.goals is not None:
            try:
                goals = tuple(sorted({(int(x), int(y)) for x, y in self.goals}))
            except (TypeError, ValueError):
                goals = ()
            n = self.grid_size
            allowed = {(x, y) for x in range(n) for y in range(n) if not (x <= 1 and y <= 1)}
            if not goals or not set(goals) <= allowed or len(goals) != len(tuple(self.goals)):
                raise ValueError(
                    "GridNaviSpec.goals must be a non-empty tuple of distinct cells (x, y) of the "
                    f"{n}x{n} grid other than the four nearest the start (got {self.goals!r})"
                )
            object.__setattr__(self, "goals", goals)  # frozen: normalised once, sorted

    def candidate_goals(self) -> list[Cell]:
        """Return the possible goal cells, sorted: every cell but the four nearest the start.

        Raises
        ------
        ValueError
            If ``grid_size < 3`` (only reachable by bypassing ``__post_init__``).

        Examples
        --------
        >>> (0, 0) in GridNaviSpec().candidate_goals(), (2, 0) in GridNaviSpec().candidate_goals()
        (False, True)
        """
        if self.grid_size < 3:
            raise ValueError(f"GridNaviSpec.grid_size must be >= 3 (got {self.grid_size})")
        if self.goals is not None:
            return list(self.goals)
        n = self.grid_size
        return [(x, y) for x in range(n) for y in range(n) if not (x <= 1 and y <= 1)]


@contextmanager
def _recursion_headroom(depth: int) -> Iterator[None]:
    """Temporarily allow ``depth`` more Python frames (the search recurses once per step)."""
    old = sys.getrecursionlimit()
    needed = depth + 200
    if needed > old:
        sys.setrecursionlimit(needed)
    try:
        yield
    finally:
        if needed > old:
            sys.setrecursionlimit(old)


class BayesOptimalGridNavi:
    """Exact Bayes-optimal policy of GridNavi and its expected per-episode returns.

    States of the search are ``(k, s, p, R)``: ``k`` episodes after the current one, ``s``
    steps left in it, position ``p`` (flat index ``x * N + y``) and ``R``, the bitmask of the
    candidate goals not ruled out yet (the goal not found yet). Values are integer scores, see
    the module docstring. Everything is solved lazily and memoised on the instance.

    Parameters
    ----------
    spec : GridNaviSpec
        The problem; defaults to the VariBAD setting (``5 x 5``, 15 steps, 4 episodes).

    Examples
    --------
    >>> solver = BayesOptimalGridNavi(GridNaviSpec(grid_size=3, episode_length=2,
    ...                                            episodes_per_task=2))
    >>> [round(r, 6) for r in solver.expected_returns()]
    [0.02, 0.24]
    >>> solver.act((0, 0), step_in_episode=0, episode=0, remaining=None, goal_known=None)
    1
    """

    def __init__(self, spec: GridNaviSpec = GridNaviSpec()) -> None:  # noqa: B008
        self.spec = spec
        n = spec.grid_size
        self._n = n
        self._length = spec.episode_length
        self._episodes = spec.episodes_per_task
        self._cells: list[Cell] = [(x, y) for x in range(n) for y in range(n)]
        self._index = {cell: i for i, cell in enumerate(self._cells)}
        self._candidates = spec.candidate_goals()
        self._candidate_mask = 0
        for cell in self._candidates:
            self._candidate_mask |= 1 << self._index[cell]
        self._next = [
            [
                self._index[(min(n - 1, max(0, x + dx)), min(n - 1, max(0, y + dy)))]
                for dx, dy in ACTION_MOVES
            ]
            for x, y in self._cells
        ]
        self._dist = [[abs(x - u) + abs(y - v) for u, v in self._cells] for x, y in self._cells]
        start_dist = self._dist[0]
        # a(g): score of an episode that walks straight to the known goal g from the start.
        self._walk_score = [max(0, self._length - d + 1) for d in start_dist]
        # _ball[p][s]: cells within s steps of p (the only ones the last episode can reach).
        self._ball = [
            [sum(1 << j for j, d in enumerate(row) if d <= s) for s in range(self._length + 1)]
            for row in self._dist
        ]
        self._exact: dict[tuple[int, int, int, int], int] = {}
        self._upper: dict[tuple[int, int, int, int], int] = {}
        self._hits: dict[Cell, tuple[int, int]] | None = None
        self._expected: list[Fraction] | None = None

    # -- public API --------------------------------------------------------------------------
    def expected_returns(self) -> list[float]:
        """Expected return of each episode ``1..K`` under the Bayes-optimal policy.

        The expectation is exact over the uniform goal prior (over ``spec.goals``, all the
        candidates by default); the policy maximises the expected total return of the whole
        task (not of each episode alone).

        Examples
        --------
        >>> solver = BayesOptimalGridNavi(GridNaviSpec(grid_size=3, episode_length=1,
        ...                                            episodes_per_task=1))
        >>> solver.expected_returns()
        [-0.1]
        """
        return [float(value) for value in self.expected_returns_exact()]

    def expected_returns_exact(self) -> list[Fraction]:
        """Like :meth:`expected_returns`, as exact fractions of the (binary) float rewards.

        Examples
        --------
        >>> spec = GridNaviSpec(grid_size=3, episode_length=1, episodes_per_task=1,
        ...                     goal_reward=1.0, step_penalty=-0.5)
        >>> BayesOptimalGridNavi(spec).expected_returns_exact()
        [Fraction(-1, 2)]
        """
        if self._expected is None:
            hits = self._plan_hits()
            goal, penalty = Fraction(self.spec.goal_reward), Fraction(self.spec.step_penalty)
            length = self._length
            totals = [Fraction(0)] * self._episodes
            for cell in self._candidates:
                walk = length * penalty + self._walk_score[self._index[cell]] * (goal - penalty)
                found = hits.get(cell)
                for episode in range(self._episodes):
                    if found is None or episode < found[0]:
                        totals[episode] += length * penalty
                    elif episode == found[0]:
                        step = found[1]
                        totals[episode] += (step - 1) * penalty + (length - step + 1) * goal
                    else:
                        totals[episode] += walk
            self._expected = [total / len(self._candidates) for total in totals]
        return list(self._expected)

    def total_expected_return(self) -> float:
        """Expected undiscounted return of the whole task (sum over its episodes).

        Examples
        --------
        >>> solver = BayesOptimalGridNavi(GridNaviSpec(grid_size=3, episode_length=2,
        ...                                            episodes_per_task=2))
        >>> round(solver.total_expected_return(), 6)
        0.26
        """
        return float(sum(self.expected_returns_exact()))

    def known_goal_return(self) -> float:
        """Expected return of one episode that walks straight to a known goal.

        Averaged over the uniform goal prior: ``(L - d + 1) * goal_reward + (d - 1) *
        step_penalty`` for a goal at distance ``d <= L`` from the start, ``L * step_penalty``
        for a goal out of reach.

        Examples
        --------
        >>> round(BayesOptimalGridNavi().known_goal_return(), 6)
        11.071429
        """
        goal, penalty = Fraction(self.spec.goal_reward), Fraction(self.spec.step_penalty)
        total = sum(
            self._length * penalty + self._walk_score[self._index[cell]] * (goal - penalty)
            for cell in self._candidates
        )
        return float(total / len(self._candidates))

    def act(
        self,
        position: Cell,
        step_in_episode: int,
        episode: int,
        remaining: frozenset[Cell] | None,
        goal_known: Cell | None,
    ) -> int:
        """Return the Bayes-optimal action (lowest index among the optimal ones).

        Parameters
        ----------
        position : tuple[int, int]
            Current cell ``(x, y)``.
        step_in_episode : int
            Steps already taken in this episode, ``0 <= step_in_episode < episode_length``.
        episode : int
            Index of the current episode in the task, ``0 <= episode < episodes_per_task``.
        remaining : frozenset of tuple[int, int] or None
            Candidate goals not ruled out yet (``None``: all of them). Cells that are not
            candidate goals, and the current position, are ignored. Unused if ``goal_known``.
        goal_known : tuple[int, int] or None
            The goal, once the agent has stepped on it.

        Returns
        -------
        int
            Action index: 0 noop, 1 up, 2 right, 3 down, 4 left.

        Examples
        --------
        >>> solver = BayesOptimalGridNavi()
        >>> solver.act((0, 0), 0, 2, remaining=None, goal_known=(3, 0))  # walk right to it
        2
        >>> solver.act((3, 0), 4, 2, remaining=None, goal_known=(3, 0))  # stay on it
        0
        """
        pos = self._check_cell(position, "position")
        if not _is_int(step_in_episode) or not 0 <= step_in_episode < self._length:
            raise ValueError(
                f"step_in_episode must be an integer in [0, {self._length - 1}] "
                f"(got {step_in_episode!r})"
            )
        if not _is_int(episode) or not 0 <= episode < self._episodes:
            raise ValueError(
                f"episode must be an integer in [0, {self._episodes - 1}] (got {episode!r})"
            )
        steps_left = self._length - step_in_episode
        if goal_known is not None:
            return self._known_goal_action(steps_left, pos, self._check_cell(goal_known, "goal"))
        if remaining is None:
            mask = self._candidate_mask
        else:
            mask = 0
            for cell in remaining:
                mask |= 1 << self._check_cell(cell, "remaining cell")
            mask &= self._candidate_mask
        mask &= ~(1 << pos)
        if not mask:
            raise ValueError(
                "remaining rules out every candidate goal but goal_known is None: the belief is "
                "empty"
            )
        with _recursion_headroom(self._length * self._episodes):
            return self._belief_action(self._episodes - 1 - episode, steps_left, pos, mask)

    def simulate(self, goal: Cell) -> list[float]:
        """Run the policy of :meth:`act` against a fixed goal; return each episode's return.

        The dynamics and rewards are the real GridNavi ones; the belief is updated from what the
        agent observes (a cell stepped on without the goal reward is ruled out).

        Examples
        --------
        >>> solver = BayesOptimalGridNavi(GridNaviSpec(grid_size=3, episode_length=2,
        ...                                            episodes_per_task=2))
        >>> [round(r, 6) for r in solver.simulate((2, 0))]
        [-0.2, 0.9]
        """
        goal_cell = self._check_cell(goal, "goal")
        if not self._candidate_mask >> goal_cell & 1:
            raise ValueError(f"goal {goal!r} is not a candidate goal of {self.spec}")
        target = self._cells[goal_cell]
        remaining = set(self._candidates)
        known: Cell | None = None
        returns = []
        for episode in range(self._episodes):
            x, y = 0, 0
            rewards = []
            for step in range(self._length):
                action = self.act((x, y), step, episode, frozenset(remaining), known)
                dx, dy = ACTION_MOVES[action]
                x, y = min(self._n - 1, max(0, x + dx)), min(self._n - 1, max(0, y + dy))
                if (x, y) == target:
                    rewards.append(self.spec.goal_reward)
                    known = target
                else:
                    rewards.append(self.spec.step_penalty)
                    remaining.discard((x, y))
            returns.append(math.fsum(rewards))
        return returns

    # -- search ------------------------------------------------------------------------------
    def _check_cell(self, cell: object, name: str) -> int:
        """Flat index of a cell given as any pair of integers (ints, NumPy or torch scalars)."""
        try:
            x, y = cell  # type: ignore[misc]
            index = self._index.get((operator.index(x), operator.index(y)))
        except (TypeError, ValueError):
            index = None
        if index is None:
            raise ValueError(
                f"{name} must be a cell (x, y) with 0 <= x, y < {self._n} (got {cell!r})"
            )
        return index

    def _known_goal_action(self, steps_left: int, pos: int, goal: int) -> int:
        """Lowest-index action maximising the known-goal score (1 per step on the goal)."""

        def score(s: int, p: int) -> int:
            if p == goal:
                return s
            d = self._dist[p][goal]
            return s - d + 1 if d <= s else 0

        values = [(q == goal) + score(steps_left - 1, q) for q in self._next[pos]]
        return values.index(max(values))

    def _step_score(self, k: int, s: int, q: int, remaining: int) -> tuple[int, int]:
        """Score of moving onto cell ``q`` (with ``s`` steps left) and the remaining set after."""
        bit = 1 << q
        if remaining & bit:
            return s + k * self._walk_score[q], remaining ^ bit
        return 0, remaining

    def _belief_action(self, k: int, s: int, pos: int, remaining: int) -> int:
        """Lowest-index action whose value equals the optimal value of the state."""
        best = self._value(k, s, pos, remaining, -1)
        for action, q in enumerate(self._next[pos]):
            reward, rest = self._step_score(k, s, q, remaining)
            if reward + self._value(k, s - 1, q, rest, best - reward - 1) >= best:
                return action
        raise AssertionError("no action attains the optimal value")  # pragma: no cover

    def _plan_hits(self) -> dict[Cell, tuple[int, int]]:
        """Follow the optimal plan while the goal is not found: cell -> (episode, step 1..L)."""
        if self._hits is None:
            hits: dict[Cell, tuple[int, int]] = {}
            remaining = self._candidate_mask
            with _recursion_headroom(self._length * self._episodes):
                for episode in range(self._episodes):
                    pos = 0
                    k = self._episodes - 1 - episode
                    for step in range(1, self._length + 1):
                        if not remaining:
                            break
                        s = self._length - step + 1
                        q = self._next[pos][self._belief_action(k, s, pos, remaining)]
                        if remaining >> q & 1:
                            hits[self._cells[q]] = (episode, step)
                            remaining ^= 1 << q
                        pos = q
            self._hits = hits
        return self._hits

    def _normalise(self, k: int, s: int, p: int, remaining: int) -> tuple[int, int, int, int]:
        """Roll over to the next episode when ``s == 0`` and drop cells the rest cannot reach."""
        if s == 0 and k > 0:
            k, s, p = k - 1, self._length, 0
        if k == 0:
            remaining &= self._ball[p][s]
        return k, s, p, remaining

    def _leaf(self, k: int, s: int, p: int, remaining: int) -> int | None:
        """Value of a state with at most one remaining cell (a known goal), else ``None``."""
        if not remaining:
            return 0
        if remaining & (remaining - 1):
            return None
        g = remaining.bit_length() - 1
        d = self._dist[p][g]
        later = k * self._walk_score[g]
        return s - d + 1 + later if d <= s else later

    def _value(self, k: int, s: int, p: int, remaining: int, alpha: int) -> int:
        """Optimal score of a state if it exceeds ``alpha``; otherwise some bound ``<= alpha``.

        A memoised fail-low branch and bound: exact values go to ``_exact``, proven upper bounds
        to ``_upper``. Scores are ``>= 0``, so ``alpha = -1`` asks for the exact value.
        """
        k, s, p, remaining = self._normalise(k, s, p, remaining)
        leaf = self._leaf(k, s, p, remaining)
        if leaf is not None:
            return leaf
        key = (k, s, p, remaining)
        exact = self._exact.get(key)
        if exact is not None:
            return exact
        upper = self._upper_bound(key)
        if upper <= alpha:
            return upper
        children = []
        for q in self._next[p]:
            reward, rest = self._step_score(k, s, q, remaining)
            children.append((reward + self._child_bound(k, s - 1, q, rest), reward, q, rest))
        children.sort(key=lambda child: -child[0])  # stable: most promising first
        best = -1
        for bound, reward, q, rest in children:
            threshold = max(alpha, best)
            if bound <= threshold:
                break
            value = reward + self._value(k, s - 1, q, rest, threshold - reward)
            best = max(best, value)
        if best > alpha:
            self._exact[key] = best
            return best
        self._upper[key] = min(upper, alpha)
        return min(upper, alpha)

    def _child_bound(self, k: int, s: int, p: int, remaining: int) -> int:
        k, s, p, remaining = self._normalise(k, s, p, remaining)
        leaf = self._leaf(k, s, p, remaining)
        if leaf is not None:
            return leaf
        key = (k, s, p, remaining)
        exact = self._exact.get(key)
        return exact if exact is not None else self._upper_bound(key)

    def _upper_bound(self, key: tuple[int, int, int, int]) -> int:
        """Admissible (never too low) bound on the score of a state, memoised.

        Both bounds use the greedy time slots: in ``T`` steps from a cell, the ``i``-th newly
        found goal is found no earlier than ``max(t_{i-1} + 1, d_(i))``, ``d_(i)`` the ``i``-th
        smallest distance to a remaining cell.

        1. A goal found later than the current episode scores at most ``k * a(g)`` (it is found
           at a step ``t >= d(g)``, so its ``L - t + 1 <= a(g)``), and one found now scores
           ``k * a(g)`` plus its time slot: ``sum_R k * a(g) + sum(slots now)``.
        2. Time and ``a`` parts apart: the best ``|R|`` slots among this episode's slots and
           ``k`` copies of a fresh episode's slots, plus the largest ``a(g)`` weighted ``k``,
           ``k - 1``, ... in the order of the episodes' slot counts.
        """
        cached = self._upper.get(key)
        if cached is not None:
            return cached
        k, s, p, remaining = key
        goals = []
        rest = remaining
        while rest:
            low = rest & -rest
            goals.append(low.bit_length() - 1)
            rest ^= low
        now = _greedy_slots(sorted(self._dist[p][g] for g in goals), s)
        walk = sorted((self._walk_score[g] for g in goals), reverse=True)
        bound = sum(now) + k * sum(walk)
        if k:
            later = _greedy_slots(sorted(self._dist[0][g] for g in goals), self._length)
            slots = sorted(now + later * k, reverse=True)[: len(goals)]
            weighted = 0
            rank = 0
            for episode, count in enumerate([len(now)] + [len(later)] * k):
                weight = k - episode
                for value in walk[rank : rank + count]:
                    weighted += weight * value
                rank += count
            bound = min(bound, sum(slots) + weighted)
        self._upper[key] = bound
        return bound


class BayesOptimalPolicy(TensorDictModuleBase):
    """The exact Bayes-optimal GridNavi policy as a TorchRL policy (``policy(td)``).

    It reads the position, the step within the inner episode, the inner-episode index and the
    exact goal posterior written by
    :class:`~torchrl_bamdp.transforms.exact_belief.ExactGridBelief`, and writes the action of
    :meth:`BayesOptimalGridNavi.act`: the goals with a positive probability are the remaining
    ones, and a single remaining goal is a known goal. The env must therefore carry
    ``ExactGridBelief`` (e.g. ``TransformedEnv(env, exact_belief_transforms(...))``) built for
    the same grid. Any batch shape works; actions are cached per (position, step, episode,
    posterior support), so a large batch of tasks costs one solver call per distinct state.

    Parameters
    ----------
    spec : GridNaviSpec
        The problem (grid size, episode length, episodes per task, rewards) of the env; see
        :meth:`from_env`. Kept as :attr:`problem` (TorchRL reserves ``spec`` on modules for
        output specs); the solver is :attr:`solver`.
    observation_key, step_key, episode_key, probs_key : NestedKey
        Where to read the position (floats ``[*batch, 2]``), the steps already taken in the
        inner episode (``[*batch, 1]``), the inner-episode index (``[*batch, 1]``) and the
        posterior (``[*batch, N*N]``).
    action_key : NestedKey
        Where to write the action (long ``[*batch]``: 0 noop, 1 up, 2 right, 3 down, 4 left).

    Notes
    -----
    A state after the last step of a task (``step >= episode_length`` or
    ``episode >= episodes_per_task``; a policy never acts there in a rollout or a collector)
    gets the no-op action.

    Examples
    --------
    >>> from torchrl.envs import TransformedEnv
    >>> from torchrl_bamdp.envs import make_env
    >>> from torchrl_bamdp.evaluation.meta_test import per_episode_returns
    >>> from torchrl_bamdp.transforms import exact_belief_transforms
    >>> base = make_env(num_envs=5, grid_size=3, episode_length=2, episodes_per_task=2,
    ...                 stratified=True)
    >>> env = TransformedEnv(base, exact_belief_transforms(grid_size=3))
    >>> policy = BayesOptimalPolicy.from_env(env)
    >>> rollout = env.rollout(4, policy)
    >>> [round(r, 4) for r in per_episode_returns(rollout, 2).mean(0).tolist()]
    [0.02, 0.24]
    >>> [round(r, 4) for r in policy.solver.expected_returns()]
    [0.02, 0.24]
    """

    def __init__(
        self,
        spec: GridNaviSpec = GridNaviSpec(),  # noqa: B008
        observation_key: NestedKey = "observation",
        step_key: NestedKey = "step_in_episode",
        episode_key: NestedKey = "episode",
        probs_key: NestedKey = BELIEF_PROBS,
        action_key: NestedKey = "action",
    ) -> None:
        super().__init__()
        self.in_keys = [observation_key, step_key, episode_key, probs_key]
        self.out_keys = [action_key]
        self.observation_key = observation_key
        self.step_key = step_key
        self.episode_key = episode_key
        self.probs_key = probs_key
        self.action_key = action_key
        self.problem = spec
        self.solver = BayesOptimalGridNavi(spec)
        n = spec.grid_size
        self._cells: list[Cell] = [(x, y) for x in range(n) for y in range(n)]
        self._candidates = frozenset(spec.candidate_goals())
        self._actions: dict[tuple[int, ...], int] = {}

    @classmethod
    def from_env(cls, env: EnvBase, **keys: NestedKey) -> BayesOptimalPolicy:
        """Build the policy for the GridNavi BAMDP inside ``env`` (a transformed ``BAMDPEnv``).

        Grid size, rewards and the goal prior (its task distribution's goals) come from its
        :class:`~torchrl_bamdp.envs.GridNaviEnv`, episode length and episodes per task from its
        :class:`~torchrl_bamdp.envs.BAMDPEnv`; ``keys`` are passed to the constructor.

        Examples
        --------
        >>> from torchrl_bamdp.envs import make_env
        >>> spec = BayesOptimalPolicy.from_env(make_env(num_envs=2, episodes_per_task=6)).problem
        >>> spec.grid_size, spec.episode_length, spec.episodes_per_task
        (5, 15, 6)
        """
        bamdp = env
        for _ in range(64):
            if isinstance(bamdp, BAMDPEnv) or not hasattr(bamdp, "base_env"):
                break
            bamdp = bamdp.base_env
        if not isinstance(bamdp, BAMDPEnv):
            raise TypeError(
                f"{cls.__name__}.from_env: no BAMDPEnv inside {type(env).__name__} (the episode "
                "length and the number of episodes per task come from it)"
            )
        grid = find_grid_navi(bamdp)
        goals = tuple(tuple(cell) for cell in grid.candidate_goals.tolist())
        spec = GridNaviSpec(
            grid_size=grid.grid_size,
            episode_length=bamdp.episode_length,
            episodes_per_task=bamdp.episodes_per_task,
            goal_reward=grid.goal_reward,
            step_penalty=grid.step_penalty,
            # The env's task distribution is the prior (None: every candidate, the default).
            goals=None
            if len(goals) == len(GridNaviSpec(grid.grid_size).candidate_goals())
            else goals,
        )
        return cls(spec, **keys)

    def _read(self, tensordict: TensorDictBase, key: NestedKey, what: str) -> torch.Tensor:
        value = tensordict.get(key, None)
        if value is None:
            hint = (
                " (written by ExactGridBelief: wrap the env with exact_belief_transforms())"
                if key == self.probs_key
                else ""
            )
            raise KeyError(
                f"{type(self).__name__}: no {what} entry {key!r} in the tensordict{hint}"
            )
        return value

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write the Bayes-optimal action of every env of the batch into ``tensordict``."""
        position = self._read(tensordict, self.observation_key, "position")
        step = self._read(tensordict, self.step_key, "step-in-episode")
        episode = self._read(tensordict, self.episode_key, "episode")
        probs = self._read(tensordict, self.probs_key, "goal posterior")
        num_cells = self.problem.grid_size**2
        batch = position.shape[:-1]
        rows = batch.numel()
        if probs.shape[-1] != num_cells or probs.numel() != rows * num_cells:
            raise ValueError(
                f"{type(self).__name__}: {self.probs_key!r} has shape {tuple(probs.shape)}, "
                f"expected [*batch, {num_cells}] for the {self.problem.grid_size}x"
                f"{self.problem.grid_size} grid of {self.problem}"
            )
        for name, value in (("step-in-episode", step), ("episode", episode)):
            if value.numel() != rows:
                raise ValueError(
                    f"{type(self).__name__}: {name} entry of shape {tuple(value.shape)} does not "
                    f"match the batch shape {tuple(batch)}"
                )
        # One row per env: (x, y, step, episode, support of the posterior); distinct rows only.
        states = torch.cat(
            [
                position.detach().reshape(rows, 2).round().long().cpu(),
                step.detach().reshape(rows, 1).long().cpu(),
                episode.detach().reshape(rows, 1).long().cpu(),
                (probs.detach().reshape(rows, num_cells) > 0).long().cpu(),
            ],
            dim=-1,
        )
        unique, inverse = torch.unique(states, dim=0, return_inverse=True)
        actions = torch.tensor(
            [self._action(tuple(row)) for row in unique.tolist()], dtype=torch.long
        )
        action = actions[inverse].reshape(batch).to(position.device)
        tensordict.set(self.action_key, action)
        return tensordict

    def _action(self, state: tuple[int, ...]) -> int:
        """The (cached) Bayes-optimal action of one ``(x, y, step, episode, *support)`` row."""
        action = self._actions.get(state)
        if action is not None:
            return action
        x, y, step, episode, *support = state
        spec = self.problem
        if step >= spec.episode_length or episode >= spec.episodes_per_task:
            action = 0  # after the last step of the task: nothing left to decide
        else:
            remaining = [cell for cell, flag in zip(self._cells, support, strict=True) if flag]
            if not remaining:
                raise ValueError(f"{type(self).__name__}: the goal posterior is all zero")
            stray = [cell for cell in remaining if cell not in self._candidates]
            if stray:
                raise ValueError(
                    f"{type(self).__name__}: the goal posterior gives cells {stray} a positive "
                    f"probability, but they are not candidate goals of {spec}: the belief was "
                    "built for another grid or candidate set"
                )
            if len(remaining) == 1:
                # A single goal left is a known goal (found, or every other candidate ruled out:
                # the optimal walk to it is the same either way).
                action = self.solver.act((x, y), step, episode, None, goal_known=remaining[0])
            else:
                action = self.solver.act((x, y), step, episode, frozenset(remaining), None)
        self._actions[state] = action
        return action


def _greedy_slots(distances: Sequence[int], steps: int) -> list[int]:
    """Best time-slot scores ``steps - t + 1`` for goals at the sorted ``distances``."""
    slots = []
    t = 0
    for d in distances:
        t = max(t + 1, d)
        if t > steps:
            break
        slots.append(steps - t + 1)
    return slots


def main(argv: Sequence[str] | None = None) -> None:
    """Print the Bayes-optimal expected returns of GridNavi.

    Examples
    --------
    >>> main(["--grid-size", "3", "--episode-length", "2", "--episodes", "1"])
    GridNavi 3x3, 1 episodes of 2 steps, 5 candidate goals
    episode 1: expected return 0.020000
    total:     0.020000
    known-goal return per episode: 0.240000
    """
    parser = argparse.ArgumentParser(
        description="Print the Bayes-optimal expected returns of GridNavi (exact DP)."
    )
    defaults = GridNaviSpec()
    parser.add_argument("--grid-size", type=int, default=defaults.grid_size)
    parser.add_argument("--episode-length", type=int, default=defaults.episode_length)
    parser.add_argument("--episodes", type=int, default=defaults.episodes_per_task)
    parser.add_argument(
        "--tasks",
        default="all",
        choices=[d.name for d in GRID_DISTRIBUTIONS],
        help="the goal prior: a GridNavi task distribution (torchrl_bamdp.task_distributions)",
    )
    parser.add_argument("--split-seed", type=int, default=0)
    args = parser.parse_args(argv)
    goals = None
    if args.tasks != "all":
        goals = tuple(grid_goal_cells(args.grid_size, args.tasks, args.split_seed))
    spec = GridNaviSpec(
        grid_size=args.grid_size,
        episode_length=args.episode_length,
        episodes_per_task=args.episodes,
        goals=goals,
    )
    solver = BayesOptimalGridNavi(spec)
    print(
        f"GridNavi {spec.grid_size}x{spec.grid_size}, {spec.episodes_per_task} episodes of "
        f"{spec.episode_length} steps, {len(spec.candidate_goals())} candidate goals"
    )
    for episode, value in enumerate(solver.expected_returns(), start=1):
        print(f"episode {episode}: expected return {value:.6f}")
    print(f"total:     {solver.total_expected_return():.6f}")
    print(f"known-goal return per episode: {solver.known_goal_return():.6f}")


if __name__ == "__main__":
    main()
