"""Small shared helpers."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}


def make_mlp(
    in_dim: int, out_dim: int, hidden: Sequence[int], activation: str = "tanh"
) -> nn.Sequential:
    """A plain MLP ``in -> hidden... -> out`` with ``activation`` between layers.

    Examples
    --------
    >>> make_mlp(3, 2, [8], "relu")
    Sequential(
      (0): Linear(in_features=3, out_features=8, bias=True)
      (1): ReLU()
      (2): Linear(in_features=8, out_features=2, bias=True)
    )
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)} (got {activation!r})")
    layers: list[nn.Module] = []
    last = in_dim
    for width in hidden:
        layers += [nn.Linear(last, width), ACTIVATIONS[activation]()]
        last = width
    layers.append(nn.Linear(last, out_dim))
    return nn.Sequential(*layers)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file and ``os.replace`` (never half-written).

    Examples
    --------
    >>> import tempfile
    >>> target = Path(tempfile.mkdtemp()) / "a.json"
    >>> atomic_write_text(target, "{}")
    >>> target.read_text()
    '{}'
    """
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


#: The checkout this package runs from (an editable install: the repository root).
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def portable_paths(value: Any, roots: Sequence[str | Path] | None = None) -> Any:
    """``value`` (nested dicts, lists, strings) with machine-specific paths made portable.

    Result files are committed and read on other machines, so a path inside the repository is
    written relative to it, a temporary directory as ``$TMPDIR`` and the home directory as
    ``~``; everything else is returned unchanged. ``roots`` are the repository roots to strip
    (default: the working directory and this package's checkout).

    Examples
    --------
    >>> portable_paths({"argv": ["/repo/benchmarks/run.py", "--out", "/repo"]}, roots=["/repo"])
    {'argv': ['benchmarks/run.py', '--out', '.']}
    """
    if roots is None:
        roots = [Path.cwd(), PACKAGE_ROOT]
    prefixes: list[tuple[str, str]] = []
    for root in roots:
        for form in {str(Path(root)), str(Path(root).resolve())}:
            prefixes.append((form, "."))
    for form in {tempfile.gettempdir(), str(Path(tempfile.gettempdir()).resolve())}:
        prefixes.append((form, "$TMPDIR"))
    home = os.path.expanduser("~")
    if home not in ("/", "~"):
        prefixes.append((home, "~"))
    # Longest first: a repository inside the home directory is stripped as the repository.
    prefixes.sort(key=lambda item: len(item[0]), reverse=True)

    def fix(text: str) -> str:
        for prefix, short in prefixes:
            if prefix in ("", "/"):
                continue
            text = text.replace(prefix + "/", "" if short == "." else short + "/")
            if text == prefix:
                text = short
        return text

    if isinstance(value, str):
        return fix(value)
    if isinstance(value, dict):
        return {
            fix(k) if isinstance(k, str) else k: portable_paths(v, roots) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [portable_paths(v, roots) for v in value]
    return value


def write_result_json(path: str | Path, report: Any) -> None:
    """Write a result file (JSON, indented) with :func:`portable_paths` applied.

    Examples
    --------
    >>> out = Path(tempfile.gettempdir()) / "bamdp-doctest" / "r.json"
    >>> write_result_json(out, {"run_dir": str(out.parent / "run")})
    >>> json.loads(out.read_text())["run_dir"]
    '$TMPDIR/bamdp-doctest/run'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(portable_paths(report), indent=2) + "\n")


@dataclass(frozen=True)
class Job:
    """One command for :func:`run_jobs`: what it is called, what it runs, where its output goes.

    Parameters
    ----------
    name : str
        How the progress lines call it (e.g. ``"cheetah_vel rl2 seed 0"``).
    command : sequence of str
        The program and its arguments (no shell).
    log : Path
        The file its stdout and stderr are appended to (its folder is created).
    env : mapping, optional
        Extra environment variables, on top of this process's.

    Examples
    --------
    >>> import sys
    >>> job = Job("hello", [sys.executable, "-c", "print('hi')"], Path("hello.log"))
    >>> job.name, job.command[1:]
    ('hello', ['-c', "print('hi')"])
    """

    name: str
    command: Sequence[str]
    log: Path
    env: Mapping[str, str] | None = None


def run_jobs(
    jobs: Sequence[Job],
    processes: int,
    *,
    on_done: Callable[[Job, int, float], None] | None = None,
    poll_seconds: float = 1.0,
) -> list[Job]:
    """Run ``jobs`` as child processes, at most ``processes`` at a time, in the given order.

    The process pool of the benchmark scripts that train several runs at once (campaigns,
    baselines, the demo's seed spread): each job's output goes to its own log, a line is printed
    when it starts and when it ends. On an interrupt (Ctrl-C) the running children are stopped
    (SIGTERM, then SIGKILL after 30 s) before it is re-raised, so that none is left orphaned; a
    training run loses only the work since its last checkpoint.

    Parameters
    ----------
    jobs : sequence of Job
        What to run, first come first started.
    processes : int
        How many run at once (>= 1).
    on_done : callable, optional
        Called as ``on_done(job, returncode, seconds)`` when a job ends, instead of the default
        ``done`` / ``FAILED`` line.
    poll_seconds : float
        How often the children are polled.

    Returns
    -------
    list of Job
        The jobs that exited with a non-zero status, in the order they ended.

    Examples
    --------
    >>> import sys
    >>> logs = Path(tempfile.mkdtemp())
    >>> def exits_with(code):
    ...     command = [sys.executable, "-c", f"raise SystemExit({code})"]
    ...     return Job(f"job {code}", command, logs / f"{code}.log")
    >>> jobs = [exits_with(0), exits_with(3)]
    >>> failed = run_jobs(jobs, processes=2, poll_seconds=0.05)  # doctest: +ELLIPSIS
    start  job 0 -> ...0.log
    start  job 3 -> ...3.log
    ...
    >>> [job.name for job in failed]
    ['job 3']
    """
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    pending = list(jobs)
    running: list[tuple[Job, subprocess.Popen, float]] = []
    failed: list[Job] = []
    try:
        while pending or running:
            while pending and len(running) < processes:
                job = pending.pop(0)
                job.log.parent.mkdir(parents=True, exist_ok=True)
                env = {**os.environ, "PYTHONUNBUFFERED": "1", **(job.env or {})}
                with job.log.open("a") as log:  # the child keeps its own descriptor
                    proc = subprocess.Popen(
                        list(job.command), stdout=log, stderr=subprocess.STDOUT, env=env
                    )
                running.append((job, proc, time.perf_counter()))
                print(f"start  {job.name} -> {job.log}", flush=True)
            time.sleep(poll_seconds)
            for item in list(running):
                job, proc, started = item
                if proc.poll() is None:
                    continue
                running.remove(item)
                seconds = time.perf_counter() - started
                if proc.returncode != 0:
                    failed.append(job)
                if on_done is not None:
                    on_done(job, proc.returncode, seconds)
                elif proc.returncode == 0:
                    print(f"done   {job.name} after {seconds:.0f} s", flush=True)
                else:
                    print(
                        f"FAILED {job.name} (exit {proc.returncode}) after {seconds:.0f} s, "
                        f"see {job.log}",
                        flush=True,
                    )
    except BaseException:
        for _, proc, _ in running:
            proc.terminate()
        for _, proc, _ in running:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        raise
    return failed


@torch.no_grad()
def merge_running_moments(
    mean: torch.Tensor, var: torch.Tensor, count: torch.Tensor, samples: torch.Tensor
) -> None:
    """Merge ``samples`` (reduced over dim 0) into running ``mean``/``var``/``count``, in place.

    The parallel (Chan et al.) update: the result equals the population mean and variance of
    everything merged so far. Used by the policy's input normaliser and PPO's return scaler.

    Examples
    --------
    >>> mean, var, count = torch.zeros(()), torch.ones(()), torch.zeros(())
    >>> merge_running_moments(mean, var, count, torch.tensor([1.0, 3.0]))
    >>> merge_running_moments(mean, var, count, torch.tensor([5.0]))
    >>> mean.item(), round(var.item(), 4), count.item()
    (3.0, 2.6667, 3.0)
    """
    n = samples.shape[0]
    if n == 0:
        return
    batch_mean = samples.mean(0)
    batch_var = samples.var(0, unbiased=False)
    total = count + n
    delta = batch_mean - mean
    new_mean = mean + delta * (n / total)
    m2 = var * count + batch_var * n + delta.pow(2) * (count * n / total)
    mean.copy_(new_mean)
    var.copy_((m2 / total).to(var.dtype))
    count.copy_(total)
