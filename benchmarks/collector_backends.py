"""Collector backends side by side: in-process, the hand-written MuJoCo worker pool, and TorchRL's
process backend, on ``cheetah_vel`` with the VariBAD acting policy and belief transform.

Three ways of collecting the same training batches (``--num-envs`` tasks of the packaged
``env=cheetah_vel algo=varibad`` config, whole BAMDPs of ``--episode-length`` x 2 steps), each
through :class:`~torchrl_bamdp.trainers.collection.TrainCollector` as ``Trainer`` builds it:

* ``single``    -- (a) ``train.collector=single``: one TorchRL ``Collector`` in this process,
  simulators, belief transform and policy batched here.
* ``mujoco_pool`` -- (b) (a) with ``env.workers=--workers``: the simulators step in that many
  hand-written worker processes (``envs/mujoco/workers.py``: shared memory, fork server), the
  belief transform and the policy stay batched in this process.
* ``torchrl_process`` -- (c) ``train.collector=process train.num_collectors=--workers``:
  TorchRL's ``MultiSyncCollector``; every worker process runs ``num_envs / workers`` simulators
  *and* its own belief transform and policy; each timed batch includes the weight sync the
  trainer does after every update (``TrainCollector.sync``), also reported alone.

All three are built first (their start-up time is reported, not timed into the rates), pull one
untimed batch (warm-up), then ``--repeats`` rounds pull ``--batches`` batches from each in turn,
**interleaved** (a b c a b c ...), so that load from other processes hits all alike. Reported
per variant: median frames/s, ratio of medians to (a) and median of the per-round ratios.

Run it with::

    .venv/bin/python benchmarks/collector_backends.py       # about 1.5 min on 2 loaded cores
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import mujoco
import tensordict
import torch
import torchrl

from torchrl_bamdp.cli import compose_config
from torchrl_bamdp.configs import Config
from torchrl_bamdp.envs import make_env_from_config
from torchrl_bamdp.trainers.agents import build_agent
from torchrl_bamdp.trainers.collection import TrainCollector
from torchrl_bamdp.utils import write_result_json

FAMILY = "cheetah_vel"
EPISODES_PER_TASK = 2
REFERENCE = "single"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "collector_backends.json"
DESCRIPTIONS = {
    "single": "(a) train.collector=single: simulators, belief and policy in this process",
    "mujoco_pool": "(b) (a) with env.workers: simulators in the hand-written worker pool",
    "torchrl_process": "(c) train.collector=process: TorchRL MultiSyncCollector, "
    "simulators + belief + policy per worker, weight sync per batch",
}


def backend_config(variant: str, num_envs: int, episode_length: int, workers: int) -> Config:
    """The packaged training config (``bamdp-train`` composition) of one variant."""
    overrides = [
        f"env={FAMILY}",
        "algo=varibad",
        f"env.num_envs={num_envs}",
        f"env.episode_length={episode_length}",
        "algo.ppo.minibatches=1",  # not used by collection; the default must divide num_envs
    ]
    if variant == "mujoco_pool":
        overrides.append(f"env.workers={workers}")
    if variant == "torchrl_process":
        overrides += ["train.collector=process", f"train.num_collectors={workers}"]
    return compose_config(overrides)


class Backend:
    """One variant: the trainer's env, agent and :class:`TrainCollector` (endless)."""

    def __init__(self, config: Config) -> None:
        start = time.perf_counter()
        torch.manual_seed(config.seed)
        self.env = make_env_from_config(config.env, config.seed, torch.device(config.device))
        self.agent = build_agent(config, self.env)
        self.train_env = self.agent.transformed_env(self.env)
        self.collector = TrainCollector(config, self.agent, self.train_env, total_frames=-1)
        self.batches = iter(self.collector)
        self.startup_s = time.perf_counter() - start
        self.sync_s: list[float] = []

    def run(self, batches: int) -> int:
        """Pull ``batches`` batches, each followed by the trainer's weight sync."""
        frames = 0
        for _ in range(batches):
            frames += next(self.batches).numel()
            start = time.perf_counter()
            self.collector.sync()
            self.sync_s.append(time.perf_counter() - start)
        return frames

    def close(self) -> None:
        self.collector.shutdown()
        self.train_env.close()


def measure(backends: dict[str, Backend], batches: int, repeats: int) -> dict[str, Any]:
    for backend in backends.values():
        backend.run(1)  # warm-up
    for backend in backends.values():
        backend.sync_s.clear()
    seconds: dict[str, list[float]] = {name: [] for name in backends}
    frames: dict[str, int] = {}
    for _ in range(repeats):
        for name, backend in backends.items():
            start = time.perf_counter()
            frames[name] = backend.run(batches)
            seconds[name].append(time.perf_counter() - start)
    results = {}
    for name, backend in backends.items():
        fps = [frames[name] / s for s in seconds[name]]
        results[name] = {
            "description": DESCRIPTIONS[name],
            "frames_per_run": frames[name],
            "seconds": seconds[name],
            "frames_per_s_all": fps,
            "frames_per_s": statistics.median(fps),
            "startup_s": backend.startup_s,
            "sync_s_median": statistics.median(backend.sync_s),
        }
    ref = results[REFERENCE]
    for res in results.values():
        res["ratio_to_single"] = res["frames_per_s"] / ref["frames_per_s"]
        res["paired_ratio_median"] = statistics.median(
            f / r for f, r in zip(res["frames_per_s_all"], ref["frames_per_s_all"], strict=True)
        )
    return results


def format_table(results: dict[str, Any]) -> str:
    lines = [
        f"{'variant':<16} {'frames/s':>9} {'x (a)':>6} {'paired':>7} {'start s':>8} "
        f"{'sync ms':>8}  description",
        "-" * 110,
    ]
    for name, res in results.items():
        lines.append(
            f"{name:<16} {res['frames_per_s']:>9,.0f} {res['ratio_to_single']:>6.3f} "
            f"{res['paired_ratio_median']:>7.3f} {res['startup_s']:>8.1f} "
            f"{1e3 * res['sync_s_median']:>8.1f}  {res['description']}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-envs", type=int, default=16, help="cheetah_vel tasks per batch")
    parser.add_argument("--episode-length", type=int, default=200, help="steps per episode")
    parser.add_argument("--workers", type=int, default=2, help="pool / TorchRL worker processes")
    parser.add_argument("--batches", type=int, default=1, help="batches per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed rounds")
    parser.add_argument(
        "--note",
        default="the machine's other core was busy with a training campaign during this run",
        help="what else ran on the machine (recorded in the JSON)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table, write the JSON report and return it."""
    args = parse_args(argv)
    if min(args.num_envs, args.episode_length, args.workers, args.batches, args.repeats) < 1:
        raise SystemExit("every count must be >= 1")
    if args.num_envs % args.workers:
        raise SystemExit("--workers must divide --num-envs")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as train.num_threads
    load_start = os.getloadavg()
    wall_start = time.perf_counter()
    backends: dict[str, Backend] = {}
    try:
        for name in DESCRIPTIONS:
            config = backend_config(name, args.num_envs, args.episode_length, args.workers)
            backends[name] = Backend(config)
        results = measure(backends, args.batches, args.repeats)
    finally:
        for backend in backends.values():
            backend.close()
        torch.set_num_threads(previous_threads)
    wall = time.perf_counter() - wall_start
    load_end = os.getloadavg()
    config = backend_config(REFERENCE, args.num_envs, args.episode_length, args.workers)
    report = {
        "benchmark": "collector_backends",
        "config": {
            "env": FAMILY,
            "algo": "varibad",
            "num_envs": args.num_envs,
            "episode_length": args.episode_length,
            "episodes_per_task": EPISODES_PER_TASK,
            "frames_per_batch": config.frames_per_batch,
            "workers": args.workers,
            "batches_per_run": args.batches,
            "repeats": args.repeats,
            "order": "interleaved rounds (a, b, c, a, ...) after one warm-up batch of each",
            "statistic": "median over rounds; paired = median of per-round ratios to (a)",
            "timed": "collection of the batch + TrainCollector.sync() (a no-op for a and b)",
            "torch_num_threads": 1,
            "agent_config": "packaged Hydra config: env=cheetah_vel algo=varibad, "
            "algo.ppo.minibatches=1",
        },
        "seed": config.seed,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchrl": torchrl.__version__,
            "tensordict": tensordict.__version__,
            "mujoco": mujoco.__version__,
        },
        "platform": {
            "system": platform.platform(),
            "cpu_count": os.cpu_count(),
            "load_average_start": list(load_start),
            "load_average_end": list(load_end),
            "note": args.note,
        },
        "wall_clock_s": wall,
        "results": results,
        "frames_per_s": {name: res["frames_per_s"] for name, res in results.items()},
    }
    print(
        f"Collector backends, {FAMILY}: {args.num_envs} envs, BAMDP {args.episode_length} x "
        f"{EPISODES_PER_TASK}, {args.workers} workers, median of {args.repeats} interleaved "
        f"rounds of {args.batches} batch(es) of {config.frames_per_batch} frames"
    )
    print(format_table(results))
    print(
        f"wall clock {wall:.1f} s; load average {load_start[0]:.2f} -> {load_end[0]:.2f} "
        f"on {os.cpu_count()} cores ({args.note})"
    )
    write_result_json(args.out, report)
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
