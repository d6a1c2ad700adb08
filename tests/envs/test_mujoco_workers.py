"""MuJoCo task envs with their simulators in worker processes (``workers``): same numbers as in
process, TorchRL specs, bad options, errors raised in the workers, and clean shutdown."""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.envs.utils import check_env_specs

import torchrl_bamdp
from torchrl_bamdp.configs.schema import MUJOCO_ENV_NAMES
from torchrl_bamdp.envs import BAMDPEnv, CheetahDirEnv, CheetahVelEnv, make_env
from torchrl_bamdp.envs.mujoco import MUJOCO_FAMILIES

NUM_ENVS = 5  # uneven shards for 2 and 3 workers


class _FailingCheetahEnv(CheetahVelEnv):
    """Fails in its per-simulator reset hook (so: inside a worker) on negative velocities."""

    def _apply_task(self, index: int) -> None:
        if self._task_np[index, 0] < 0:
            raise ValueError("negative target velocity")


class _UnbuildableInWorkersEnv(CheetahVelEnv):
    """Builds in the main process, but not in a worker (an option its __init__ lacks)."""

    def _worker_kwargs(self) -> dict:
        return {**super()._worker_kwargs(), "no_such_option": 1}


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, waiting for a parent to reap it, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state != "Z"


def _wait_until_gone(pids, timeout: float = 15.0) -> list[int]:
    """The processes of ``pids`` still alive after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


def _trajectory(name: str, workers: int) -> list[torch.Tensor]:
    """Everything a BAMDP rollout returns, through a reseed, a partial reset to new tasks mid
    task, inner-episode resets (every 3 steps) and clipped actions."""
    task_env = MUJOCO_FAMILIES[name](num_envs=NUM_ENVS, seed=3, workers=workers)
    env = BAMDPEnv(task_env, episode_length=3, episodes_per_task=2, seed=1)
    env.set_seed(11)
    rng = np.random.default_rng(0)
    td = env.reset()
    out = [td["observation"], td["task"]]
    for t in range(8):
        action = rng.uniform(-1.5, 1.5, (NUM_ENVS, task_env.action_dim))
        td["action"] = torch.as_tensor(action, dtype=torch.float32)
        nxt = env.step(td)["next"]
        out += [nxt[k] for k in ("observation", "reward", "task", "episode_done", "done")]
        out.append(nxt["terminated"])
        td = nxt
        if t == 1:  # new tasks for envs 0 and 3 (in different shards for 2 and 3 workers)
            td["_reset"] = torch.tensor([True, False, False, True, False]).reshape(-1, 1)
            td = env.reset(td)
            out += [td["observation"], td["task"]]
    out.append(task_env.tasks)
    task_env.close()
    return out


@pytest.mark.parametrize("name", ["cheetah_vel", "walker_rand_params", "ant_dir"])
def test_rollouts_are_bit_identical_for_any_number_of_workers(name):
    """walker_rand_params changes the model per task; ant_dir reads contact forces."""
    reference = _trajectory(name, workers=0)
    for workers in (1, 2, 3):
        got = _trajectory(name, workers)
        assert len(got) == len(reference)
        for i, (a, b) in enumerate(zip(reference, got, strict=True)):
            assert torch.equal(a, b), f"{name}, workers={workers}: entry {i} differs"


def test_shards_are_contiguous_and_even():
    env = CheetahVelEnv(num_envs=NUM_ENVS, workers=3)
    try:
        assert env._simulator_workers.bounds == [(0, 2), (2, 4), (4, 5)]
        assert env.envs == [] and len(set(env.worker_pids)) == 3
    finally:
        env.close()


def test_check_env_specs_and_make_env_with_workers():
    task_env = CheetahDirEnv(num_envs=3, seed=0, workers=2)
    check_env_specs(task_env, seed=0)
    check_env_specs(BAMDPEnv(task_env, episode_length=3, episodes_per_task=2, seed=0), seed=0)
    task_env.close()
    env = make_env("cheetah_vel", num_envs=4, workers=2, seed=0)
    assert env.task_env.workers == 2 and len(env.task_env.worker_pids) == 2
    rollout = env.rollout(4, break_when_any_done=False)
    assert rollout["next", "reward"].shape == (4, 4, 1)
    env.task_env.close()


@pytest.mark.parametrize(
    ("workers", "match"),
    [
        (-1, r"workers must be in \[0, num_envs\] = \[0, 3\] \(got workers=-1\)"),
        (4, r"workers must be in \[0, num_envs\] = \[0, 3\] \(got workers=4\)"),
        (1.5, "workers must be an integer"),
        (True, "workers must be an integer"),
        ("2", "workers must be an integer"),
    ],
)
def test_bad_workers_are_rejected(workers, match):
    with pytest.raises(ValueError, match=f"CheetahVelEnv: {match}"):
        CheetahVelEnv(num_envs=3, workers=workers)


def test_workers_is_a_mujoco_option_of_make_env():
    assert make_env("gridworld", num_envs=2, workers=0).task_env.num_envs == 2  # ignored
    assert make_env("point_robot_dense", num_envs=2, workers=0).task_env.num_envs == 2
    with pytest.raises(ValueError, match="workers is a MuJoCo option"):
        make_env("gridworld", num_envs=2, workers=1)
    with pytest.raises(ValueError, match="workers must be in"):
        make_env("cheetah_vel", num_envs=2, workers=3)
    assert set(MUJOCO_ENV_NAMES) == set(MUJOCO_FAMILIES)


def test_worker_exception_is_raised_in_the_main_process():
    env = _FailingCheetahEnv(num_envs=3, seed=0, workers=2)  # worker 1 owns env 2
    try:
        tasks = torch.tensor([[1.0], [2.0], [-1.0]])
        with pytest.raises(RuntimeError) as info:
            env.reset(TensorDict({"task": tasks}, batch_size=[3]))
        message = str(info.value)
        assert "_FailingCheetahEnv: simulator worker 1 (envs 2..2) failed during reset" in message
        assert "ValueError: negative target velocity" in message
        assert "Traceback" in message and "_apply_task" in message  # the worker's traceback
        # The pipes stay in step: the env works again with valid tasks.
        td = env.reset(TensorDict({"task": tasks.abs()}, batch_size=[3]))
        td["action"] = torch.zeros(3, 6)
        assert env.step(td)["next", "reward"].shape == (3, 1)
    finally:
        env.close()


def test_worker_start_failure_is_raised_and_leaves_no_process():
    before = {p.pid for p in multiprocessing.active_children()}
    with pytest.raises(RuntimeError, match=r"simulator worker 0 .*failed during start.*TypeError"):
        _UnbuildableInWorkersEnv(num_envs=2, workers=2)
    gc.collect()
    assert {p.pid for p in multiprocessing.active_children()} <= before


def test_close_stops_the_workers_and_is_idempotent():
    env = CheetahVelEnv(num_envs=2, workers=2)
    pids = env.worker_pids
    assert len(pids) == 2 and all(_alive(p) for p in pids)
    env.close()
    assert env.worker_pids == ()
    assert not any(_alive(p) for p in pids)  # stopped and reaped: no zombie
    assert not {p.pid for p in multiprocessing.active_children()} & set(pids)
    env.close()  # idempotent
    with pytest.raises(RuntimeError, match="CheetahVelEnv is closed"):
        env.rand_step()
    # Garbage collection stops them too, promptly.
    env = CheetahVelEnv(num_envs=2, workers=1)
    pids = env.worker_pids
    del env
    start = time.monotonic()
    gc.collect()
    assert _wait_until_gone(pids) == [] and time.monotonic() - start < 10


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_workers_exit_when_the_main_process_is_killed():
    script = (
        "import os, signal\n"
        "from torchrl_bamdp.envs import CheetahVelEnv\n"
        "env = CheetahVelEnv(num_envs=2, workers=2)\n"
        "print(*env.worker_pids, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    root = str(Path(torchrl_bamdp.__file__).resolve().parents[1])
    environ = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=environ
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    pids = [int(p) for p in result.stdout.split()]
    assert len(pids) == 2
    assert _wait_until_gone(pids) == []


def test_workers_do_not_log_the_known_model_warnings(capfd, tmp_path, monkeypatch):
    """HalfCheetah v5's deprecated ``settotalmass``: silenced in the workers too (they run in the
    main process's working directory, where MuJoCo would append it to MUJOCO_LOG.TXT)."""
    monkeypatch.chdir(tmp_path)
    env = CheetahVelEnv(num_envs=2, workers=2)
    env.rand_step(env.reset())
    env.close()
    out, err = capfd.readouterr()
    assert "settotalmass" not in out + err
    assert not (tmp_path / "MUJOCO_LOG.TXT").exists()
