"""A task family that is not shipped: a small grid whose *dynamics* depend on the task.

Task = (goal x, goal y, mirror): with ``mirror = 1`` the actions left and right are swapped, so
the agent must infer how it moves as well as where the goal is. The tests train it through the
registry (Python) and through ``env.factory=windy_grid:make_env`` (``bamdp-train``), with this
folder on ``PYTHONPATH``.
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded

from torchrl_bamdp.envs import TaskEnv

#: noop, up, right, down, left.
MOVES = torch.tensor([[0, 0], [0, 1], [1, 0], [0, -1], [-1, 0]])
#: The same actions with left and right swapped.
MIRRORED = MOVES[[0, 1, 4, 3, 2]]


class WindyGridEnv(TaskEnv):
    """``size x size`` grid, start (0, 0), goal and mirror drawn per task; +1 on the goal."""

    def __init__(self, num_envs: int = 1, size: int = 3, device: str = "cpu") -> None:
        super().__init__(device=device, batch_size=torch.Size([num_envs]))
        self.size = size
        cells = [(x, y) for x in range(size) for y in range(size) if (x, y) != (0, 0)]
        self.support = torch.tensor([[x, y, m] for x, y in cells for m in (0, 1)]).float()
        self._position = torch.zeros(num_envs, 2, dtype=torch.long)
        self._task = torch.zeros(num_envs, 3)
        shape = self.batch_size
        flag = Categorical(2, shape=(*shape, 1), dtype=torch.bool)
        self.observation_spec = Composite(
            observation=Bounded(0, size - 1, shape=(*shape, 2)),
            task=Bounded(0, size - 1, shape=(*shape, 3)),
            shape=shape,
        )
        self.action_spec = Categorical(5, shape=shape)
        self.reward_spec = Unbounded(shape=(*shape, 1))
        self.done_spec = Composite(done=flag, terminated=flag.clone(), shape=shape)

    @property
    def task_dim(self) -> int:
        return 3

    def sample_tasks(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        index = torch.randint(len(self.support), (num,), generator=generator)
        return self.support[index]

    def task_support(self) -> torch.Tensor:
        return self.support

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        mask, task = self._reset_mask_and_task(tensordict)
        mask = torch.ones(self.batch_size, dtype=torch.bool) if mask is None else mask
        self._position[mask] = 0
        if task is not None:
            self._task[mask] = task[mask]
        return self._output()

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = tensordict["action"].long()
        mirrored = self._task[:, 2] > 0.5
        move = torch.where(mirrored.unsqueeze(-1), MIRRORED[action], MOVES[action])
        self._position = (self._position + move).clamp(0, self.size - 1)
        on_goal = (self._position == self._task[:, :2].long()).all(-1, keepdim=True)
        out = self._output()
        out.set("reward", torch.where(on_goal, 1.0, -0.1))
        return out

    def _output(self) -> TensorDictBase:
        done = torch.zeros(*self.batch_size, 1, dtype=torch.bool)
        return self._task_output(self._position.float(), self._task.clone(), done)


def make_env(num_envs: int, device: str = "cpu", size: int = 3) -> WindyGridEnv:
    """The factory ``env.factory=windy_grid:make_env`` names."""
    return WindyGridEnv(num_envs=num_envs, size=size, device=device)
