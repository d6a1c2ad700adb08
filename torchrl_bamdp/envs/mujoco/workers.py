"""Simulator worker processes of :class:`~torchrl_bamdp.envs.mujoco.base.MujocoTaskEnv`.

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

Why this pool and not TorchRL's process backend (``train.collector=process``): measured side by
side by ``benchmarks/collector_backends.py`` (``benchmarks/results/collector_backends.json``),
``cheetah_vel`` with the VariBAD belief transform and acting policy, 16 envs, whole 400-step
tasks, 2 workers, median of 3 interleaved rounds, on 2 cores shared with two training campaigns
and another test suite (load average 6.1-6.5, so absolute rates are a fraction of an idle
machine's): in process 2,008 frames/s; this pool (2 workers) 1,608 (0.80x; paired 0.88x);
TorchRL's ``MultiSyncCollector`` with 2 workers, each with its own belief transform and policy,
1,088 (0.54x), the pool faster in every round (1.2x to 4.0x). The pool moves only the simulators
out and keeps the belief GRU and the policy batched over all envs in one process; a TorchRL
worker runs transforms and policy itself, whose per-step cost is mostly fixed Python overhead
(``benchmarks/README.md``, collection throughput), paid in full for half the envs, plus a weight
sync per batch (126 ms here). So the pool stays, for machines where simulators dominate;
on 2 busy cores neither beats stepping in process (``env.workers=0``, the default).
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import pickle
import signal
import sys
import tempfile
import time
import traceback
import weakref
from collections.abc import Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:  # the base class imports this module: no import at run time
    from torchrl_bamdp.envs.mujoco.base import MujocoTaskEnv

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
