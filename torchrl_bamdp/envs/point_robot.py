"""The VariBAD (sparse) point robot as a batched, pure-torch TorchRL environment.

A point in the plane starts at the origin every episode and moves by ``step_size * clip(a, -1, 1)``
per step (``a`` in ``[-1, 1]^2``; with the default ``step_size=0.1`` every coordinate moves by at
most 0.1 per step). The goal lies on the upper half of the unit circle, at an angle drawn uniformly
from ``[0, pi]``. This follows the original VariBAD ``PointEnv`` / ``SparsePointEnv``
(``environments/navigation/point_robot.py``, goal sampler ``semi-circle``):

* dense reward: ``-||p - g||_2`` of the position *after* the step;
* sparse reward (default): ``1 - ||p - g||_2`` when ``||p - g||_2 <= goal_radius`` (0.2) and
  ``0`` otherwise, i.e. in ``[0.8, 1]`` inside the goal circle. The original computes it as
  ``mask * dense + mask`` with ``mask = dense >= -goal_radius``;
* no termination; the episode length (100 in the original) and the episodes per task (3 in the
  original's sparse point robot) are owned by :class:`~torchrl_bamdp.envs.bamdp.BAMDPEnv`.

The original's action space is ``[-1, 1]^2`` scaled by 0.1 inside ``step``; PEARL's point robot
uses ``[-0.1, 0.1]^2`` directly. Both move the robot by the same amounts; we keep the original
VariBAD convention (unit action bounds suit Gaussian policies with unit initial std).
"""

from __future__ import annotations

import math

import torch
from tensordict import TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded

from torchrl_bamdp.envs.pixels import (
    DEFAULT_IMAGE_SIZE,
    DEFAULT_VIEW_RADIUS,
    PointRenderer,
    check_observation,
)
from torchrl_bamdp.envs.task_env import TaskEnv


class PointRobotEnv(TaskEnv):
    """Batched 2D point-robot navigation to a goal on the unit half circle.

    Keys: ``observation`` (the position, ``float[2]``, or with ``observation="pixels"`` a ``uint8``
    frame ``[3, image_size, image_size]`` of it, :class:`~torchrl_bamdp.envs.pixels.PointRenderer`),
    ``task`` (the goal, ``float[2]``, only for oracles and evaluation), ``action`` (``float[2]`` in
    ``[-1, 1]``, clipped), ``reward``.

    Parameters
    ----------
    num_envs : int
        Number of independent robots stepped together (the env's batch size).
    sparse : bool
        Sparse reward ``(1 - d) * [d <= goal_radius]`` (default, ``SparsePointEnv``) or dense
        reward ``-d`` (``PointEnv``), with ``d`` the distance to the goal after the step.
    goal_radius : float
        Radius of the sparse-reward region around the goal (original: 0.2).
    step_size : float
        Displacement per unit action: the position changes by ``step_size * clip(a, -1, 1)``.
    device : torch.device or str
        Where the state lives; every operation is a batched tensor op, so any device works.
    observation : {"state", "pixels"}
        What the agent observes: its position (``state``) or a frame of the plane around the
        start with the robot drawn in (``pixels``; the goal is never drawn). Tasks, dynamics and
        rewards are the same.
    image_size : int
        Side of the frames with ``observation="pixels"``.
    view_radius : float
        The frames show ``[-view_radius, view_radius]^2``; a robot outside is drawn on the edge.

    Examples
    --------
    >>> env = PointRobotEnv(num_envs=4)
    >>> td = env.reset()
    >>> td["observation"].shape, td["task"].shape
    (torch.Size([4, 2]), torch.Size([4, 2]))
    >>> td["action"] = torch.ones(4, 2)
    >>> env.step(td)["next", "observation"][0]
    tensor([0.1000, 0.1000])
    >>> PointRobotEnv(num_envs=4, observation="pixels").reset()["observation"].shape
    torch.Size([4, 3, 32, 32])
    """

    validates_actions = True  # its _step checks the values, with its own message

    def __init__(
        self,
        num_envs: int = 1,
        sparse: bool = True,
        goal_radius: float = 0.2,
        step_size: float = 0.1,
        device: torch.device | str = "cpu",
        observation: str = "state",
        image_size: int = DEFAULT_IMAGE_SIZE,
        view_radius: float = DEFAULT_VIEW_RADIUS,
    ) -> None:
        check_observation(type(self).__name__, observation, image_size)
        renderer = PointRenderer(image_size, view_radius) if observation == "pixels" else None
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1 (got {num_envs})")
        if not goal_radius > 0:
            raise ValueError(f"goal_radius must be > 0 (got {goal_radius})")
        if not step_size > 0:
            raise ValueError(f"step_size must be > 0 (got {step_size})")
        super().__init__(device=device, batch_size=torch.Size([num_envs]))
        self.num_envs = num_envs
        self.sparse = bool(sparse)
        self.goal_radius = float(goal_radius)
        self.step_size = float(step_size)
        #: ``state`` or ``pixels``; with pixels, :attr:`renderer` draws the frames.
        self.observation_kind = observation
        self.renderer = renderer
        self.image_size = image_size if renderer is not None else None
        self._position = torch.zeros(num_envs, 2, device=self.device)
        self._goal = torch.tensor([[0.0, 1.0]], device=self.device).expand(num_envs, 2).clone()
        self._make_specs()

    def _make_specs(self) -> None:
        shape = self.batch_size
        if self.renderer is None:
            observation = Unbounded(shape=(*shape, 2), device=self.device)
        else:
            observation = Bounded(
                0, 255, shape=(*shape, *self.renderer.shape), dtype=torch.uint8, device=self.device
            )
        self.observation_spec = Composite(
            observation=observation,
            task=Bounded(-1.0, 1.0, shape=(*shape, 2), device=self.device),
            shape=shape,
        )
        self.action_spec = Bounded(-1.0, 1.0, shape=(*shape, 2), device=self.device)
        self.reward_spec = Unbounded(shape=(*shape, 1), device=self.device)
        self.done_spec = Composite(
            done=Categorical(2, shape=(*shape, 1), dtype=torch.bool, device=self.device),
            terminated=Categorical(2, shape=(*shape, 1), dtype=torch.bool, device=self.device),
            shape=shape,
        )

    @property
    def task_dim(self) -> int:
        return 2

    def sample_tasks(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Goals ``(cos t, sin t)`` with ``t ~ U[0, pi]`` (upper half of the unit circle)."""
        angle = torch.rand(num, generator=generator) * math.pi
        return torch.stack([angle.cos(), angle.sin()], -1).to(self.device)

    # -- dynamics ----------------------------------------------------------------------------
    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        mask, task = self._reset_mask_and_task(tensordict)
        if mask is None:
            self._position.zero_()
            if task is not None:
                self._goal.copy_(task.reshape(self.num_envs, 2))
        else:
            # torch.where, not mask indexing: a boolean index is a host sync on a GPU.
            where = mask.unsqueeze(-1)
            self._position = self._position.masked_fill(where, 0.0)
            if task is not None:
                task = task.reshape(self.num_envs, 2).to(self._goal.dtype)
                self._goal = torch.where(where, task, self._goal)
        done = torch.zeros(*self.batch_size, 1, dtype=torch.bool, device=self.device)
        return self._output(done)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = tensordict.get("action", None)
        if action is None:
            raise KeyError(
                f"{type(self).__name__}.step: the tensordict has no 'action' entry (float[2] in "
                f"[-1, 1] per env, shape {(self.num_envs, 2)})"
            )
        if action.shape != (self.num_envs, 2) or not action.is_floating_point():
            raise ValueError(
                f"{type(self).__name__}.step: invalid 'action': shape {tuple(action.shape)}, "
                f"dtype {action.dtype}; expected a float tensor of shape {(self.num_envs, 2)} "
                "with values in [-1, 1] (larger values are clipped)"
            )
        if self.check_action_values and not bool(torch.isfinite(action).all()):
            bad = (~torch.isfinite(action)).any(-1).nonzero().flatten()
            raise ValueError(
                f"{type(self).__name__}.step: non-finite (NaN/inf) 'action' in env(s) "
                f"{bad[:5].tolist()}{' ...' if len(bad) > 5 else ''}; expected finite values in "
                "[-1, 1] (larger values are clipped)"
            )
        move = action.to(self._position.dtype).clamp(-1.0, 1.0) * self.step_size
        self._position = self._position + move
        distance = torch.linalg.vector_norm(self._position - self._goal, dim=-1, keepdim=True)
        if self.sparse:
            reward = torch.where(
                distance <= self.goal_radius, 1.0 - distance, torch.zeros_like(distance)
            )
        else:
            reward = -distance
        out = self._output(torch.zeros(*self.batch_size, 1, dtype=torch.bool, device=self.device))
        out.set("reward", reward)
        return out

    def positions_of(self, observation: torch.Tensor) -> torch.Tensor:
        """The positions ``[..., 2]`` that observations show: the observation itself for states,
        the renderer's inverse for frames (to within 8-bit rounding, inside the view)."""
        if self.renderer is None:
            return observation
        return self.renderer.positions(observation)

    def _output(self, done: torch.Tensor) -> TensorDictBase:
        if self.renderer is None:
            observation = self._position.clone()
        else:
            observation = self.renderer.render(self._position)
        return self._task_output(observation, self._goal.clone(), done)


def sparse_point_robot(
    num_envs: int = 1,
    goal_radius: float = 0.2,
    step_size: float = 0.1,
    device: torch.device | str = "cpu",
    observation: str = "state",
    image_size: int = DEFAULT_IMAGE_SIZE,
) -> PointRobotEnv:
    """The ``point_robot_sparse`` task family (its registered factory).

    Examples
    --------
    >>> sparse_point_robot(num_envs=2).sparse
    True
    """
    return PointRobotEnv(
        num_envs=num_envs,
        sparse=True,
        goal_radius=goal_radius,
        step_size=step_size,
        device=device,
        observation=observation,
        image_size=image_size,
    )


def dense_point_robot(
    num_envs: int = 1,
    goal_radius: float = 0.2,
    step_size: float = 0.1,
    device: torch.device | str = "cpu",
    observation: str = "state",
    image_size: int = DEFAULT_IMAGE_SIZE,
) -> PointRobotEnv:
    """The ``point_robot_dense`` task family (its registered factory).

    Examples
    --------
    >>> dense_point_robot(num_envs=2).sparse
    False
    """
    return PointRobotEnv(
        num_envs=num_envs,
        sparse=False,
        goal_radius=goal_radius,
        step_size=step_size,
        device=device,
        observation=observation,
        image_size=image_size,
    )
