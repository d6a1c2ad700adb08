"""The multi-episode BAMDP horizon, implemented once for every task family (DESIGN.md §2).

One task lasts ``H+ = episodes_per_task x episode_length`` steps. When an inner episode ends
(its time limit, or the task env's own ``terminated``) the agent is put back to a start state
*in the same task*: ``episode_done`` is ``True`` for that step, ``episode`` advances, and the
next observation is the start state. TorchRL's ``done`` fires only at the end of the BAMDP (with
``truncated=True``: a time limit, so value targets bootstrap), so a collector reset always means
"new task".

The state the transition really landed in is kept under its own key, :data:`TRUE_OBSERVATION`
(``("next", "true_observation")``): at an inner-episode end it is the true last state s_{t+1},
where ``("next", "observation")`` is already the next episode's start state; on every other step
the two are equal. The policy acts on ``observation``; what learns from transitions (the belief
encoder, the ELBO's decoders, RL2's memory) reads ``true_observation``, so a goal reached on the
last step of an episode is seen where it was reached.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite
from torchrl.envs import EnvBase

from torchrl_bamdp.envs.action_check import ActionCheck
from torchrl_bamdp.envs.task_env import TaskEnv

#: The values of ``BAMDPEnv(check_actions=...)``.
CHECK_ACTIONS = ("full", "shape", "off")
#: The values of ``BAMDPEnv(end=...)``: the end of a task is a time limit (``truncated``:
#: value targets bootstrap from the last state) or terminal (``terminated``: they do not).
BAMDP_ENDS = ("truncated", "terminated")

#: The observation a step really landed in, before any inner-episode reset (read it from the
#: next tensordict). One key for every step, not only for episode ends, so that consumers read
#: s_{t+1} without a mask. At a reset (and so at the root after ``step_mdp``) it is the start
#: observation.
TRUE_OBSERVATION = "true_observation"


class BAMDPEnv(EnvBase):
    """Wrap a :class:`~torchrl_bamdp.envs.task_env.TaskEnv` into a multi-episode BAMDP.

    Parameters
    ----------
    task_env : TaskEnv
        The batched task environment (resets to the task given in the reset tensordict).
    episode_length : int
        Steps per inner episode (the inner time limit).
    episodes_per_task : int
        Inner episodes per task (``k``); the BAMDP lasts ``k * episode_length`` steps unless the
        task env terminates inner episodes early.
    seed : int, optional
        Seed of the task-sampling generator (also settable with :meth:`set_seed`).
    fixed_tasks : torch.Tensor, optional
        ``[num_envs, task_dim]``: env ``i`` always gets task ``fixed_tasks[i]`` (test tasks
        covering a finite task distribution exactly); no task is sampled.
    end : {"truncated", "terminated"}
        How the last step of a task is flagged: ``truncated`` (default; a time limit, GAE
        bootstraps V of the last state) or ``terminated`` (no bootstrap: the original GridNavi,
        and the right choice when the time of the task is in the hyper-state, Pardo et al.).
        An inner termination of the last episode is ``terminated`` either way.
    check_actions : {"full", "shape", "off"}
        How every step's action is checked against the task env's action spec before the task
        env sees it (:class:`~torchrl_bamdp.envs.action_check.ActionCheck`): ``"full"`` shape,
        dtype and values (an index range, or finiteness; one host sync per step), ``"shape"``
        shape and dtype only (no sync), ``"off"`` nothing. Task envs that check their own
        actions (``TaskEnv.validates_actions``: GridNavi, point robot, MuJoCo) are not checked
        again; their own check reads the values only with ``"full"``
        (``TaskEnv.check_action_values``).
    sync_free : bool, optional
        Step and reset without host syncs (:mod:`torchrl_bamdp.host_sync`): inner-episode
        restarts and new tasks are written with ``torch.where`` for every env instead of being
        tested for (``restart.any()``) and written with boolean masks, and a new task is drawn
        for every env at each reset (the resetting ones keep theirs), so the task sequence
        differs from the default's. ``None`` (default): on for accelerator devices, off on the
        CPU, where reading a value costs nothing and skipping the work is faster. Pair it with
        ``check_actions="shape"`` (the value check is a sync by nature).

    Examples
    --------
    >>> from torchrl_bamdp.envs import GridNaviEnv
    >>> env = BAMDPEnv(GridNaviEnv(num_envs=2), episode_length=15, episodes_per_task=4, seed=0)
    >>> rollout = env.rollout(60, break_when_any_done=False)
    >>> rollout["next", "episode_done"].sum().item(), rollout["next", "done"].sum().item()
    (8, 2)

    At an inner-episode end the policy's next observation is the start state, and the true last
    state is kept:

    >>> ends = rollout["next", "episode_done"][..., 0] & ~rollout["next", "done"][..., 0]
    >>> bool((rollout["next", "observation"][ends] == 0).all())
    True
    >>> same = rollout["next", "true_observation"] == rollout["next", "observation"]
    >>> bool(same[~ends].all())
    True
    """

    def __init__(
        self,
        task_env: TaskEnv,
        episode_length: int,
        episodes_per_task: int,
        seed: int | None = None,
        fixed_tasks: torch.Tensor | None = None,
        check_actions: str = "full",
        end: str = "truncated",
        sync_free: bool | None = None,
    ) -> None:
        if end not in BAMDP_ENDS:
            raise ValueError(f"end must be one of {list(BAMDP_ENDS)} (got {end!r})")
        if check_actions not in CHECK_ACTIONS:
            raise ValueError(
                f"check_actions must be one of {list(CHECK_ACTIONS)} (got {check_actions!r})"
            )
        if not isinstance(task_env, TaskEnv):
            raise TypeError(
                f"task_env must be a TaskEnv (resets to the task it is given), got "
                f"{type(task_env).__name__}"
            )
        if episode_length < 1:
            raise ValueError(f"episode_length must be >= 1 (got {episode_length})")
        if episodes_per_task < 1:
            raise ValueError(f"episodes_per_task must be >= 1 (got {episodes_per_task})")
        super().__init__(device=task_env.device, batch_size=task_env.batch_size)
        self.task_env = task_env
        self.end = end
        self.sync_free = self.device.type != "cpu" if sync_free is None else bool(sync_free)
        task_env.sync_free = self.sync_free
        task_env.check_action_values = check_actions == "full"
        self.episode_length = int(episode_length)
        self.episodes_per_task = int(episodes_per_task)
        self.task_generator = torch.Generator()
        self.task_generator.manual_seed(0 if seed is None else int(seed))
        self.generator_state_before_last_reset = self.task_generator.get_state()
        n = task_env.batch_size.numel()
        self._step_in_episode = torch.zeros(n, dtype=torch.long, device=self.device)
        self._episode = torch.zeros(n, dtype=torch.long, device=self.device)
        self._task = torch.zeros(n, task_env.task_dim, device=self.device)
        self.fixed_tasks = None
        if fixed_tasks is not None:
            if tuple(fixed_tasks.shape) != (n, task_env.task_dim):
                raise ValueError(
                    f"fixed_tasks must have shape {(n, task_env.task_dim)} (num_envs, task_dim), "
                    f"got {tuple(fixed_tasks.shape)}"
                )
            self.fixed_tasks = fixed_tasks.to(self.device, torch.float32)
        self._make_specs()
        self.action_check: ActionCheck | None = None
        if check_actions != "off" and not task_env.validates_actions:
            self.action_check = ActionCheck(
                self.action_spec,
                owner=f"{type(task_env).__name__}.step (in BAMDPEnv)",
                values=check_actions == "full",
            )

    @property
    def horizon(self) -> int:
        """Maximum number of steps of one BAMDP (``H+``)."""
        return self.episode_length * self.episodes_per_task

    def _make_specs(self) -> None:
        shape = self.batch_size
        base = self.task_env
        obs_spec = base.observation_spec.clone()
        obs_spec[TRUE_OBSERVATION] = base.observation_spec["observation"].clone()
        obs_spec["episode"] = Bounded(
            0, self.episodes_per_task, shape=(*shape, 1), dtype=torch.long, device=self.device
        )
        # Steps already taken in the current inner episode (0 at a start state; episode_length
        # only in the final state of a task): time-aware policies (the Bayes-optimal one) read
        # it; learned agents may ignore it.
        obs_spec["step_in_episode"] = Bounded(
            0, self.episode_length, shape=(*shape, 1), dtype=torch.long, device=self.device
        )
        obs_spec["episode_done"] = Categorical(
            2, shape=(*shape, 1), dtype=torch.bool, device=self.device
        )
        self.observation_spec = obs_spec
        self.action_spec = base.action_spec.clone()
        self.reward_spec = base.reward_spec.clone()
        flag = Categorical(2, shape=(*shape, 1), dtype=torch.bool, device=self.device)
        self.done_spec = Composite(
            done=flag.clone(), terminated=flag.clone(), truncated=flag.clone(), shape=shape
        )

    def _set_seed(self, seed: int | None) -> None:
        self.task_generator.manual_seed(0 if seed is None else int(seed))
        self.task_env._set_seed(seed)

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        mask = None if tensordict is None else tensordict.get("_reset", None)
        n = self.batch_size.numel()
        if mask is None:
            mask = torch.ones(n, dtype=torch.bool, device=self.device)
        mask = mask.reshape(n).to(self.device)
        # Kept so that a checkpoint can rewind task sampling to just before the latest reset:
        # collectors reset finished envs *before* yielding a batch, so a run resumed from a
        # checkpoint redraws exactly the tasks the uninterrupted run went on with.
        self.generator_state_before_last_reset = self.task_generator.get_state()
        if self.fixed_tasks is not None:
            self._task = torch.where(mask.unsqueeze(-1), self.fixed_tasks, self._task)
        elif self.sync_free:
            # How many envs reset is a value on the device: draw for all, keep the reset ones'.
            new_tasks = self.task_env.sample_tasks(n, self.task_generator)
            self._task = torch.where(mask.unsqueeze(-1), new_tasks, self._task)
        else:
            num_new = int(mask.sum())
            if num_new:
                self._task[mask] = self.task_env.sample_tasks(num_new, self.task_generator)
        self._step_in_episode.masked_fill_(mask, 0)
        self._episode.masked_fill_(mask, 0)
        out = self._reset_task_env(mask)
        # Declared in the spec, so a reset writes it too: nothing has been landed in yet.
        out.set(TRUE_OBSERVATION, out.get("observation").clone())
        flags = torch.zeros(*self.batch_size, 1, dtype=torch.bool, device=self.device)
        out.update(
            {
                "episode": self._episode.reshape(*self.batch_size, 1).clone(),
                "step_in_episode": self._step_in_episode.reshape(*self.batch_size, 1).clone(),
                "episode_done": flags,
                "done": flags.clone(),
                "terminated": flags.clone(),
                "truncated": flags.clone(),
            }
        )
        return out

    def _reset_task_env(self, mask: torch.Tensor) -> TensorDictBase:
        """Put the masked envs back to a start state of their current task."""
        reset_td = TensorDict(
            {
                "_reset": mask.reshape(self.batch_size),
                "task": self._task.reshape(*self.batch_size, -1),
            },
            batch_size=self.batch_size,
            device=self.device,
        )
        return self.task_env._reset(reset_td)

    def close(self, *, raise_if_closed: bool = True) -> None:
        """Close this env and its task env (MuJoCo: simulators and worker processes)."""
        self.task_env.close(raise_if_closed=False)
        super().close(raise_if_closed=raise_if_closed)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        if self.action_check is not None:
            self.action_check(tensordict.get("action", None))
        out = self.task_env._step(tensordict)
        # Kept before an inner reset overwrites "observation" (a copy: the two must not alias).
        out.set(TRUE_OBSERVATION, out.get("observation").clone())
        n = self.batch_size.numel()
        inner_terminated = out.get("terminated").reshape(n)
        self._step_in_episode += 1
        episode_done = inner_terminated | (self._step_in_episode >= self.episode_length)
        self._episode += episode_done.long()
        task_done = episode_done & (self._episode >= self.episodes_per_task)
        restart = episode_done & ~task_done
        # Sync-free: every step resets the restarting envs (possibly none) by torch.where.
        if self.sync_free or bool(restart.any()):
            # Back to a start state in the same task; the next observation is that start state
            # (TRUE_OBSERVATION keeps the state landed in: the reset output has no such key).
            restarted = self._reset_task_env(restart)
            where = restart.reshape(self.batch_size)
            for key, value in restarted.items(include_nested=True, leaves_only=True):
                if key in ("done", "terminated", "truncated") or key not in out.keys(True, True):
                    continue
                # One mask entry per env, broadcast over all of the entry's own dims (an image
                # [B, C, H, W] as well as a vector [B, D]).
                mask = where.reshape(*self.batch_size, *(1,) * (value.ndim - self.batch_dims))
                out.set(key, torch.where(mask, value, out.get(key)))
            self._step_in_episode.masked_fill_(restart, 0)
        shape1 = (*self.batch_size, 1)
        terminated = task_done if self.end == "terminated" else task_done & inner_terminated
        out.update(
            {
                "episode": self._episode.reshape(shape1).clone(),
                "step_in_episode": self._step_in_episode.reshape(shape1).clone(),
                "episode_done": episode_done.reshape(shape1),
                "done": task_done.reshape(shape1),
                # Inner terminations are not BAMDP terminations; only a termination of the
                # last inner episode ends the task without bootstrapping, and so does the end
                # of every task with end="terminated".
                "terminated": terminated.reshape(shape1),
                "truncated": (task_done & ~terminated).reshape(shape1),
            }
        )
        return out
