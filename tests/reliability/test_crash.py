"""Crash safety: ``bamdp-train`` killed with SIGKILL, then resumed, ends as an uninterrupted run.

The rules asserted after every kill:

* ``checkpoints/last.pt``, whenever it exists, loads with ``torch.load`` and holds a whole
  iteration (``frames == iteration * frames_per_batch``, ``iteration`` a multiple of
  ``train.checkpoint_interval``).
* A leftover ``checkpoints/last.tmp`` (a checkpoint write cut short) is allowed only next to an
  intact ``last.pt``; it is never read, and it is gone once the resumed run has finished. (A
  kill inside the resume's own start-up could also leave ``metrics.csv.tmp``, the same way.)
* ``metrics.csv`` parses and holds every iteration up to the checkpoint's.

and after ``bamdp-train resume=<run_dir>`` has finished:

* exactly ``train.total_frames`` frames, ``iteration = total_frames / frames_per_batch``;
* ``metrics.csv`` holds iterations ``1..N``, each exactly once per metric, each with the
  per-iteration metrics, and ``frames == iteration * frames_per_batch`` on every row;
* the rows up to the checkpoint are those the killed run wrote, byte for byte (the resumed run
  continued from the checkpoint's iteration rather than from 0), and ``run_info.json`` has one
  entry per start;
* no ``*.tmp`` file is left anywhere in the run directory.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

BIN = Path(sys.executable).parent
TRAIN = BIN / "bamdp-train"
NUM_ENVS = 4
FRAMES_PER_BATCH = NUM_ENVS * 60  # one whole 4 x 15-step BAMDP per env and batch
#: Metrics every training iteration logs.
PER_ITERATION = ("train/trajectories_added", "ppo/loss_objective", "elbo/loss", "perf/fps")

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")


def train_args(run_dir: Path, iterations: int, checkpoint_interval: int, *extra: str) -> list[str]:
    return [
        f"env.num_envs={NUM_ENVS}",
        f"train.total_frames={iterations * FRAMES_PER_BATCH}",
        f"train.checkpoint_interval={checkpoint_interval}",
        "train.eval_interval=5",
        "train.eval_tasks=21",
        "train.progress_bar=false",
        "train.figures=false",
        "algo.ppo.minibatches=4",
        "algo.elbo.batch_trajectories=8",
        "seed=0",
        f"run_dir={run_dir}",
        *extra,
    ]


def start(args: list[str], cwd: Path, name: str) -> subprocess.Popen:
    """Start ``bamdp-train`` with its output in files (a full pipe would block it)."""
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", HYDRA_FULL_ERROR="1")
    env.pop("WANDB_API_KEY", None)
    return subprocess.Popen(
        [str(TRAIN), *args],
        cwd=cwd,
        env=env,
        stdout=(cwd / f"{name}.out").open("w"),
        stderr=subprocess.STDOUT,
    )


def output(cwd: Path, name: str) -> str:
    return (cwd / f"{name}.out").read_text()


def finish(args: list[str], cwd: Path, name: str, timeout: float = 60) -> str:
    proc = start(args, cwd, name)
    try:
        rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"{name} did not finish in {timeout} s:\n{output(cwd, name)}")
    assert rc == 0, output(cwd, name)
    return output(cwd, name)


def wait_until(condition, proc: subprocess.Popen, cwd: Path, name: str, timeout: float = 45):
    """Poll ``condition()`` every millisecond or so; fail if the run ends or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(
                f"{name} ended (rc={proc.returncode}) before the kill:\n{output(cwd, name)}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"condition not reached in {timeout} s:\n{output(cwd, name)}")
        time.sleep(0.001)


def sigkill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(10) == -signal.SIGKILL


def logged_iterations(run_dir: Path) -> int:
    """The last iteration in metrics.csv (complete lines only; 0 when none)."""
    try:
        text = (run_dir / "metrics.csv").read_text()
    except FileNotFoundError:
        return 0
    lines = text.splitlines()[1:] if text.endswith("\n") else text.splitlines()[1:-1]
    return int(lines[-1].split(",", 1)[0]) if lines else 0


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def metric_lines(run_dir: Path) -> list[str]:
    return (run_dir / "metrics.csv").read_text().splitlines()[1:]


def load_checkpoint(path: Path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=False)
    assert state["frames"] == state["iteration"] * FRAMES_PER_BATCH
    return state


def check_after_kill(run_dir: Path, checkpoint_interval: int) -> int:
    """The rules after a kill (module docstring); returns the checkpoint's iteration."""
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.pt"
    assert last.is_file(), sorted(p.name for p in ckpt_dir.iterdir())
    state = load_checkpoint(last)  # never corrupt, whenever the kill landed
    iteration = state["iteration"]
    assert iteration > 0 and iteration % checkpoint_interval == 0
    leftovers = {p.name for p in run_dir.rglob("*.tmp")}
    assert leftovers <= {"last.tmp"}, leftovers
    with (run_dir / "metrics.csv").open(newline="") as f:
        logged = {int(r["iteration"]) for r in csv.DictReader(f)}
    assert set(range(1, iteration + 1)) <= logged
    return iteration


def check_finished(run_dir: Path, iterations: int, starts: int, out: str) -> None:
    """The rules after the resumed run has finished (module docstring)."""
    total = iterations * FRAMES_PER_BATCH
    assert f"{total} frames" in out, out
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert (state["frames"], state["iteration"]) == (total, iterations)
    assert not list(run_dir.rglob("*.tmp"))

    with (run_dir / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    keys = Counter((int(r["iteration"]), r["metric"]) for r in rows)
    duplicated = [k for k, n in keys.items() if n > 1]
    assert not duplicated, duplicated[:10]
    assert sorted({i for i, _ in keys}) == list(range(1, iterations + 1))
    for i in range(1, iterations + 1):
        missing = [m for m in PER_ITERATION if (i, m) not in keys]
        assert not missing, (i, missing)
    assert all(int(r["frames"]) == int(r["iteration"]) * FRAMES_PER_BATCH for r in rows)
    assert ("eval/return_total", iterations) in {(m, i) for i, m in keys}

    sessions = json.loads((run_dir / "run_info.json").read_text())
    assert len(sessions) == starts
    assert json.loads((run_dir / "config.json").read_text())["train"]["total_frames"] == total


@pytest.mark.timeout(120)
def test_sigkill_after_a_checkpoint_then_resume(tmp_path):
    """Kill at an arbitrary point some iterations past a checkpoint; resume finishes the run."""
    run_dir, iterations, every = tmp_path / "run", 40, 3
    args = train_args(run_dir, iterations, every)
    proc = start(args, tmp_path, "first")
    # A checkpoint (iteration 3) exists and iterations after it are logged.
    wait_until(
        lambda: (
            logged_iterations(run_dir) >= every + 1
            and logged_iterations(run_dir) % every != 0
            and (run_dir / "checkpoints" / "last.pt").exists()
        ),
        proc,
        tmp_path,
        "first",
    )
    sigkill(proc)
    killed_at = logged_iterations(run_dir)
    resumed_from = check_after_kill(run_dir, every)
    assert resumed_from <= killed_at < iterations
    before = metric_lines(run_dir)
    kept = [line for line in before if int(line.split(",", 1)[0]) <= resumed_from]

    print(f"killed after iteration {killed_at}; checkpoint at {resumed_from}")
    out = finish([f"resume={run_dir}"], tmp_path, "resume")
    check_finished(run_dir, iterations, starts=2, out=out)
    # Continued from the checkpoint's iteration, not from 0: the rows up to it are untouched
    # (their wall-clock and fps values would differ had the run started over).
    after = metric_lines(run_dir)
    assert after[: len(kept)] == kept
    assert int(after[len(kept)].split(",", 1)[0]) == resumed_from + 1


@pytest.mark.timeout(150)
def test_sigkill_during_checkpoint_writes_then_resume(tmp_path):
    """Kill while a checkpoint is being written, twice (first run and resumed run).

    A checkpoint every iteration with a wide policy (about 6.9 MB per checkpoint, tens of ms
    of ``torch.save``) and a kill as soon as ``last.tmp`` has its first bytes make the kill land
    inside ``torch.save`` nearly every time (it did in every trial: 0.1-1.2 MB written of
    6.9 MB); ``last.pt`` must load whatever happened.
    """
    run_dir, iterations, every = tmp_path / "run", 14, 1
    wide = ["algo.ppo.hidden=[512,512]"]
    tmp_file = run_dir / "checkpoints" / "last.tmp"
    last = run_dir / "checkpoints" / "last.pt"
    torn = 0
    progress = []
    for start_no, name in enumerate(("first", "resume1"), start=1):
        args = train_args(run_dir, iterations, every, *wide)
        if start_no > 1:
            args = [f"resume={run_dir}"]
        done_before = logged_iterations(run_dir)
        proc = start(args, tmp_path, name)
        # A checkpoint exists and the run has gone two iterations past where the last one
        # stopped, so it has checkpointed (os.replace took away any leftover last.tmp) and the
        # next last.tmp is this process's own.
        wait_until(
            lambda d=done_before: last.exists() and logged_iterations(run_dir) >= d + 2,
            proc,
            tmp_path,
            name,
        )
        wait_until(lambda: file_size(tmp_file) > 0, proc, tmp_path, name)  # torch.save writing
        sigkill(proc)
        state = "no last.tmp"
        if tmp_file.exists():
            state = f"intact last.tmp ({tmp_file.stat().st_size} bytes)"
            try:
                torch.load(tmp_file, map_location="cpu", weights_only=False)
            except Exception:  # any load error: the kill tore the write
                torn += 1
                state = f"torn last.tmp ({tmp_file.stat().st_size} bytes)"
        progress.append(check_after_kill(run_dir, every))
        print(
            f"{name}: killed after iteration {logged_iterations(run_dir)}, {state}, "
            f"last.pt at iteration {progress[-1]} ({last.stat().st_size} bytes)"
        )
    assert progress[1] > progress[0]  # the resumed run continued and checkpointed again
    # Whether a kill lands inside torch.save is a race; with two tries it should, nearly always.
    assert torn >= 1, "no kill landed inside a checkpoint write"

    out = finish([f"resume={run_dir}"], tmp_path, "resume2")
    check_finished(run_dir, iterations, starts=3, out=out)


# -- known gaps in Trainer's resume (torchrl_bamdp/trainers/trainer.py) -------------------------
# A kill is simulated in process (fast and deterministic) by putting the run directory in the
# state a SIGKILL at that point leaves: the files written so far, and last.pt as it was.
def tiny_config(iterations: int, checkpoint_interval: int, eval_interval: int):
    from torchrl_bamdp.configs import load_config

    return load_config(
        {
            "seed": 0,
            "env": {"num_envs": NUM_ENVS},
            "algo": {"ppo": {"minibatches": 4}, "elbo": {"batch_trajectories": 8}},
            "train": {
                "total_frames": iterations * FRAMES_PER_BATCH,
                "eval_tasks": 21,
                "eval_interval": eval_interval,
                "checkpoint_interval": checkpoint_interval,
                "progress_bar": False,
                "figures": False,
            },
        }
    )


def test_kill_before_the_first_checkpoint_logs_no_iteration_twice(tmp_path):
    from torchrl_bamdp.trainers import Trainer

    run_dir = tmp_path / "run"
    config = tiny_config(2, checkpoint_interval=100, eval_interval=0)
    Trainer(config, run_dir).train()
    (run_dir / "checkpoints" / "last.pt").unlink()  # = killed after iteration 2, no checkpoint
    Trainer(config, run_dir).train()
    with (run_dir / "metrics.csv").open(newline="") as f:
        keys = Counter((int(r["iteration"]), r["metric"]) for r in csv.DictReader(f))
    assert max(keys.values()) == 1


def test_kill_after_an_evaluation_past_the_checkpoint_logs_it_once(tmp_path):
    from torchrl_bamdp.trainers import Trainer

    run_dir = tmp_path / "run"
    Trainer(tiny_config(3, checkpoint_interval=3, eval_interval=5), run_dir).train()
    at_3 = (run_dir / "checkpoints" / "last.pt").read_bytes()
    config = tiny_config(5, checkpoint_interval=3, eval_interval=5)
    Trainer(config, run_dir).train()  # iterations 4, 5 and the evaluation at 5
    (run_dir / "checkpoints" / "last.pt").write_bytes(at_3)  # = killed before checkpointing 5
    Trainer(config, run_dir).train()
    lines = (run_dir / "eval.jsonl").read_text().splitlines()
    iterations = [json.loads(line)["iteration"] for line in lines]
    assert iterations == sorted(set(iterations)), iterations


# -- MetricsLogger after a crash mid-write ------------------------------------------------------
def csv_logger(run_dir: Path):
    from torchrl_bamdp.configs import load_config
    from torchrl_bamdp.trainers import MetricsLogger

    run_dir.mkdir(parents=True, exist_ok=True)
    return MetricsLogger(run_dir, load_config({}))


def test_a_torn_last_csv_line_is_dropped(tmp_path):
    log = csv_logger(tmp_path)
    for i in (1, 2):
        log.log({"a": 1.0, "b": 2.0}, step=i * FRAMES_PER_BATCH, iteration=i)
    with log.csv_path.open("a") as f:
        f.write("3,720,a,1.")  # a write cut short: no newline
    assert [r["iteration"] for r in log.read()] == [1, 1, 2, 2]  # read() skips the torn tail
    log = csv_logger(tmp_path)  # reopening (a resume) cuts it off the file
    assert log.csv_path.read_text().endswith("2,480,b,2.0\n")
    log.log({"a": 3.0}, step=3 * FRAMES_PER_BATCH, iteration=3)
    assert [(r["iteration"], r["metric"]) for r in log.read()][-2:] == [(2, "b"), (3, "a")]
    log.truncate_after(2)
    assert [r["iteration"] for r in log.read()] == [1, 1, 2, 2]


def test_a_csv_emptied_before_its_header_gets_one(tmp_path):
    (tmp_path / "metrics.csv").write_text("")  # killed between creating it and the header
    log = csv_logger(tmp_path)
    log.log({"a": 1.0}, step=FRAMES_PER_BATCH, iteration=1)
    assert log.read() == [{"iteration": 1, "frames": 240, "metric": "a", "value": 1.0}]


def test_a_malformed_row_inside_the_csv_is_an_error(tmp_path):
    log = csv_logger(tmp_path)
    with log.csv_path.open("a") as f:
        f.write("1,240,a,oops\n2,480,a,1.0\n")
    with pytest.raises(ValueError, match="line 2"):
        log.read()


def test_an_emptied_wandb_id_file_gets_a_new_id(tmp_path):
    log = csv_logger(tmp_path)
    (tmp_path / "wandb_id.txt").write_text("")
    run_id = log._run_id()
    assert len(run_id) == 12 and (tmp_path / "wandb_id.txt").read_text() == run_id
    assert log._run_id() == run_id
