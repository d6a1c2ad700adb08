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
from torchrl.data import Bounded, Categorical, Composite
from torchrl.envs import EnvBase
from torchrl.envs.transforms import Compose, Transform

from torchrl_bamdp.envs.bamdp import BAMDPEnv
from torchrl_bamdp.envs.gridworld import GRID_MOVES, GridNaviEnv, candidate_goal_cells, grid_move
from torchrl_bamdp.transforms.belief import hyper_state_transform

__all__ = [
    "BELIEF_CONSISTENT",
    "BELIEF_PROBS",
    "ExactGridBelief",
    "exact_belief_transforms",
    "find_grid_navi",
]

BELIEF_PROBS: tuple[str, str] = ("belief", "probs")
#: The cells not ruled out by any reward so far (carried only with a ``fallback`` prior).
BELIEF_CONSISTENT: tuple[str, str] = ("belief", "consistent")

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
        ``[G, 2]`` integer cells ``(x, y)`` that may be the goal, each with prior ``1 / G``.
        ``None`` (default): the goals of the GridNavi env the transform is attached to (its
        task distribution), read at its first reset; all cells but the four nearest the start
        (:func:`~torchrl_bamdp.envs.candidate_goal_cells`, 21 on a 5x5 grid) until then.
    fallback : torch.Tensor, optional
        ``[F, 2]`` cells of the prior that takes over when the rewards rule out every one of
        ``candidates`` (the ``eps -> 0`` limit of ``(1 - eps) U(candidates) + eps
        U(fallback)``, see the module docstring): an agent trained on some goals meeting
        others. The transform then also carries :data:`BELIEF_CONSISTENT`, the cells no reward
        has ruled out. ``None``: no fallback (the data ruling out every candidate is an error).
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

    Trained on 16 goals, tested on the 5 held out: the posterior keeps the training prior until
    the rewards rule out all 16, then falls back to the goals no reward has ruled out.

    >>> from torchrl_bamdp.envs import candidate_goal_cells, make_env
    >>> from torchrl_bamdp.task_distributions import grid_goal_cells
    >>> oracle = ExactGridBelief(candidates=torch.tensor(grid_goal_cells(5, "heldout_train")),
    ...                          fallback=candidate_goal_cells(5))
    >>> env = TransformedEnv(make_env(num_envs=1, tasks="heldout_test"), oracle)
    >>> int((env.reset()["belief", "probs"] > 0).sum())
    16
    """

    def __init__(
        self,
        grid_size: int = 5,
        goal_reward: float = 1.0,
        candidates: torch.Tensor | None = None,
        action_key: NestedKey = "action",
        reward_key: NestedKey = "reward",
        observation_key: NestedKey = "observation",
        fallback: torch.Tensor | None = None,
    ) -> None:
        out_keys = [BELIEF_PROBS] if fallback is None else [BELIEF_PROBS, BELIEF_CONSISTENT]
        super().__init__(in_keys=[action_key, reward_key, observation_key], out_keys=out_keys)
        self.grid_size = int(grid_size)
        self.goal_reward = float(goal_reward)
        self.action_key = action_key
        self.reward_key = reward_key
        self.observation_key = observation_key
        #: Whether the prior is the attached env's task distribution (``candidates=None``),
        #: read at the first reset.
        self.prior_from_env = candidates is None
        self._adopted_env_prior = False
        cells = self._check_cells(
            candidate_goal_cells(grid_size) if candidates is None else candidates, "candidates"
        )
        self.register_buffer("candidates", cells)
        self.register_buffer("prior", self._uniform(cells))
        self.register_buffer("moves", torch.tensor(GRID_MOVES, dtype=torch.long))
        self.has_fallback = fallback is not None
        if fallback is not None:
            self.register_buffer(
                "fallback_prior", self._uniform(self._check_cells(fallback, "fallback"))
            )

    def _check_cells(self, cells: torch.Tensor, what: str) -> torch.Tensor:
        cells = torch.as_tensor(cells)
        if cells.is_floating_point():
            if not bool((cells == cells.round()).all()):
                raise ValueError(f"ExactGridBelief: {what} must be integer cells (x, y)")
            cells = cells.round()
        cells = cells.long().cpu()
        if cells.ndim != 2 or cells.shape[-1] != 2 or len(cells) == 0:
            raise ValueError(
                f"ExactGridBelief: {what} must be a non-empty [G, 2] tensor of cells (x, y), "
                f"got shape {tuple(cells.shape)}"
            )
        if bool(((cells < 0) | (cells >= self.grid_size)).any()):
            raise ValueError(
                f"ExactGridBelief: every {what} cell must lie on the {self.grid_size}x"
                f"{self.grid_size} grid, got {cells.tolist()}"
            )
        return cells

    def _uniform(self, cells: torch.Tensor) -> torch.Tensor:
        support = torch.zeros(self.grid_size * self.grid_size, dtype=torch.bool)
        support[cells[:, 0] * self.grid_size + cells[:, 1]] = True
        return support.float() / support.sum()

    def _adopt_env_prior(self) -> None:
        """With ``candidates=None``: take the attached GridNavi env's goals as the prior (once)."""
        if not self.prior_from_env or self._adopted_env_prior:
            return
        parent = self.parent
        if parent is None:
            return
        try:
            grid = find_grid_navi(parent)
        except TypeError:
            return  # not a GridNavi env: the default candidates stand
        if grid.grid_size != self.grid_size:
            raise ValueError(
                f"{type(self).__name__}(grid_size={self.grid_size}) is attached to a GridNavi "
                f"env of grid_size={grid.grid_size}"
            )
        cells = self._check_cells(grid.candidate_goals.cpu(), "candidates")
        self.candidates = cells.to(self.prior.device)
        self.prior = self._uniform(cells).to(self.prior.device)
        self._adopted_env_prior = True

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # A checkpoint of a transform attached to an env holds that env's prior: adopt it first,
        # so that the buffers have the shapes being loaded.
        self._adopt_env_prior()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @classmethod
    def from_env(cls, env: EnvBase, **kwargs) -> ExactGridBelief:
        """Build the transform matching the GridNavi env inside ``env``.

        Grid size, goal reward and candidate cells are read from the
        :class:`~torchrl_bamdp.envs.GridNaviEnv` (see :func:`find_grid_navi`); ``kwargs`` (the
        keys, or ``fallback``) are passed to the constructor.

        Examples
        --------
        >>> from torchrl_bamdp.envs import make_env
        >>> ExactGridBelief.from_env(make_env(num_envs=2, grid_size=3)).num_cells
        9
        """
        grid = find_grid_navi(env)
        kwargs.setdefault("candidates", grid.candidate_goals.cpu())
        if grid.step_penalty >= grid.goal_reward - _GOAL_TOLERANCE:
            raise ValueError(
                f"{cls.__name__}: the env's step_penalty ({grid.step_penalty}) must be below its "
                f"goal_reward ({grid.goal_reward}) for rewards to tell the goal apart"
            )
        return cls(grid_size=grid.grid_size, goal_reward=grid.goal_reward, **kwargs)

    @property
    def num_cells(self) -> int:
        """Number of grid cells (the size of the last dimension of the probabilities)."""
        return self.grid_size * self.grid_size

    def _prior(self, batch: torch.Size, device: torch.device | None) -> torch.Tensor:
        return self.prior.to(device).expand(*batch, self.num_cells).clone()

    def _reset(
        self, tensordict: TensorDictBase, tensordict_reset: TensorDictBase
    ) -> TensorDictBase:
        self._adopt_env_prior()
        # A full-batch prior is written; on partial resets EnvBase.reset keeps the belief of the
        # envs that were not reset (it merges with the "_reset" mask).
        batch, device = tensordict_reset.batch_size, tensordict_reset.device
        tensordict_reset.set(BELIEF_PROBS, self._prior(batch, device))
        if self.has_fallback:
            everything = torch.ones(*batch, self.num_cells, dtype=torch.bool, device=device)
            tensordict_reset.set(BELIEF_CONSISTENT, everything)
        return tensordict_reset

    def posterior(self, consistent: torch.Tensor) -> torch.Tensor:
        """The posterior given the ``[*batch, N*N]`` cells consistent with every reward so far:
        the prior restricted to them, or, where that is empty, the ``fallback`` prior restricted
        to them (see the module docstring).

        Examples
        --------
        >>> t = ExactGridBelief(grid_size=3, candidates=torch.tensor([[2, 2]]),
        ...                     fallback=candidate_goal_cells(3))
        >>> consistent = torch.ones(1, 9, dtype=torch.bool)
        >>> t.posterior(consistent)[0, 8].item()
        1.0
        >>> consistent[0, 8] = False  # (2, 2) ruled out: the other 4 goals of the 3x3 grid
        >>> (t.posterior(consistent)[0] * 4).tolist()
        [0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0]
        """
        unnormalised = self.prior.to(consistent.device) * consistent
        total = unnormalised.sum(-1, keepdim=True)
        if self.has_fallback:
            fallback = self.fallback_prior.to(consistent.device) * consistent
            use = total <= 0
            unnormalised = torch.where(use, fallback, unnormalised)
            total = torch.where(use, fallback.sum(-1, keepdim=True), total)
        if not self._sync_free():  # a host sync: see update
            self._raise_if_empty(total.squeeze(-1))
        return unnormalised / total

    def _raise_if_empty(self, total: torch.Tensor) -> None:
        empty = total <= 0
        if bool(empty.any()):
            batch = total.shape
            envs = (
                empty.nonzero().tolist() if len(batch) > 1 else empty.nonzero().flatten().tolist()
            )
            raise ValueError(
                f"{type(self).__name__}: the rewards rule out every candidate goal in env(s) "
                f"{envs[:10]}{' ...' if len(envs) > 10 else ''} (batch indices): the data are not "
                "GridNavi data with this grid, goal reward and candidate set (a hand-made "
                "tensordict, a belief not reset on a new task, or a test goal outside the "
                "prior's support: give the transform a fallback prior)"
            )

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
        consistent = self.consistent_goals(probs, position, action, reward)
        unnormalised = self.prior.to(probs.device) * ((probs > 0) & consistent)
        total = unnormalised.sum(-1, keepdim=True)
        # The check reads a value (a host sync): skipped in a sync-free env (BAMDPEnv's
        # sync_free, e.g. on a GPU), where an impossible reward gives NaN probabilities instead.
        if not self._sync_free():
            self._raise_if_empty(total.squeeze(-1))
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
        if position.dim() > probs.dim():
            # A frame (env.observation=pixels): the cell it shows, by the renderer's inverse.
            position = find_grid_navi(self.parent).positions_of(position)
        action = self._get(tensordict, self.action_key, "root")
        reward = self._get(next_tensordict, self.reward_key, "next")
        if not self.has_fallback:
            next_tensordict.set(BELIEF_PROBS, self.update(probs, position, action, reward))
            return next_tensordict
        consistent = self._get(tensordict, BELIEF_CONSISTENT, "root")
        consistent = consistent & self.consistent_goals(probs, position, action, reward)
        next_tensordict.set(BELIEF_CONSISTENT, consistent)
        next_tensordict.set(BELIEF_PROBS, self.posterior(consistent))
        return next_tensordict

    def _call(self, next_tensordict: TensorDictBase) -> TensorDictBase:
        return next_tensordict

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        raise NotImplementedError(
            f"{type(self).__name__} is an environment transform: it needs (position, action, "
            "next reward) triples. Use ExactGridBelief.update on stored trajectories."
        )

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        self._adopt_env_prior()
        batch = self.parent.batch_size
        observation_spec[BELIEF_PROBS] = Bounded(
            0.0,
            1.0,
            shape=(*batch, self.num_cells),
            dtype=torch.float32,
            device=observation_spec.device,
        )
        if self.has_fallback:
            observation_spec[BELIEF_CONSISTENT] = Categorical(
                2, shape=(*batch, self.num_cells), dtype=torch.bool, device=observation_spec.device
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
    fallback: torch.Tensor | None = None,
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
        fallback=fallback,
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
