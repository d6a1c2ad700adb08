"""The MuJoCo task families of VariBAD on gymnasium v5, as batched TaskEnvs.

One class, :class:`MujocoTaskEnv`, holds ``num_envs`` gymnasium v5 environments and steps them
with a lean loop over ``env.unwrapped``: it writes the control, calls ``mujoco.mj_step`` with the
env's ``frame_skip`` (and ``mj_rnePostConstraint`` where contact forces are read, as gymnasium
does) and reads the v5 observation with the env's own ``_get_obs``. The simulators run in process
by default, or in worker processes (``workers=k``, see below). The dynamics, observations, reset
noise and the standard reward terms (control cost, contact cost, healthy reward) are gymnasium
v5's, computed by v5's own code with v5's constants except where a family states otherwise; each
family only adds its task term and its task distribution:

========================  ======================================================================
family                    task, task reward (``v`` = velocity from positions before/after / dt)
========================  ======================================================================
``cheetah_vel``           ``v* ~ U[0, 3]``; ``-|v_x - v*|``; ctrl cost ``0.05 * |a|^2``
``cheetah_dir``           ``d`` uniform in ``{-1, +1}``; ``d * v_x``; ctrl cost ``0.05 * |a|^2``
``ant_dir``               ``d`` uniform in ``{-1, +1}`` (backward/forward along x); ``d * v_x``
                          of the torso; v5 terms: ctrl ``0.5|a|^2``, contact ``5e-4``, healthy 1
``ant_goal``              goal ``r (cos t, sin t)``, ``t ~ U[0, 2pi)``, ``r = 3 sqrt(U[0, 1])``
                          (uniform on the disc of radius 3); ``-||xy - goal||_1`` of the torso
                          after the step; ctrl ``0.1|a|^2``, contact ``5e-4``, healthy 0
``walker_rand_params``    exponents ``u ~ U[-3, 3]`` per entry of body_mass, body_inertia,
                          dof_damping, geom_friction; model value = default * base^u (bases
                          1.5, 1.5, 1.3, 1.5); v5 reward ``v_x + healthy 1 - 1e-3|a|^2``
``humanoid_dir``          angle ``t ~ U[0, 2pi)``; ``1.25 * v_com . (cos t, sin t)`` (mass-centre
                          velocity); v5 terms: ctrl ``0.1|a|^2``, contact, healthy 5
========================  ======================================================================

These are the original VariBAD task distributions and reward constants (``environments/mujoco``
of lmzintgraf/varibad) on gymnasium v5's models (the original used older gym XML files), with
these deliberate differences, each documented in its class:

* ``ant_dir`` is true backward/forward; the original uses +-1 as an *angle* (about +-57 deg);
* no family terminates inner episodes by default (``terminate_when_unhealthy=False``; the
  original ends AntDir, HumanoidDir and Walker episodes when unhealthy), so every task lasts
  exactly ``episodes_per_task x episode_length`` steps, as the trainer's whole-task batches need.
  When unhealthy and not terminating, v5's healthy reward is 0 for that step;
* actions are clipped to the action bounds before the control cost (the simulator clips the
  control to the same range); HumanoidDir keeps v5's ``[-0.4, 0.4]`` bounds (the original
  rescales ``[-1, 1]`` to them);
* walker_rand_params calls ``mj_setConst`` after changing the parameters.

Actions outside the bounds are clipped; NaN/inf actions or a wrong shape raise a ``ValueError``
naming the env. Reset noise comes from one numpy generator per env, spawned from the env seed.

Worker processes
----------------
With ``workers=k >= 1`` the ``num_envs`` simulators are split into ``k`` contiguous shards, each
owned by one worker process, started from multiprocessing's fork server (``spawn`` where there is
none; never a plain ``fork`` of a process running torch threads). Workers are daemons and also
exit when their pipe to the main process closes or their parent dies. The main process keeps the
specs, the tasks, the action checks and the vectorised reward; a worker only runs the
per-simulator loop (:meth:`MujocoTaskEnv._simulate`, :meth:`MujocoTaskEnv._reset_simulators`) on
an instance of the same family built with ``workers=0``. Actions and results go through one
shared memory block; a one-byte message per worker and step starts the shards together. Every
simulator keeps the reset-noise generator of its *global* index, so observations, rewards and
done flags are bit-identical for every ``workers``. An exception in a worker is raised in the
main process as a ``RuntimeError`` with the worker's traceback; :meth:`MujocoTaskEnv.close` (or
garbage collection, or interpreter exit) stops the workers. As with any ``spawn``/``forkserver``
process, a script that builds such an env must guard its entry point with
``if __name__ == "__main__":``.
"""

from __future__ import annotations

import math
import mmap
import multiprocessing
import os
import pickle
import signal
import sys
import tempfile
import time
import traceback
import warnings
import weakref
from collections.abc import Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any, ClassVar

import gymnasium
import mujoco
import numpy as np
import torch
from gymnasium.envs.mujoco.humanoid_v5 import mass_center
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded

from torchrl_bamdp.envs.task_env import TaskEnv

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
        before = np.empty((n, pdim))
        after = np.empty((n, pdim))
        healthy = np.ones(n, dtype=bool)
        contact = np.zeros(n)
        obs = self._obs
        # Looked up once, not per simulator: this loop is the hot path of MuJoCo collection.
        position, substeps, mj_step = self._position, self.substeps, mujoco.mj_step
        rne, has_healthy = self.has_contact, self.has_healthy
        for i, env in enumerate(self.envs):
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
        return before, after, healthy, contact

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


# -- worker processes ----------------------------------------------------------------------------
#: The step command: a single byte, not a pickle, as it is sent to every worker at every step.
_STEP = b"s"
#: How often (seconds) an idle worker checks that the main process is still alive.
_PARENT_CHECK_S = 1.0
#: How long :meth:`_SimulatorWorkers.close` waits for the workers to exit before terminating them.
_JOIN_TIMEOUT_S = 5.0


def _worker_context() -> multiprocessing.context.BaseContext:
    """The ``forkserver`` context (``spawn`` where there is none), preloading this module.

    Not ``fork``: forking a process that runs torch threads can deadlock the child. The fork
    server is a fresh process that imports this module (torch, MuJoCo) once, when it starts;
    every worker is then forked from it in milliseconds instead of importing torch anew (seconds
    with ``spawn``). The modules others asked the server to preload are kept.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    from multiprocessing import forkserver  # POSIX only

    context = multiprocessing.get_context("forkserver")
    # No public getter: read the list set_forkserver_preload keeps (its default is __main__).
    server = getattr(forkserver, "_forkserver", None)
    preload = list(getattr(server, "_preload_modules", None) or ["__main__"])
    if __name__ not in preload:
        # Only takes effect if the server is not running yet; else workers import us themselves.
        context.set_forkserver_preload([*preload, __name__])
    return context


def _shared_layout(env: MujocoTaskEnv) -> list[tuple[str, tuple[int, ...], str]]:
    """``(name, shape, dtype)`` of every array the main process and the workers share."""
    n, pdim = env.num_envs, env.position_dim
    return [
        ("action", (n, env.action_dim), "float64"),
        ("before", (n, pdim), "float64"),
        ("after", (n, pdim), "float64"),
        ("contact", (n,), "float64"),
        ("obs", (n, env.obs_dim), "float32"),
        ("healthy", (n,), "bool"),
    ]


def _shared_arrays(
    buffer: Any, layout: list[tuple[str, tuple[int, ...], str]]
) -> dict[str, np.ndarray]:
    """Numpy views of ``layout`` on ``buffer``, each at an 8-byte aligned offset."""
    arrays, offset = {}, 0
    for name, shape, dtype in layout:
        arrays[name] = np.ndarray(shape, np.dtype(dtype), buffer=buffer, offset=offset)
        offset += -(-arrays[name].nbytes // 8) * 8
    return arrays


def _shared_size(layout: list[tuple[str, tuple[int, ...], str]]) -> int:
    return sum(
        -(-int(np.prod(shape)) * np.dtype(dtype).itemsize // 8) * 8 for _, shape, dtype in layout
    )


def _error_reply(exc: BaseException) -> bytes:
    """The worker's reply to a failed command: the error line and the traceback text."""
    return pickle.dumps((f"{type(exc).__name__}: {exc}", traceback.format_exc()))


def _serve(
    conn: Any,
    family: type[MujocoTaskEnv],
    kwargs: dict[str, Any],
    path: str,
    layout: list[tuple[str, tuple[int, ...], str]],
    start: int,
    stop: int,
) -> None:
    """The loop of one simulator worker: owns envs ``start:stop`` of the main env."""
    env = None
    parent = os.getppid()  # the main process (spawn) or the fork server
    try:
        try:
            with open(path, "r+b") as file:
                memory = mmap.mmap(file.fileno(), 0)
            arrays = {name: a[start:stop] for name, a in _shared_arrays(memory, layout).items()}
            env = family(num_envs=stop - start, workers=0, **kwargs)
            env._obs = arrays["obs"]  # observations go straight to the main process
        except Exception as exc:
            conn.send_bytes(_error_reply(exc))
            return
        conn.send_bytes(b"")
        action, results = (
            arrays["action"],
            [arrays[k] for k in ("before", "after", "healthy", "contact")],
        )
        while True:
            # Wake up now and then: if the main process died while another process still holds
            # its end of the pipe (so that no EOF comes), we notice the new parent id.
            while not conn.poll(_PARENT_CHECK_S):
                if os.getppid() != parent:
                    return
            try:
                message = conn.recv_bytes()
            except (EOFError, OSError):  # the main process closed the pipe or died
                return
            try:
                if message == _STEP:
                    for shared, value in zip(results, env._simulate(action), strict=True):
                        shared[...] = value
                else:
                    command, args = pickle.loads(message)
                    if command == "close":
                        return
                    if command == "reset":
                        env._reset_simulators(*args)
                    elif command == "seed":
                        env._seed_simulators(args)
                    else:
                        raise ValueError(f"unknown worker command {command!r}")
                reply = b""
            except Exception as exc:
                reply = _error_reply(exc)
            conn.send_bytes(reply)
    finally:
        if env is not None:
            env.close()
        conn.close()


def _worker_main(*args: Any) -> None:
    """Entry point of a simulator worker process (arguments: those of :func:`_serve`)."""
    # Ctrl-C goes to the whole process group: the main process handles it and stops us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # MuJoCo is single-threaded; torch threads would only compete with the other processes.
    torch.set_num_threads(1)
    code = 1
    try:
        _serve(*args)
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        # Skip the interpreter teardown (about a second with torch loaded, which close() would
        # wait for): the simulators are closed and the shared memory goes with the process.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _stop_workers(conns: list[Any], processes: list[Any], path: str) -> None:
    """Stop the workers (politely, then by force) and remove the shared-memory file.

    A module function, not a method: :class:`weakref.finalize` must not hold the pool alive.
    """
    close = pickle.dumps(("close", None))
    for conn in conns:
        with suppress(OSError):  # already dead
            conn.send_bytes(close)
    deadline = time.monotonic() + _JOIN_TIMEOUT_S
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.terminate()
            process.join(1.0)
        if process.is_alive():
            process.kill()
            process.join(1.0)
    for conn in conns:
        conn.close()
    with suppress(FileNotFoundError):  # unlinked once the workers had opened it
        os.unlink(path)


class _SimulatorWorkers:
    """The worker processes that own the simulators of one :class:`MujocoTaskEnv`.

    Worker ``w`` owns the contiguous envs ``bounds[w]``. Actions and results live in one shared
    memory block (a file in ``/dev/shm`` where it exists, removed as soon as every worker has
    mapped it: once the env is built, nothing is left behind even if the main process is
    killed); commands go through one pipe per worker. Every command is sent to all its workers
    before any reply is awaited, so the shards run in parallel.
    """

    def __init__(self, env: MujocoTaskEnv, workers: int) -> None:
        n = env.num_envs
        sizes = [n // workers + (w < n % workers) for w in range(workers)]
        starts = np.cumsum([0, *sizes]).tolist()
        self.bounds = [(starts[w], starts[w + 1]) for w in range(workers)]
        self.name = type(env).__name__
        layout = _shared_layout(env)
        size = _shared_size(layout)
        folder = "/dev/shm" if os.path.isdir("/dev/shm") else None
        fd, path = tempfile.mkstemp(prefix="torchrl_bamdp_mujoco_", dir=folder)
        try:
            try:
                os.ftruncate(fd, size)
                memory = mmap.mmap(fd, size)
            finally:
                os.close(fd)
            # Views on an mmap that is never closed explicitly: it is unmapped when the last view
            # goes, so no view outlives its memory and closing never fails on exported buffers.
            self.arrays = _shared_arrays(memory, layout)
            self._conns: list[Any] = []
            self._processes: list[Any] = []
            self._pending = [False] * workers
            self._finalizer = weakref.finalize(
                self, _stop_workers, self._conns, self._processes, path
            )
            try:
                self._start(env, _worker_context(), layout, path)
            except BaseException:
                self.close()
                raise
        finally:
            with suppress(FileNotFoundError):
                os.unlink(path)  # every worker has mapped it (or failed)

    def _start(self, env: MujocoTaskEnv, context: Any, layout: list, path: str) -> None:
        """Start one worker per shard, then wait until every one has built its simulators."""
        for w, (start, stop) in enumerate(self.bounds):
            parent_end, child_end = context.Pipe()
            process = context.Process(
                target=_worker_main,
                args=(child_end, type(env), env._worker_kwargs(), path, layout, start, stop),
                name=f"{self.name}-worker-{w}",
                daemon=True,
            )
            process.start()
            # Only the worker holds its end now, so its death reads as EOF here.
            child_end.close()
            self._conns.append(parent_end)
            self._processes.append(process)
            self._pending[w] = True  # its "ready" reply
        self._collect(range(len(self.bounds)), "start")

    @property
    def pids(self) -> tuple[int, ...]:
        return tuple(p.pid for p in self._processes) if self._finalizer.alive else ()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step every shard with ``action``; the results are views of the shared memory, valid
        until the next command."""
        self._drain()
        self.arrays["action"][...] = action
        self._send_all({w: _STEP for w in range(len(self._conns))}, "step")
        a = self.arrays
        return a["before"], a["after"], a["healthy"], a["contact"]

    def reset(self, indices: np.ndarray, tasks: np.ndarray) -> None:
        """Reset envs ``indices`` (global, sorted) to ``tasks``; only their workers take part."""
        messages = {}
        for w, (start, stop) in enumerate(self.bounds):
            mine = (indices >= start) & (indices < stop)
            if mine.any():
                messages[w] = pickle.dumps(("reset", (indices[mine] - start, tasks[mine])))
        self._drain()
        self._send_all(messages, "reset")

    def seed(self, seeds: Sequence[np.random.SeedSequence]) -> None:
        """Give env ``i`` the reset-noise generator of ``seeds[i]``."""
        messages = {
            w: pickle.dumps(("seed", list(seeds[start:stop])))
            for w, (start, stop) in enumerate(self.bounds)
        }
        self._drain()
        self._send_all(messages, "seed")

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        self._finalizer()

    def _send_all(self, messages: dict[int, bytes], command: str) -> None:
        if not self._finalizer.alive:
            raise RuntimeError(f"{self.name} is closed: its simulator workers stopped")
        for w, message in messages.items():
            try:
                self._conns[w].send_bytes(message)
            except OSError:
                raise self._died(w, command) from None
            self._pending[w] = True
        self._collect(messages, command)

    def _collect(self, workers: Any, command: str) -> None:
        """Wait for the replies of ``workers``; raise the first error after reading them all (so
        that every pipe stays in step)."""
        errors = []
        for w in workers:
            try:
                reply = self._conns[w].recv_bytes()
            except (EOFError, OSError):
                self._pending[w] = False
                errors.append(self._died(w, command))
                continue
            self._pending[w] = False
            if reply:
                line, worker_traceback = pickle.loads(reply)
                start, stop = self.bounds[w]
                errors.append(
                    RuntimeError(
                        f"{self.name}: simulator worker {w} (envs {start}..{stop - 1}) failed "
                        f"during {command}: {line}\n\nTraceback in the worker:\n{worker_traceback}"
                    )
                )
        if errors:
            raise errors[0]

    def _drain(self) -> None:
        """Read replies left unread by an interrupted command (e.g. KeyboardInterrupt)."""
        for w, pending in enumerate(self._pending):
            if pending:
                with suppress(EOFError, OSError):
                    self._conns[w].recv_bytes()
                self._pending[w] = False

    def _died(self, w: int, command: str) -> RuntimeError:
        process = self._processes[w]
        process.join(1.0)
        hint = (
            " (at start: a script that builds workers must guard its entry point with "
            "`if __name__ == '__main__':`)"
            if command == "start"
            else ""
        )
        return RuntimeError(
            f"{self.name}: simulator worker {w} exited (exit code {process.exitcode}) during "
            f"{command}{hint}"
        )


# -- HalfCheetah ---------------------------------------------------------------------------------
class _CheetahTaskEnv(MujocoTaskEnv):
    # VariBAD's cheetah cost: 0.5 * 1e-1 * sum(a^2) (v5 default: 0.1).
    gym_id = "HalfCheetah-v5"
    gym_kwargs: ClassVar[Mapping[str, Any]] = {"ctrl_cost_weight": 0.05}


class CheetahVelEnv(_CheetahTaskEnv):
    """HalfCheetah with a target velocity ``v* ~ U[0, 3]`` (task ``[v*]``).

    Reward ``-|v_x - v*| - 0.05 * |a|^2`` with ``v_x`` the root x velocity
    (``(x_after - x_before) / dt``, as v5); no termination. Observation: v5's 17 dims.

    Examples
    --------
    >>> env = CheetahVelEnv(num_envs=2)
    >>> env.sample_tasks(3, torch.Generator().manual_seed(0)).shape
    torch.Size([3, 1])
    """

    max_velocity: ClassVar[float] = 3.0

    @property
    def task_dim(self) -> int:
        return 1

    def sample_tasks(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return (torch.rand(num, 1, generator=generator) * self.max_velocity).to(self.device)

    def _task_reward(
        self, velocity: np.ndarray, position: np.ndarray, task: np.ndarray
    ) -> np.ndarray:
        return -np.abs(velocity[:, 0] - task[:, 0])


class _DirectionMixin:
    """Tasks ``d`` uniform in ``{-1, +1}`` (a finite task set, usable for stratified eval)."""

    @property
    def task_dim(self) -> int:
        return 1

    def sample_tasks(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        sign = torch.randint(0, 2, (num, 1), generator=generator).float() * 2.0 - 1.0
        return sign.to(self.device)

    def task_support(self) -> torch.Tensor:
        return torch.tensor([[-1.0], [1.0]], device=self.device)

    def _task_reward(
        self, velocity: np.ndarray, position: np.ndarray, task: np.ndarray
    ) -> np.ndarray:
        return task[:, 0] * velocity[:, 0]


class CheetahDirEnv(_DirectionMixin, _CheetahTaskEnv):
    """HalfCheetah running backward (``d = -1``) or forward (``d = +1``), ``d`` uniform.

    Reward ``d * v_x - 0.05 * |a|^2``; no termination. Observation: v5's 17 dims.

    Examples
    --------
    >>> env = CheetahDirEnv(num_envs=2)
    >>> env.task_support().flatten().tolist()
    [-1.0, 1.0]
    """


# -- Ant ---------------------------------------------------------------------------------------
class _AntTaskEnv(MujocoTaskEnv):
    gym_id = "Ant-v5"
    position_dim = 2

    def _on_envs_created(self) -> None:
        # v5 measures the velocity on its main body (the torso).
        self._body = int(self.envs[0].data.body(self.envs[0]._main_body).id)

    def _position(self, env: Any) -> np.ndarray:
        return env.data.xpos[self._body, :2]


class AntDirEnv(_DirectionMixin, _AntTaskEnv):
    """Ant running backward (``d = -1``) or forward (``d = +1``) along x, ``d`` uniform.

    Reward (v5 terms, which equal the original AntDir's): ``d * v_x + 1 * healthy
    - 0.5 * |a|^2 - 5e-4 * |clip(cfrc_ext, -1, 1)|^2`` with ``v_x`` the torso x velocity.
    The original VariBAD AntDir uses ``d`` as an *angle* (direction ``(cos d, sin d)``, about
    +-57 degrees) although described as forward/backward; we use true forward/backward. No
    termination by default (the original terminates when the torso height leaves [0.2, 1]).
    Observation: v5's 105 dims (no xy, with contact forces).

    Examples
    --------
    >>> env = AntDirEnv(num_envs=2)
    >>> env.reset()["observation"].shape
    torch.Size([2, 105])
    """


class AntGoalEnv(_AntTaskEnv):
    """Ant walking to a goal uniform on the disc of radius 3.

    Goal ``r (cos t, sin t)``, ``t ~ U[0, 2pi)``, ``r = 3 sqrt(u)``, ``u ~ U[0, 1]`` (task
    ``[gx, gy]``). Reward (original AntGoal): ``-||xy - goal||_1 - 0.1 * |a|^2
    - 5e-4 * |clip(cfrc_ext, -1, 1)|^2`` with ``xy`` the torso position after the step, no
    survive reward and no termination. Observation: v5's with the xy position included
    (``exclude_current_positions_from_observation=False``, 107 dims), as the original
    includes the full ``qpos``: the agent must know where it is to find the goal.

    Examples
    --------
    >>> env = AntGoalEnv(num_envs=2)
    >>> bool((env.sample_tasks(100).norm(dim=-1) <= 3).all())
    True
    """

    gym_kwargs: ClassVar[Mapping[str, Any]] = {
        "ctrl_cost_weight": 0.1,
        "contact_cost_weight": 5e-4,
        "healthy_reward": 0.0,
        "exclude_current_positions_from_observation": False,
    }
    goal_radius: ClassVar[float] = 3.0

    @property
    def task_dim(self) -> int:
        return 2

    def sample_tasks(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        u = torch.rand(num, 2, generator=generator)
        angle = u[:, 0] * (2.0 * math.pi)
        radius = self.goal_radius * u[:, 1].sqrt()
        goal = torch.stack([radius * angle.cos(), radius * angle.sin()], -1)
        return goal.to(self.device)

    def _task_reward(
        self, velocity: np.ndarray, position: np.ndarray, task: np.ndarray
    ) -> np.ndarray:
        return -np.abs(position - task).sum(-1)


# -- Walker2d with random physical parameters -------------------------------------------------
class WalkerRandParamsEnv(MujocoTaskEnv):
    """Walker2d whose physical parameters are drawn per task ("rand params").

    For every entry of ``body_mass`` (8), ``body_inertia`` (8 x 3), ``dof_damping`` (9) and
    ``geom_friction`` (8 x 3) an exponent ``u ~ U[-3, 3]`` is drawn and the model value is set to
    ``default * base^u``, with base 1.5 (1.3 for ``dof_damping``), as the original
    ``RandomEnv``. The task is the flat vector of exponents (65 values, in that order). At every
    reset of an env (new task *or* inner episode) its model is rebuilt from the saved defaults
    and the task's scales, then ``mj_setConst`` recomputes the derived constants (the original
    only overwrote the arrays). Reward (v5, equal to the original's):
    ``v_x + 1 * healthy - 1e-3 * |a|^2``; no termination by default (the original terminates
    when unhealthy). Observation: v5's 17 dims (velocities clipped to +-10).

    Examples
    --------
    >>> env = WalkerRandParamsEnv(num_envs=2)
    >>> env.task_dim
    65
    """

    gym_id = "Walker2d-v5"
    #: (model field, base of the per-entry multiplier base^u)
    RAND_PARAMS: ClassVar[tuple[tuple[str, float], ...]] = (
        ("body_mass", 1.5),
        ("body_inertia", 1.5),
        ("dof_damping", 1.3),
        ("geom_friction", 1.5),
    )
    log_scale_limit: ClassVar[float] = 3.0

    def _on_envs_created(self) -> None:
        model = self.envs[0].model
        self._param_shapes = [getattr(model, name).shape for name, _ in self.RAND_PARAMS]
        self._task_dim = int(sum(int(np.prod(s)) for s in self._param_shapes))
        #: Per env, the model's own parameter values: every task scales these.
        self.default_params = [
            {name: getattr(env.model, name).copy() for name, _ in self.RAND_PARAMS}
            for env in self.envs
        ]

    @property
    def task_dim(self) -> int:
        return self._task_dim

    def sample_tasks(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        u = torch.rand(num, self.task_dim, generator=generator, dtype=torch.float64)
        return ((u * 2.0 - 1.0) * self.log_scale_limit).float().to(self.device)

    def scales(self, task: torch.Tensor | np.ndarray) -> dict[str, np.ndarray]:
        """The multipliers ``base^u`` of one task, per model field (shaped like the field)."""
        task = np.asarray(task.cpu() if isinstance(task, torch.Tensor) else task, np.float64)
        out, start = {}, 0
        for (name, base), shape in zip(self.RAND_PARAMS, self._param_shapes, strict=True):
            size = int(np.prod(shape))
            out[name] = np.power(base, task[start : start + size]).reshape(shape)
            start += size
        return out

    def _apply_task(self, index: int) -> None:
        env = self.envs[index]
        defaults = self.default_params[index]
        for name, scale in self.scales(self._task_np[index]).items():
            getattr(env.model, name)[:] = defaults[name] * scale
        mujoco.mj_setConst(env.model, env.data)

    def _task_reward(
        self, velocity: np.ndarray, position: np.ndarray, task: np.ndarray
    ) -> np.ndarray:
        return velocity[:, 0]


# -- Humanoid ----------------------------------------------------------------------------------
class HumanoidDirEnv(MujocoTaskEnv):
    """Humanoid running in a direction at angle ``t ~ U[0, 2pi)`` (task ``[t]``).

    Reward (v5 terms; the original HumanoidDir, after PEARL, uses the same constants):
    ``1.25 * v . (cos t, sin t) + 5 * healthy - 0.1 * |a|^2 - min(5e-7 * |cfrc_ext|^2, 10)``
    with ``v`` the xy velocity of the mass centre. Actions are v5's ``[-0.4, 0.4]^17`` (the
    original rescales ``[-1, 1]`` to it). No termination by default (the original terminates
    when the torso height leaves (1, 2)). Observation: v5's 348 dims.

    Examples
    --------
    >>> env = HumanoidDirEnv(num_envs=1)
    >>> env.action_spec.space.high[0, 0].item()
    0.4000000059604645
    """

    gym_id = "Humanoid-v5"
    position_dim = 2

    @property
    def task_dim(self) -> int:
        return 1

    def sample_tasks(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return (torch.rand(num, 1, generator=generator) * (2.0 * math.pi)).to(self.device)

    def _position(self, env: Any) -> np.ndarray:
        return mass_center(env.model, env.data)

    def _task_reward(
        self, velocity: np.ndarray, position: np.ndarray, task: np.ndarray
    ) -> np.ndarray:
        angle = task[:, 0]
        return self.forward_reward_weight * (
            velocity[:, 0] * np.cos(angle) + velocity[:, 1] * np.sin(angle)
        )


#: Family name -> class, as registered in :func:`~torchrl_bamdp.envs.make_env`.
MUJOCO_FAMILIES: dict[str, type[MujocoTaskEnv]] = {
    "cheetah_vel": CheetahVelEnv,
    "cheetah_dir": CheetahDirEnv,
    "ant_dir": AntDirEnv,
    "ant_goal": AntGoalEnv,
    "walker_rand_params": WalkerRandParamsEnv,
    "humanoid_dir": HumanoidDirEnv,
}
