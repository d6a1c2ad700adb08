"""The contract every task-distribution environment keeps (DESIGN.md §2, "Task").

A :class:`TaskEnv` is a batched TorchRL ``EnvBase`` that holds one task per batch element, has
no time limit of its own, and is reset *to the task given in the reset tensordict*. That single
rule is what lets :class:`~torchrl_bamdp.envs.bamdp.BAMDPEnv` implement the multi-episode
horizon once for every env family: it resets inner episodes with the current task and new
BAMDPs with freshly sampled ones.
"""

from __future__ import annotations

import abc

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.envs import EnvBase


class TaskEnv(EnvBase, abc.ABC):
    """Base class of batched task environments.

    Subclasses implement :meth:`sample_tasks`, :attr:`task_dim`, ``_reset`` (honouring the
    optional ``"_reset"`` mask and ``"task"`` entry, see :meth:`_reset_mask_and_task`) and
    ``_step``. They write the true task under ``"task"`` in every output.

    Examples
    --------
    >>> from torchrl_bamdp.envs import GridNaviEnv
    >>> env = GridNaviEnv(num_envs=4)
    >>> tasks = env.sample_tasks(4, torch.Generator().manual_seed(0))
    >>> tasks.shape
    torch.Size([4, 2])
    """

    #: Whether ``_step`` checks the action's values itself (GridNavi, point robot, MuJoCo do,
    #: with family-specific messages); :class:`~torchrl_bamdp.envs.bamdp.BAMDPEnv` then does
    #: not check them again. A user's env leaves it ``False`` and gets BAMDPEnv's spec check.
    validates_actions: bool = False
    #: Whether such an env's own check reads the action's *values* (range, finiteness: one host
    #: sync per step) or only its shape and dtype (no sync). :class:`BAMDPEnv` sets it from its
    #: ``check_actions`` (``"full"``: values too).
    check_action_values: bool = True
    #: Whether resets and steps must avoid host syncs (no test of a tensor's value in Python,
    #: no boolean-mask indexing): set by :class:`BAMDPEnv` (``sync_free``), read by
    #: :meth:`_reset_mask_and_task`. Pure-torch families are written without syncs anyway.
    sync_free: bool = False
    #: The name of the task distribution it samples (:mod:`torchrl_bamdp.task_distributions`;
    #: ``all``: the family's one distribution). Families that declare several set it from
    #: their ``tasks`` option.
    task_distribution: str = "all"

    @abc.abstractmethod
    def sample_tasks(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw ``num`` tasks from the task distribution as a ``[num, task_dim]`` float tensor.

        Parameters
        ----------
        num : int
            Number of tasks.
        generator : torch.Generator, optional
            A CPU generator; the same generator state gives the same tasks on any device.
        """

    @property
    @abc.abstractmethod
    def task_dim(self) -> int:
        """Size of the last dimension of ``"task"``."""

    def task_support(self) -> torch.Tensor | None:
        """All tasks of a finite, uniform task distribution (``[num_tasks, task_dim]``), or
        ``None`` for continuous ones. Evaluation uses it to cover every task equally often."""
        return None

    def _reset_mask_and_task(
        self, tensordict: TensorDictBase | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Read the partial-reset mask (``[B]`` bool or ``None`` for all) and the task to use.

        A mask of all ``True`` reads as ``None`` (a full reset), except with :attr:`sync_free`,
        where finding that out would sync; a masked reset must then also handle all-true masks.
        """
        if tensordict is None:
            return None, None
        mask = tensordict.get("_reset", None)
        if mask is not None:
            mask = mask.reshape(self.batch_size).to(self.device)
            if not self.sync_free and bool(mask.all()):
                mask = None
        task = tensordict.get("task", None)
        if task is not None:
            task = task.to(self.device)
        return mask, task

    def _task_output(
        self, observation: torch.Tensor, task: torch.Tensor, done: torch.Tensor
    ) -> TensorDictBase:
        """The tensordict a reset or step returns: observation, true task, done/terminated."""
        return TensorDict(
            {"observation": observation, "task": task, "done": done, "terminated": done.clone()},
            batch_size=self.batch_size,
            device=self.device,
        )

    def _set_seed(self, seed: int | None) -> None:
        # Deterministic dynamics by default: task randomness lives in the BAMDP wrapper's
        # generator. Families with stochastic resets (MuJoCo) override this.
        return None
