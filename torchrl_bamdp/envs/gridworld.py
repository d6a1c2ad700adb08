"""GridNavi: the VariBAD gridworld as a batched, pure-torch TorchRL environment.

The reference behaviour (DESIGN.md §3): an ``N x N`` grid (default 5), start at ``(0, 0)``, the
goal drawn uniformly from the cells other than the four nearest the start, actions
noop/up/right/down/left (moves off the grid stay put), reward ``+1`` when the new position is the
goal and ``-0.1`` otherwise. The episode length and the number of episodes per task are owned by
:class:`~torchrl_bamdp.envs.bamdp.BAMDPEnv`; this class only holds the task and the dynamics.
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded

from torchrl_bamdp.envs.pixels import DEFAULT_IMAGE_SIZE, GridRenderer, check_observation
from torchrl_bamdp.envs.task_env import TaskEnv
from torchrl_bamdp.task_distributions import ALL_TASKS, grid_goal_cells

# Action index -> (dx, dy). Order fixed by the reference: noop, up, right, down, left.
GRID_MOVES = ((0, 0), (0, 1), (1, 0), (0, -1), (-1, 0))
ACTION_NAMES = ("noop", "up", "right", "down", "left")


def grid_move(
    position: torch.Tensor, action: torch.Tensor, moves: torch.Tensor, grid_size: int
) -> torch.Tensor:
    """The integer cells ``[..., 2]`` reached from ``position`` by ``action`` (indices into
    ``moves``, a ``[5, 2]`` tensor of :data:`GRID_MOVES`); off-grid moves stay put.

    The one place GridNavi's dynamics live: the env, the exact belief and the reward decoder
    all move with it.

    Examples
    --------
    >>> moves = torch.tensor(GRID_MOVES)
    >>> grid_move(torch.tensor([[4, 4], [0, 0]]), torch.tensor([1, 2]), moves, 5).tolist()
    [[4, 4], [1, 0]]
    """
    return (position.long() + moves[action.long()]).clamp_(0, grid_size - 1)


def candidate_goal_cells(grid_size: int) -> torch.Tensor:
    """Return the ``[G, 2]`` long tensor of goal cells: all but the four nearest the start.

    Examples
    --------
    >>> candidate_goal_cells(5).shape
    torch.Size([21, 2])
    """
    if grid_size < 3:
        raise ValueError(
            f"grid_size must be >= 3 (got {grid_size}): the 4 start cells are excluded"
        )
    xs, ys = torch.meshgrid(torch.arange(grid_size), torch.arange(grid_size), indexing="ij")
    cells = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1)
    near_start = (cells[:, 0] <= 1) & (cells[:, 1] <= 1)
    return cells[~near_start]


class GridNaviEnv(TaskEnv):
    """Batched GridNavi task environment (no time limit; wrap it in a ``BAMDPEnv``).

    Keys: ``observation`` (the position as two floats, or with ``observation="pixels"`` a
    ``uint8`` frame ``[3, image_size, image_size]`` of it, :class:`~torchrl_bamdp.envs.pixels.
    GridRenderer`), ``task`` (the goal cell as two floats, only for oracles and evaluation),
    ``action`` (an index in ``0..4``), ``reward``.

    Parameters
    ----------
    num_envs : int
        Number of independent grids stepped together (the env's batch size).
    grid_size : int
        Side of the square grid (>= 3).
    goal_reward, step_penalty : float
        Reward for being on the goal after a step, and for any other step.
    device : torch.device or str
        Where the state lives; every operation is a batched tensor op, so any device works.
    tasks : str
        The task distribution: the goals it draws from, uniformly (``all``: the 21 candidate
        goals; ``heldout_train``/``heldout_test``, ``region_train``/``region_test``: see
        :mod:`torchrl_bamdp.task_distributions`). :attr:`candidate_goals` are its goals, what
        the exact belief and the Bayes-optimal policy built from this env take as the prior.
    split_seed : int
        Which goals the ``heldout_*`` distributions hold out.
    observation : {"state", "pixels"}
        What the agent observes: its cell (``state``, the reference) or a frame of the grid
        with its cell lit (``pixels``; the goal is never drawn). Tasks, dynamics and rewards
        are the same, and so are the Bayes-optimal returns.
    image_size : int
        Side of the frames with ``observation="pixels"`` (at least ``2 * grid_size``).

    Examples
    --------
    >>> env = GridNaviEnv(num_envs=8)
    >>> td = env.reset()
    >>> td["observation"].shape, td["task"].shape
    (torch.Size([8, 2]), torch.Size([8, 2]))
    >>> td = env.rand_step(td)
    >>> td["next", "reward"].shape
    torch.Size([8, 1])

    The 5 goals held out of training (by ``split_seed``), and the 16 left to train on:

    >>> GridNaviEnv(tasks="heldout_test").task_support().tolist()
    [[0.0, 2.0], [1.0, 2.0], [2.0, 4.0], [3.0, 3.0], [4.0, 0.0]]
    >>> len(GridNaviEnv(tasks="heldout_train").task_support())
    16

    Pixel observations (the agent's cell lit in channel 0), read back exactly:

    >>> env = GridNaviEnv(num_envs=2, observation="pixels")
    >>> frames = env.reset()["observation"]
    >>> frames.shape, frames.dtype
    (torch.Size([2, 3, 32, 32]), torch.uint8)
    >>> env.positions_of(frames).tolist()
    [[0, 0], [0, 0]]
    """

    validates_actions = True  # its _step checks the values, with its own message

    def __init__(
        self,
        num_envs: int = 1,
        grid_size: int = 5,
        goal_reward: float = 1.0,
        step_penalty: float = -0.1,
        device: torch.device | str = "cpu",
        tasks: str = ALL_TASKS,
        split_seed: int = 0,
        observation: str = "state",
        image_size: int = DEFAULT_IMAGE_SIZE,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1 (got {num_envs})")
        candidate_goal_cells(grid_size)  # checks grid_size
        check_observation(type(self).__name__, observation, image_size)
        renderer = GridRenderer(grid_size, image_size) if observation == "pixels" else None
        try:
            goals = grid_goal_cells(grid_size, tasks, split_seed)
        except ValueError as err:
            raise ValueError(f"{type(self).__name__}: {err}") from None
        super().__init__(device=device, batch_size=torch.Size([num_envs]))
        self.num_envs = num_envs
        self.grid_size = grid_size
        self.goal_reward = float(goal_reward)
        self.step_penalty = float(step_penalty)
        self.task_distribution = tasks
        self.split_seed = int(split_seed)
        #: ``state`` or ``pixels``; with pixels, :attr:`renderer` draws the frames.
        self.observation_kind = observation
        self.renderer = renderer
        self.image_size = image_size if renderer is not None else None
        #: The goals of its task distribution, ``[G, 2]`` long (all 21 candidates by default).
        self.candidate_goals = torch.tensor(goals, dtype=torch.long, device=self.device)
        self._moves = torch.tensor(GRID_MOVES, dtype=torch.long, device=self.device)
        self._position = torch.zeros(num_envs, 2, dtype=torch.long, device=self.device)
        self._goal = self.candidate_goals[-1].expand(num_envs, 2).clone()
        self._make_specs()

    # -- specs -------------------------------------------------------------------------------
    def _make_specs(self) -> None:
        shape = self.batch_size
        high = float(self.grid_size - 1)
        if self.renderer is None:
            observation = Bounded(0.0, high, shape=(*shape, 2), device=self.device)
        else:
            observation = Bounded(
                0, 255, shape=(*shape, *self.renderer.shape), dtype=torch.uint8, device=self.device
            )
        self.observation_spec = Composite(
            observation=observation,
            task=Bounded(0.0, high, shape=(*shape, 2), device=self.device),
            shape=shape,
        )
        self.action_spec = Categorical(len(GRID_MOVES), shape=shape, device=self.device)
        self.reward_spec = Unbounded(shape=(*shape, 1), device=self.device)
        self.done_spec = Composite(
            done=Categorical(2, shape=(*shape, 1), dtype=torch.bool, device=self.device),
            terminated=Categorical(2, shape=(*shape, 1), dtype=torch.bool, device=self.device),
            shape=shape,
        )

    @property
    def task_dim(self) -> int:
        return 2

    @property
    def num_cells(self) -> int:
        return self.grid_size * self.grid_size

    def cell_index(self, position: torch.Tensor) -> torch.Tensor:
        """Flat cell index ``x * grid_size + y`` of float or long ``[..., 2]`` positions."""
        position = position.long()
        return position[..., 0] * self.grid_size + position[..., 1]

    @property
    def frame_cells(self):
        """With pixels, ``frame_cells(frames) -> [...]`` flat cell indices the frames show
        (:meth:`~torchrl_bamdp.envs.pixels.GridRenderer.cells`, exact); ``None`` for states.
        What the per-cell reward decoder reads of a frame."""
        return None if self.renderer is None else self.renderer.cells

    def positions_of(self, observation: torch.Tensor) -> torch.Tensor:
        """The cells ``[..., 2]`` (long) that observations ``[..., *obs_shape]`` show: the
        observation itself for states, the lit cell for frames (the renderer's exact inverse)."""
        if self.renderer is None:
            return observation.long()
        return self.renderer.positions(observation)

    # -- tasks -------------------------------------------------------------------------------
    def sample_tasks(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        # Sampling happens on the CPU generator so that a seed gives the same tasks on any device.
        index = torch.randint(len(self.candidate_goals), (num,), generator=generator)
        return self.candidate_goals[index.to(self.device)].float()

    def task_support(self) -> torch.Tensor:
        """The goals of its task distribution (the 21 candidates of a 5x5 grid by default),
        each equally likely."""
        return self.candidate_goals.float()

    # -- dynamics ----------------------------------------------------------------------------
    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        mask, task = self._reset_mask_and_task(tensordict)
        if mask is None:
            self._position.zero_()
            if task is not None:
                self._goal.copy_(task.long())
        else:
            # torch.where, not mask indexing: a boolean index is a host sync on a GPU.
            where = mask.unsqueeze(-1)
            self._position.masked_fill_(where, 0)
            if task is not None:
                self._goal = torch.where(where, task.long(), self._goal)
        done = torch.zeros(*self.batch_size, 1, dtype=torch.bool, device=self.device)
        return self._output(done=done)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = tensordict.get("action", None)
        if action is None:
            raise KeyError(
                f"{type(self).__name__}.step: the tensordict has no 'action' entry (an index in "
                f"0..{len(GRID_MOVES) - 1} per env, shape {tuple(self.batch_size)})"
            )
        if not self._action_is_valid(action):
            raise ValueError(self._invalid_action_message(action))
        self._position = grid_move(self._position, action, self._moves, self.grid_size)
        on_goal = (self._position == self._goal).all(-1, keepdim=True)
        reward = torch.where(
            on_goal,
            torch.full_like(on_goal, self.goal_reward, dtype=torch.float32),
            torch.full_like(on_goal, self.step_penalty, dtype=torch.float32),
        )
        out = self._output(done=torch.zeros_like(on_goal))
        out.set("reward", reward)
        return out

    def _action_is_valid(self, action: torch.Tensor) -> bool:
        """The fast check of every step: shape, dtype and range, one reduction on the hot path."""
        if action.shape != self.batch_size:
            return False
        if action.dtype == torch.bool or action.is_complex():
            return False
        if not self.check_action_values:  # shape and dtype only: no host sync
            return True
        if action.is_floating_point():
            # NaN fails every comparison, +-inf the range, 1.5 the integrality test.
            return bool(((action >= 0) & (action < len(GRID_MOVES)) & (action.frac() == 0)).all())
        low, high = torch.aminmax(action)  # one reduction; .item() beats tensor comparisons
        return low.item() >= 0 and high.item() < len(GRID_MOVES)

    def _invalid_action_message(self, action: torch.Tensor) -> str:
        """Why ``action`` was rejected (built only on failure, never on the fast path)."""
        n = len(GRID_MOVES)
        allowed = (
            f"allowed: one integer index in 0..{n - 1} ({'/'.join(ACTION_NAMES)}) per env, "
            f"shape {tuple(self.batch_size)}, an integer dtype or integral float values"
        )
        head = f"{type(self).__name__}.step: invalid 'action'"
        if action.shape != self.batch_size:
            return f"{head}: shape {tuple(action.shape)} is not the batch shape; {allowed}"
        if action.dtype == torch.bool or action.is_complex():
            return f"{head}: dtype {action.dtype} is not an index type; {allowed}"
        flat = action.reshape(-1)
        if action.is_floating_point():
            checks = (
                ("non-finite (NaN/inf)", ~torch.isfinite(flat)),
                ("non-integer", torch.isfinite(flat) & (flat.frac() != 0)),
                ("out-of-range", torch.isfinite(flat) & ((flat < 0) | (flat >= n))),
            )
        else:
            checks = (("out-of-range", (flat < 0) | (flat >= n)),)
        for what, bad in checks:
            if bool(bad.any()):
                index = bad.nonzero().flatten()
                values = ", ".join(f"env {i}: {flat[i].item()!r}" for i in index[:5].tolist())
                more = f" and {len(index) - 5} more" if len(index) > 5 else ""
                return f"{head}: {len(index)} {what} value(s) ({values}{more}); {allowed}"
        return f"{head} (dtype {action.dtype}); {allowed}"

    def _output(self, done: torch.Tensor) -> TensorDictBase:
        if self.renderer is None:
            observation = self._position.float()
        else:
            observation = self.renderer.render(self._position)
        return self._task_output(observation, self._goal.float(), done)
