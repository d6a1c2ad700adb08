"""The base class of the MuJoCo task families: batched gymnasium v5 simulators as a TaskEnv.

One class, :class:`MujocoTaskEnv`, holds ``num_envs`` gymnasium v5 environments and steps them
with a lean loop over ``env.unwrapped``: it writes the control, calls ``mujoco.mj_step`` with the
env's ``frame_skip`` (and ``mj_rnePostConstraint`` where contact forces are read, as gymnasium
does) and reads the v5 observation with the env's own ``_get_obs``. The simulators run in process
by default, or in worker processes (``workers=k``, see
:mod:`~torchrl_bamdp.envs.mujoco.workers`). The dynamics, observations, reset
noise and the standard reward terms (control cost, contact cost, healthy reward) are gymnasium
v5's, computed by v5's own code with v5's constants except where a family states otherwise; each
family (:mod:`~torchrl_bamdp.envs.mujoco.families`) only adds its task term and its task
distribution.

Actions outside the bounds are clipped; NaN/inf actions or a wrong shape raise a ``ValueError``
naming the env. Reset noise comes from one numpy generator per env, spawned from the env seed.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import gymnasium
import mujoco
import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded

from torchrl_bamdp.envs.mujoco.workers import _SimulatorWorkers
from torchrl_bamdp.envs.task_env import TaskEnv

__all__ = ["KNOWN_MODEL_WARNINGS", "MujocoTaskEnv"]

#: MuJoCo compiler warnings about gymnasium's own XML files that a user cannot act on (HalfCheetah
#: v5 sets ``settotalmass``, deprecated in mujoco 3.x): printed once per simulator otherwise,
#: i.e. 16 times per env and again for every evaluation env, and appended to MUJOCO_LOG.TXT.
KNOWN_MODEL_WARNINGS = ("compiler attribute 'settotalmass' is deprecated",)


@contextmanager
def _known_model_warnings_silenced():
    """Drop :data:`KNOWN_MODEL_WARNINGS` while models compile; re-raise others as warnings."""
    previous = mujoco.get_mju_user_warning()

    def handler(message: str) -> None:
        if not any(known in message for known in KNOWN_MODEL_WARNINGS):
            warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)

    mujoco.set_mju_user_warning(handler)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


class MujocoTaskEnv(TaskEnv):
    """Base class of the batched MuJoCo task families (gymnasium v5 simulators).

    A family sets :attr:`gym_id` (and :attr:`gym_kwargs`, passed to ``gymnasium.make``),
    implements :meth:`sample_tasks`, :attr:`task_dim` and :meth:`_task_reward`, and may override
    :meth:`_position` (what the velocity is measured on; default ``qpos[0]``) and
    :meth:`_apply_task` (change the simulator per task, e.g. its physical parameters). These
    per-simulator hooks run wherever the simulators live: in this process, or in the worker
    processes (``workers >= 1``), each on its own instance of the family built with
    ``workers=0`` (and :meth:`_worker_kwargs`).

    Keys: ``observation`` (the v5 observation, float32), ``task``, ``action`` (``Bounded`` by the
    gymnasium action space), ``reward``, ``done``/``terminated`` (never true unless
    ``terminate_when_unhealthy``).

    Parameters
    ----------
    num_envs : int
        Number of simulators stepped together (the env's batch size).
    seed : int
        Seed of the per-env reset-noise generators (see :meth:`set_seed`) and of the tasks held
        before the first reset that brings one.
    terminate_when_unhealthy : bool
        End the inner episode (``terminated``) when v5's ``is_healthy`` is false, as the original
        AntDir, HumanoidDir and Walker envs do. Off by default (fixed-length tasks).
    gym_kwargs : mapping, optional
        Overrides of the family's ``gymnasium.make`` keyword arguments (e.g. reward weights).
    device : torch.device or str
        Device of the returned tensors (the simulators run on the CPU).
    workers : int
        ``0`` (default): step the simulators in this process. ``k`` in ``[1, num_envs]``: split
        them into ``k`` contiguous shards (sizes differ by at most one), each stepped by its own
        worker process, in parallel; the results are bit-identical to ``workers=0``. Worth it
        when the simulators, not the policy, dominate a step and CPU cores are free; the
        workers cost tens of microseconds per step (a pipe round trip) and a process start (the
        first env of a process also starts the fork server, which imports torch: seconds).
        With workers, :attr:`envs` is empty in this process; call :meth:`close` to stop them
        (garbage collection and interpreter exit also do).

    Attributes
    ----------
    envs : list
        The unwrapped gymnasium envs stepped in this process (empty with ``workers >= 1``).
    workers : int
        The number of worker processes (0: in process); see also :attr:`worker_pids`.

    Examples
    --------
    >>> from torchrl_bamdp.envs.mujoco import CheetahVelEnv
    >>> env = CheetahVelEnv(num_envs=2, seed=0)
    >>> td = env.reset()
    >>> td["observation"].shape, td["task"].shape
    (torch.Size([2, 17]), torch.Size([2, 1]))
    >>> env.rand_step(td)["next", "reward"].shape
    torch.Size([2, 1])

    The same env with its simulators in a worker process gives the same numbers:

    >>> local = CheetahVelEnv(num_envs=2, seed=1)
    >>> remote = CheetahVelEnv(num_envs=2, seed=1, workers=1)
    >>> torch.equal(remote.reset()["observation"], local.reset()["observation"])
    True
    >>> remote.close()
    """

    validates_actions = True  # its _step checks the values, with its own message

    #: gymnasium id of the simulator (a v5 MuJoCo env).
    gym_id: ClassVar[str] = ""
    #: Keyword arguments of ``gymnasium.make`` (reward weights, observation options).
    gym_kwargs: ClassVar[Mapping[str, Any]] = {}
    #: Size of :meth:`_position` (1: x; 2: xy).
    position_dim: ClassVar[int] = 1

    def __init__(
        self,
        num_envs: int = 1,
        seed: int = 0,
        terminate_when_unhealthy: bool = False,
        gym_kwargs: Mapping[str, Any] | None = None,
        device: torch.device | str = "cpu",
        workers: int = 0,
    ) -> None:
        if type(self).gym_id == "":
            raise TypeError("MujocoTaskEnv is abstract: use a task family such as CheetahVelEnv")
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1 (got {num_envs})")
        if isinstance(workers, bool) or not isinstance(workers, int | np.integer):
            raise ValueError(f"{type(self).__name__}: workers must be an integer (got {workers!r})")
        if not 0 <= workers <= num_envs:
            raise ValueError(
                f"{type(self).__name__}: workers must be in [0, num_envs] = [0, {num_envs}] "
                f"(got workers={workers}); 0 steps the simulators in this process"
            )
        super().__init__(device=device, batch_size=torch.Size([num_envs]))
        self.num_envs = num_envs
        self.workers = int(workers)
        self._simulator_workers: _SimulatorWorkers | None = None
        self.make_kwargs = {**type(self).gym_kwargs, **(gym_kwargs or {})}
        # With workers, one simulator here is enough to read the constants and specs.
        local = num_envs if self.workers == 0 else 1
        with _known_model_warnings_silenced():
            self.envs = [
                gymnasium.make(self.gym_id, **self.make_kwargs).unwrapped for _ in range(local)
            ]
        first = self.envs[0]
        # Not `frame_skip`: TorchRL would wrap an env with that attribute in a FrameSkipTransform.
        self.substeps = int(first.frame_skip)
        self.dt = float(first.dt)
        self.action_low = np.asarray(first.action_space.low, dtype=np.float64)
        self.action_high = np.asarray(first.action_space.high, dtype=np.float64)
        self.action_dim = int(self.action_low.shape[0])
        self.obs_dim = int(first.observation_space.shape[0])
        # Standard v5 terms, read from the env so that its own constants (or our overrides) hold.
        self.ctrl_cost_weight = float(first._ctrl_cost_weight)
        self.forward_reward_weight = float(getattr(first, "_forward_reward_weight", 1.0))
        self.has_healthy = hasattr(type(first), "is_healthy")
        self.healthy_weight = float(getattr(first, "_healthy_reward", 0.0))
        self.has_contact = hasattr(type(first), "contact_cost")
        self.terminate_when_unhealthy = bool(terminate_when_unhealthy)
        if self.terminate_when_unhealthy and not self.has_healthy:
            raise ValueError(
                f"{type(self).__name__}: terminate_when_unhealthy=True, but {self.gym_id} has "
                "no health condition"
            )

        self._on_envs_created()
        self._task = torch.zeros(num_envs, self.task_dim, device=self.device)
        self._task_np = np.zeros((num_envs, self.task_dim), dtype=np.float64)
        if self.workers == 0:
            self._obs = np.zeros((num_envs, self.obs_dim), dtype=np.float32)
        else:
            first.close()
            self.envs = []
            self._simulator_workers = _SimulatorWorkers(self, self.workers)
            # The workers write the observations straight into this shared array.
            self._obs = self._simulator_workers.arrays["obs"]
        self._set_seed(seed)
        # A task per env until a reset brings one (standalone use, ``check_env_specs``).
        self._set_tasks(
            range(num_envs),
            self.sample_tasks(num_envs, torch.Generator().manual_seed(int(seed))).cpu(),
        )
        self._make_specs()

    # -- specs -------------------------------------------------------------------------------
    def _make_specs(self) -> None:
        shape = self.batch_size
        n, d = self.num_envs, self.action_dim
        low = torch.as_tensor(self.action_low, dtype=torch.float32).expand(n, d)
        high = torch.as_tensor(self.action_high, dtype=torch.float32).expand(n, d)
        self.observation_spec = Composite(
            observation=Unbounded(shape=(*shape, self.obs_dim), device=self.device),
            task=Unbounded(shape=(*shape, self.task_dim), device=self.device),
            shape=shape,
        )
        self.action_spec = Bounded(low, high, shape=(n, d), device=self.device)
        self.reward_spec = Unbounded(shape=(*shape, 1), device=self.device)
        self.done_spec = Composite(
            done=Categorical(2, shape=(*shape, 1), dtype=torch.bool, device=self.device),
            terminated=Categorical(2, shape=(*shape, 1), dtype=torch.bool, device=self.device),
            shape=shape,
        )

    # -- family hooks ------------------------------------------------------------------------
    def _on_envs_created(self) -> None:
        """Read what the family needs from the simulators (before any task is set).

        Runs on :attr:`envs`: all simulators in process; with workers, one template simulator
        in the main process (for constants such as ``task_dim``) and each worker's shard there.
        """
        return None

    def _position(self, env: Any) -> np.ndarray | float:
        """What the velocity is measured on (default: the root x position ``qpos[0]``)."""
        return env.data.qpos[0]

    def _task_reward(
        self, velocity: np.ndarray, position: np.ndarray, task: np.ndarray
    ) -> np.ndarray:
        """The task term of the reward, ``[B]``, from ``[B, position_dim]`` velocities and
        positions (after the step) and the ``[B, task_dim]`` tasks."""
        raise NotImplementedError

    def _apply_task(self, index: int) -> None:
        """Make simulator ``index`` follow task ``self._task_np[index]`` (called at its resets)."""
        return None

    def _worker_kwargs(self) -> dict[str, Any]:
        """Keyword arguments (besides ``num_envs``/``workers``) that rebuild this family in a
        worker; a family with ``__init__`` options of its own adds them."""
        return {
            "terminate_when_unhealthy": self.terminate_when_unhealthy,
            "gym_kwargs": dict(self.make_kwargs),
        }

    # -- tasks -------------------------------------------------------------------------------
    def _set_tasks(self, indices: Any, tasks: torch.Tensor) -> None:
        index = torch.as_tensor(list(indices), dtype=torch.long)
        tasks = tasks.reshape(len(index), self.task_dim).to(torch.float32)
        self._task[index.to(self.device)] = tasks.to(self.device)
        self._task_np[index.numpy()] = tasks.cpu().double().numpy()

    @property
    def tasks(self) -> torch.Tensor:
        """The current ``[num_envs, task_dim]`` tasks (a copy)."""
        return self._task.clone()

    @property
    def worker_pids(self) -> tuple[int, ...]:
        """Process ids of the simulator workers (empty with ``workers=0`` or after close)."""
        pool = self._simulator_workers
        return () if pool is None else pool.pids

    # -- dynamics ----------------------------------------------------------------------------
    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        mask, task = self._reset_mask_and_task(tensordict)
        if mask is None:
            indices = list(range(self.num_envs))
        else:
            indices = mask.reshape(-1).nonzero().flatten().tolist()
        if task is not None and indices:
            task = task.reshape(self.num_envs, self.task_dim).cpu()
            self._set_tasks(indices, task[indices])
        if indices:
            index = np.asarray(indices, dtype=np.int64)
            if self.workers == 0:
                self._reset_simulators(index, self._task_np[index])
            else:
                self._running_workers().reset(index, self._task_np[index])
        done = torch.zeros(*self.batch_size, 1, dtype=torch.bool, device=self.device)
        return self._output(done)

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = self._validated_action(tensordict.get("action", None))
        if self.workers == 0:
            before, after, healthy, contact = self._simulate(action)
        else:
            before, after, healthy, contact = self._running_workers().step(action)
        n = self.num_envs
        velocity = (after - before) / self.dt
        reward = (
            self._task_reward(velocity, after, self._task_np)
            + self.healthy_weight * healthy
            - self.ctrl_cost_weight * np.square(action).sum(-1)
            - contact
        )
        terminated = ~healthy if self.terminate_when_unhealthy else np.zeros(n, dtype=bool)
        out = self._output(torch.from_numpy(terminated).reshape(n, 1).to(self.device))
        out.set("reward", torch.from_numpy(reward.astype(np.float32)).reshape(n, 1).to(self.device))
        return out

    # -- per-simulator work (in this process, or in a worker on its shard) -------------------
    def _simulate(
        self, action: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step every simulator of :attr:`envs` with its row of the clipped ``[B, A]`` action.

        Writes the observations into ``self._obs`` and returns the positions before and after
        (``[B, position_dim]``), v5's ``is_healthy`` (``[B]`` bool, all true for families without
        one) and v5's contact cost (``[B]``, zero without one).
        """
        n, pdim = len(self.envs), self.position_dim
        outputs = (np.empty((n, pdim)), np.empty((n, pdim)), np.ones(n, dtype=bool), np.zeros(n))
        self._simulate_range(action, 0, n, *outputs)
        return outputs

    def _simulate_range(
        self,
        action: np.ndarray,
        start: int,
        stop: int,
        before: np.ndarray,
        after: np.ndarray,
        healthy: np.ndarray,
        contact: np.ndarray,
    ) -> None:
        """:meth:`_simulate` for simulators ``start:stop`` only, into the given output rows.

        Simulators are independent, so any split of ``range(B)`` gives the same numbers
        (``benchmarks/collection_throughput.py`` steps shards of it in threads this way).
        """
        obs = self._obs
        # Looked up once, not per simulator: this loop is the hot path of MuJoCo collection.
        position, substeps, mj_step = self._position, self.substeps, mujoco.mj_step
        rne, has_healthy, envs = self.has_contact, self.has_healthy, self.envs
        for i in range(start, stop):
            env = envs[i]
            model, data = env.model, env.data
            before[i] = position(env)
            data.ctrl[:] = action[i]
            mj_step(model, data, nstep=substeps)
            if rne:  # contact forces (cfrc_ext) for the contact cost and the observation
                mujoco.mj_rnePostConstraint(model, data)
                contact[i] = env.contact_cost
            after[i] = position(env)
            obs[i] = env._get_obs()
            if has_healthy:
                healthy[i] = env.is_healthy

    def _reset_simulators(self, indices: np.ndarray, tasks: np.ndarray) -> None:
        """Put simulators ``indices`` (of :attr:`envs`) to a start state of ``tasks``.

        ``tasks`` (``[len(indices), task_dim]`` float64) is stored in ``self._task_np`` first,
        where :meth:`_apply_task` reads it; the start observations go into ``self._obs``.
        """
        self._task_np[indices] = tasks
        for i in indices.tolist():
            env = self.envs[i]
            self._apply_task(i)
            mujoco.mj_resetData(env.model, env.data)
            self._obs[i] = env.reset_model()

    def _seed_simulators(self, seeds: Sequence[np.random.SeedSequence]) -> None:
        """Give simulator ``i`` of :attr:`envs` the reset-noise generator of ``seeds[i]``."""
        for env, child in zip(self.envs, seeds, strict=True):
            env.np_random = np.random.Generator(np.random.PCG64(child))

    def _running_workers(self) -> _SimulatorWorkers:
        if self._simulator_workers is None:
            raise RuntimeError(f"{type(self).__name__} is closed: its simulator workers stopped")
        return self._simulator_workers

    def _validated_action(self, action: torch.Tensor | None) -> np.ndarray:
        """The ``[B, A]`` float64 numpy action, clipped to the bounds; ``ValueError`` if bad."""
        if action is None:
            raise KeyError(self._action_error("the tensordict has no 'action' entry"))
        if tuple(action.shape) != (self.num_envs, self.action_dim) or not (
            action.is_floating_point()
        ):
            raise ValueError(
                self._action_error(
                    f"invalid 'action' of shape {tuple(action.shape)} and dtype {action.dtype}"
                )
            )
        array = action.detach().to("cpu", torch.float64).numpy()
        if not np.isfinite(array).all():
            bad = np.flatnonzero(~np.isfinite(array).all(-1))
            raise ValueError(
                self._action_error(
                    f"non-finite (NaN/inf) 'action' in env(s) {bad[:5].tolist()}"
                    f"{' ...' if len(bad) > 5 else ''}"
                )
            )
        return np.clip(array, self.action_low, self.action_high)

    def _action_error(self, problem: str) -> str:
        """The message of a bad action (built only on errors: ``_step`` is the hot path)."""
        return (
            f"{type(self).__name__}.step: {problem}; expected a float tensor of shape "
            f"{(self.num_envs, self.action_dim)} with finite values in "
            f"[{self.action_low.min():g}, {self.action_high.max():g}] (values outside are "
            "clipped)"
        )

    def _output(self, terminated: torch.Tensor) -> TensorDictBase:
        return TensorDict(
            {
                "observation": torch.from_numpy(self._obs.copy()).to(self.device),
                "task": self._task.clone(),
                "done": terminated,
                "terminated": terminated.clone(),
            },
            batch_size=self.batch_size,
            device=self.device,
        )

    def _set_seed(self, seed: int | None) -> None:
        """Give every simulator its own reset-noise generator, spawned from ``seed``.

        Generator ``i`` belongs to env ``i`` wherever its simulator runs, so the reset noise
        does not depend on ``workers``.
        """
        children = np.random.SeedSequence(0 if seed is None else int(seed)).spawn(self.num_envs)
        if self.workers == 0:
            self._seed_simulators(children)
        else:
            self._running_workers().seed(children)

    def close(self, *, raise_if_closed: bool = True) -> None:
        """Close the simulators and stop the worker processes, if any (idempotent)."""
        for env in self.envs:
            env.close()
        pool = self._simulator_workers
        if pool is not None:
            # Keep the last observations but let go of the shared memory.
            self._obs = self._obs.copy()
            self._simulator_workers = None
            pool.close()
        super().close(raise_if_closed=raise_if_closed)
