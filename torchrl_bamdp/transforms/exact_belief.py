"""The exact GridNavi posterior over goal cells as a TorchRL transform (DESIGN.md §2).

In GridNavi the reward is a deterministic function of the goal and of the cell the agent lands
in: ``goal_reward`` on the goal, the step penalty anywhere else. The exact Bayesian posterior
over the goal cell is therefore the prior restricted to the goals consistent with every reward
seen so far, renormalised: this is the "belief oracle" VariBAD's paper compares against. It is
maintained online, carried across the inner episodes of a task and reset to the prior on a new
task, and written as ``("belief", "probs")``: one probability per grid cell (flat index
``x * grid_size + y``, as :meth:`~torchrl_bamdp.envs.GridNaviEnv.cell_index`).
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey
from torchrl.data import Bounded, Composite
from torchrl.envs import EnvBase
from torchrl.envs.transforms import Compose, Transform

from torchrl_bamdp.envs.bamdp import BAMDPEnv
from torchrl_bamdp.envs.gridworld import GRID_MOVES, GridNaviEnv, candidate_goal_cells, grid_move
from torchrl_bamdp.transforms.belief import hyper_state_transform

__all__ = ["BELIEF_PROBS", "ExactGridBelief", "exact_belief_transforms", "find_grid_navi"]

BELIEF_PROBS: tuple[str, str] = ("belief", "probs")

# A reward at least this close to ``goal_reward`` means "the agent landed on the goal".
_GOAL_TOLERANCE = 1e-6


def find_grid_navi(env: EnvBase) -> GridNaviEnv:
    """Return the :class:`~torchrl_bamdp.envs.GridNaviEnv` inside a (transformed) BAMDP env.

    Unwraps ``TransformedEnv.base_env`` and ``BAMDPEnv.task_env`` until a ``GridNaviEnv`` is
    found.

    Raises
    ------
    TypeError
        If there is no ``GridNaviEnv`` inside ``env``.

    Examples
    --------
    >>> from torchrl_bamdp.envs import make_env
    >>> find_grid_navi(make_env(num_envs=2, grid_size=3)).grid_size
    3
    """
    current = env
    for _ in range(64):
        if isinstance(current, GridNaviEnv):
            return current
        if isinstance(current, BAMDPEnv):
            current = current.task_env
        elif hasattr(current, "base_env"):
            current = current.base_env
        else:
            break
    raise TypeError(
        f"no GridNaviEnv inside {type(env).__name__}: the exact belief is only defined for "
        "GridNavi (a TransformedEnv / BAMDPEnv around a GridNaviEnv)"
    )


class ExactGridBelief(Transform):
    """Carry the exact posterior over the GridNavi goal cell, one Bayes update per env step.

    On reset (a new task) it writes the prior: uniform over the candidate goal cells, 0
    elsewhere. On every step it computes the cell the agent landed in from the *current*
    observation (the position) and the action, and keeps the goals consistent with the reward:
    only that cell if the reward is the goal reward, every goal but that cell otherwise. The
    landing cell is not read from the next observation, which is the start state after an inner
    episode ends. Inner-episode resets are not TorchRL resets, so the posterior persists across
    the inner episodes of a task.

    Since the likelihood is an indicator, the posterior is the prior restricted to the goals not
    ruled out yet, renormalised; it is recomputed from the prior every step, so no rounding
    accumulates over a task.

    Parameters
    ----------
    grid_size : int
        Side of the square grid.
    goal_reward : float
        Reward of a step that lands on the goal; a reward ``>= goal_reward - 1e-6`` counts as
        "the goal is here", anything lower as "not here".
    candidates : torch.Tensor, optional
        ``[G, 2]`` integer cells ``(x, y)`` that may be the goal, each with prior ``1 / G``;
        defaults to :func:`~torchrl_bamdp.envs.candidate_goal_cells` (21 cells on a 5x5 grid).
    action_key, reward_key, observation_key : NestedKey
        Where to read a_t and the position s_t (root tensordict) and r_{t+1} (next tensordict).

    Examples
    --------
    >>> from torchrl.envs import TransformedEnv
    >>> from torchrl_bamdp.envs import BAMDPEnv, GridNaviEnv
    >>> base = BAMDPEnv(GridNaviEnv(num_envs=4), episode_length=15, episodes_per_task=4)
    >>> env = TransformedEnv(base, ExactGridBelief())
    >>> td = env.reset()
    >>> td["belief", "probs"].shape, round(td["belief", "probs"].max().item() * 21, 4)
    (torch.Size([4, 25]), 1.0)
    >>> td["action"] = torch.full((4,), 2)  # right: lands on (1, 0), never a goal
    >>> td = env.step(td)
    >>> int((td["next", "belief", "probs"] > 0).sum(-1)[0])
    21
    """

    def __init__(
        self,
        grid_size: int = 5,
        goal_reward: float = 1.0,
        candidates: torch.Tensor | None = None,
        action_key: NestedKey = "action",
        reward_key: NestedKey = "reward",
        observation_key: NestedKey = "observation",
    ) -> None:
        super().__init__(
            in_keys=[action_key, reward_key, observation_key],
            out_keys=[BELIEF_PROBS],
        )
        if candidates is None:
            candidates = candidate_goal_cells(grid_size)
        candidates = torch.as_tensor(candidates)
        if candidates.is_floating_point():
            if not bool((candidates == candidates.round()).all()):
                raise ValueError("ExactGridBelief: candidates must be integer cells (x, y)")
            candidates = candidates.round()
        candidates = candidates.long()
        if candidates.ndim != 2 or candidates.shape[-1] != 2 or len(candidates) == 0:
            raise ValueError(
                "ExactGridBelief: candidates must be a non-empty [G, 2] tensor of cells (x, y), "
                f"got shape {tuple(candidates.shape)}"
            )
        if bool(((candidates < 0) | (candidates >= grid_size)).any()):
            raise ValueError(
                f"ExactGridBelief: every candidate cell must lie on the {grid_size}x{grid_size} "
                f"grid, got {candidates.tolist()}"
            )
        self.grid_size = int(grid_size)
        self.goal_reward = float(goal_reward)
        self.action_key = action_key
        self.reward_key = reward_key
        self.observation_key = observation_key
        num_cells = self.grid_size * self.grid_size
        support = torch.zeros(num_cells, dtype=torch.bool)
        support[candidates[:, 0] * self.grid_size + candidates[:, 1]] = True
        self.register_buffer("candidates", candidates)
        self.register_buffer("prior", support.float() / support.sum())
        self.register_buffer("moves", torch.tensor(GRID_MOVES, dtype=torch.long))

    @classmethod
    def from_env(cls, env: EnvBase, **kwargs) -> ExactGridBelief:
        """Build the transform matching the GridNavi env inside ``env``.

        Grid size, goal reward and candidate cells are read from the
        :class:`~torchrl_bamdp.envs.GridNaviEnv` (see :func:`find_grid_navi`); ``kwargs`` (the
        keys) are passed to the constructor.

        Examples
        --------
        >>> from torchrl_bamdp.envs import make_env
        >>> ExactGridBelief.from_env(make_env(num_envs=2, grid_size=3)).num_cells
        9
        """
        grid = find_grid_navi(env)
        if grid.step_penalty >= grid.goal_reward - _GOAL_TOLERANCE:
            raise ValueError(
                f"{cls.__name__}: the env's step_penalty ({grid.step_penalty}) must be below its "
                f"goal_reward ({grid.goal_reward}) for rewards to tell the goal apart"
            )
        return cls(
            grid_size=grid.grid_size,
            goal_reward=grid.goal_reward,
            candidates=grid.candidate_goals.cpu(),
            **kwargs,
        )

    @property
    def num_cells(self) -> int:
        """Number of grid cells (the size of the last dimension of the probabilities)."""
        return self.grid_size * self.grid_size

    def _prior(self, batch: torch.Size, device: torch.device | None) -> torch.Tensor:
        return self.prior.to(device).expand(*batch, self.num_cells).clone()

    def _reset(
        self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        # A full-batch prior is written; on partial resets EnvBase.reset keeps the belief of the
        # envs that were not reset (it merges with the "_reset" mask).
        tensordict_reset.set(
            BELIEF_PROBS, self._prior(tensordict_reset.batch_size, tensordict_reset.device)
        )
        return tensordict_reset

    def _get(self, source: TensorDictBase, key: NestedKey, where: str) -> torch.Tensor:
        value = source.get(key, None)
        if value is None:
            raise KeyError(
                f"{type(self).__name__}: no entry {key!r} in the {where} tensordict to update the "
                "goal posterior from"
            )
        return value

    def landing_cell(self, position: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Flat index of the cell reached by ``action`` from ``position`` (off-grid: stay put).

        Parameters
        ----------
        position : torch.Tensor
            ``[*batch, 2]`` cells ``(x, y)`` (floats or integers).
        action : torch.Tensor
            ``[*batch]`` action indices (noop/up/right/down/left), ``[*batch, 1]`` indices or
            ``[*batch, 5]`` one-hot actions.

        Examples
        --------
        >>> t = ExactGridBelief(grid_size=3)
        >>> t.landing_cell(torch.tensor([[1.0, 2.0], [2.0, 0.0]]), torch.tensor([1, 2])).tolist()
        [5, 6]
        """
        batch = position.shape[:-1]
        num_moves = len(GRID_MOVES)
        if action.shape == (*batch, num_moves) and action.shape != batch:
            action = action.argmax(-1)
        elif action.shape == (*batch, 1):
            action = action.squeeze(-1)
        if action.shape != batch:
            raise ValueError(
                f"{type(self).__name__}: action of shape {tuple(action.shape)} does not match the "
                f"positions' batch shape {tuple(batch)}"
            )
        moves = self.moves.to(position.device)
        cell = grid_move(position.round(), action, moves, self.grid_size)
        return cell[..., 0] * self.grid_size + cell[..., 1]

    def update(
        self,
        probs: torch.Tensor,
        position: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
    ) -> torch.Tensor:
        """One exact Bayes update of ``[*batch, N*N]`` probabilities.

        Parameters
        ----------
        probs : torch.Tensor
            The posterior before the step.
        position, action : torch.Tensor
            The position the step started from and the action taken (see :meth:`landing_cell`).
        reward : torch.Tensor
            ``[*batch, 1]`` (or ``[*batch]``) reward received for the step.

        Raises
        ------
        ValueError
            If no candidate goal is consistent with the data in some env (the posterior would be
            all zero); the message names those envs.

        Examples
        --------
        >>> t = ExactGridBelief(grid_size=3)
        >>> prior = t.prior.expand(1, 9)
        >>> t.update(prior, torch.tensor([[0.0, 1.0]]), torch.tensor([1]), torch.tensor([[-0.1]]))
        tensor([[0.0000, 0.0000, 0.0000, 0.0000, 0.0000, 0.2500, 0.2500, 0.2500, 0.2500]])
        >>> t.update(prior, torch.tensor([[0.0, 1.0]]), torch.tensor([1]), torch.tensor([[1.0]]))
        tensor([[0., 0., 1., 0., 0., 0., 0., 0., 0.]])
        """
        batch = probs.shape[:-1]
        consistent = self.consistent_goals(probs, position, action, reward)
        unnormalised = self.prior.to(probs.device) * ((probs > 0) & consistent)
        total = unnormalised.sum(-1, keepdim=True)
        empty = total.squeeze(-1) <= 0
        # The check reads a value (a host sync): skipped in a sync-free env (BAMDPEnv's
        # sync_free, e.g. on a GPU), where an impossible reward gives NaN probabilities instead.
        if not self._sync_free() and bool(empty.any()):
            envs = (
                empty.nonzero().tolist() if len(batch) > 1 else empty.nonzero().flatten().tolist()
            )
            raise ValueError(
                f"{type(self).__name__}: the rewards rule out every candidate goal in env(s) "
                f"{envs[:10]}{' ...' if len(envs) > 10 else ''} (batch indices): the data are not "
                "GridNavi data with this grid, goal reward and candidate set (a hand-made "
                "tensordict, or a belief not reset on a new task?)"
            )
        return unnormalised / total

    def _sync_free(self) -> bool:
        """Whether the env this transform is attached to steps without host syncs."""
        parent = getattr(self, "parent", None)
        return bool(getattr(getattr(parent, "base_env", None), "sync_free", False))

    def consistent_goals(
        self,
        probs: torch.Tensor,
        position: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
    ) -> torch.Tensor:
        """``[*batch, cells]`` bool: the goals under which the step's reward is what GridNavi
        pays (the goal reward exactly where the step landed, the step penalty elsewhere): the
        likelihood of one step, 1 or 0, shared by every exact GridNavi belief.

        Examples
        --------
        >>> t = ExactGridBelief(grid_size=3)
        >>> p, position = t.prior.expand(1, 9), torch.tensor([[0.0, 1.0]])
        >>> t.consistent_goals(p, position, torch.tensor([1]), torch.tensor([[1.0]]))
        tensor([[False, False,  True, False, False, False, False, False, False]])
        """
        if probs.shape[-1] != self.num_cells:
            raise ValueError(
                f"{type(self).__name__}: {BELIEF_PROBS} has {probs.shape[-1]} cells, expected "
                f"{self.num_cells} for a {self.grid_size}x{self.grid_size} grid"
            )
        cell = self.landing_cell(position, action)
        found = reward.reshape(probs.shape[:-1]) >= self.goal_reward - _GOAL_TOLERANCE
        # Not F.one_hot: it checks the index range, two host syncs; cells are on the grid.
        here = cell.unsqueeze(-1) == torch.arange(self.num_cells, device=cell.device)
        return torch.where(found.unsqueeze(-1), here, ~here)

    def _step(self, tensordict: TensorDictBase, next_tensordict: TensorDictBase) -> TensorDictBase:
        probs = tensordict.get(BELIEF_PROBS, None)
        if probs is None:
            raise KeyError(
                f"{type(self).__name__}: no {BELIEF_PROBS} in the input tensordict; step from a "
                "tensordict returned by env.reset() (or a collector), not a hand-made one."
            )
        position = self._get(tensordict, self.observation_key, "root")
        action = self._get(tensordict, self.action_key, "root")
        reward = self._get(next_tensordict, self.reward_key, "next")
        next_tensordict.set(BELIEF_PROBS, self.update(probs, position, action, reward))
        return next_tensordict

    def _call(self, next_tensordict: TensorDictBase) -> TensorDictBase:
        return next_tensordict

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        raise NotImplementedError(
            f"{type(self).__name__} is an environment transform: it needs (position, action, "
            "next reward) triples. Use ExactGridBelief.update on stored trajectories."
        )

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        batch = self.parent.batch_size
        observation_spec[BELIEF_PROBS] = Bounded(
            0.0,
            1.0,
            shape=(*batch, self.num_cells),
            dtype=torch.float32,
            device=observation_spec.device,
        )
        return observation_spec


def exact_belief_transforms(
    grid_size: int = 5,
    goal_reward: float = 1.0,
    candidates: torch.Tensor | None = None,
    action_key: NestedKey = "action",
    reward_key: NestedKey = "reward",
    observation_key: NestedKey = "observation",
    out_key: NestedKey = "hyper_state",
) -> Compose:
    """The exact posterior followed by ``hyper_state = [observation, probs]``.

    The arguments are those of :class:`ExactGridBelief`; ``out_key`` names the hyper-state.

    Examples
    --------
    >>> from torchrl.envs import TransformedEnv
    >>> from torchrl_bamdp.envs import make_env
    >>> env = TransformedEnv(make_env(num_envs=2), exact_belief_transforms())
    >>> env.reset()["hyper_state"].shape
    torch.Size([2, 27])
    """
    belief = ExactGridBelief(
        grid_size=grid_size,
        goal_reward=goal_reward,
        candidates=candidates,
        action_key=action_key,
        reward_key=reward_key,
        observation_key=observation_key,
    )
    return grid_belief_hyper_state(belief, observation_key, out_key)


def grid_belief_hyper_state(
    belief: Transform,
    observation_key: NestedKey = "observation",
    out_key: NestedKey = "hyper_state",
) -> Compose:
    """``belief`` (a transform writing ``("belief", "probs")`` over the grid's cells) followed by
    ``hyper_state = [observation, probs]``: the belief oracles' one hyper-state layout.

    Examples
    --------
    >>> len(grid_belief_hyper_state(ExactGridBelief()))
    2
    """
    return Compose(
        belief,
        hyper_state_transform(
            belief_keys=[BELIEF_PROBS], observation_key=observation_key, out_key=out_key
        ),
    )
