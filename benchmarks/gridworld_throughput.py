"""GridNavi throughput: how many environment frames per second each layer of the stack costs.

Every variant steps ``num_envs`` batched GridNavi grids for ``steps`` steps with uniformly random
actions, on one torch thread (``torch.set_num_threads(1)``), under ``torch.no_grad()``:

* ``raw_dynamics``      -- ``GridNaviEnv._step`` in a Python loop: the pure-torch dynamics only.
* ``bamdp_rollout``     -- ``BAMDPEnv(GridNaviEnv(n), 15, 4).rollout(steps,
  break_when_any_done=False)``: TorchRL's public rollout, with the multi-episode horizon and
  task resets. This is the reference (ratio 1.0) and carries the 1M frames/s target at 1024 envs.
* ``bamdp_step_loop``   -- the same env driven by hand: ``env.step`` + ``step_mdp`` +
  ``env.maybe_reset`` (what a custom training loop would do).
* ``varibad_rollout``   -- ``TransformedEnv(BAMDPEnv(...), varibad_transforms(BeliefEncoder))``
  rollout: the belief GRU and the hyper-state concatenation run on every step.
* ``varibad_collector`` -- the VariBAD env inside a ``torchrl.collectors.Collector`` with a random
  policy, ``frames_per_batch = num_envs * 60`` (one whole BAMDP per env per batch).

Each variant runs once untimed (warm-up), then ``repeats`` timed times; the median frames/s is
reported. Results are printed as a table and written as JSON (config, seed, versions, platform,
frames and frames/s per variant, and whether the target is met).

Run it with ``make bench-throughput`` or::

    .venv/bin/python benchmarks/gridworld_throughput.py --num-envs 1024 --steps 600 --repeats 5
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tensordict
import torch
import torchrl
from tensordict import TensorDict
from torchrl.collectors import Collector
from torchrl.envs import TransformedEnv
from torchrl.envs.utils import step_mdp

from torchrl_bamdp.envs import BAMDPEnv, GridNaviEnv
from torchrl_bamdp.modules import BeliefEncoder
from torchrl_bamdp.transforms import varibad_transforms
from torchrl_bamdp.utils import write_result_json

EPISODE_LENGTH = 15
EPISODES_PER_TASK = 4
HORIZON = EPISODE_LENGTH * EPISODES_PER_TASK  # steps of one BAMDP (H+)
NUM_ACTIONS = 5
REFERENCE = "bamdp_rollout"
TARGET_FPS = 1_000_000
TARGET_NUM_ENVS = 1024
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "gridworld_throughput.json"

DESCRIPTIONS = {
    "raw_dynamics": "GridNaviEnv._step loop (pure dynamics)",
    "bamdp_rollout": "BAMDPEnv.rollout (public API)",
    "bamdp_step_loop": "BAMDPEnv step + step_mdp + maybe_reset loop",
    "varibad_rollout": "TransformedEnv(BAMDPEnv, varibad_transforms).rollout",
    "varibad_collector": "Collector over the VariBAD env, random policy",
}


# -- env factories ---------------------------------------------------------------------------
def make_bamdp_env(num_envs: int, seed: int) -> BAMDPEnv:
    env = BAMDPEnv(
        GridNaviEnv(num_envs=num_envs),
        episode_length=EPISODE_LENGTH,
        episodes_per_task=EPISODES_PER_TASK,
    )
    env.set_seed(seed)
    return env


def make_varibad_env(num_envs: int, seed: int) -> TransformedEnv:
    torch.manual_seed(seed)  # encoder initialisation
    encoder = BeliefEncoder(obs_dim=2, action_dim=NUM_ACTIONS, discrete_actions=True)
    return TransformedEnv(make_bamdp_env(num_envs, seed), varibad_transforms(encoder))


# -- variants: each returns a runner ``run() -> frames stepped`` -----------------------------
Runner = Callable[[], int]


def raw_dynamics(num_envs: int, steps: int, seed: int) -> Runner:
    env = GridNaviEnv(num_envs=num_envs)
    env.reset()
    td = TensorDict({"action": torch.zeros(num_envs, dtype=torch.long)}, batch_size=[num_envs])

    def run() -> int:
        for _ in range(steps):
            td.set("action", torch.randint(NUM_ACTIONS, (num_envs,)))
            env._step(td)
        return num_envs * steps

    return run


def bamdp_rollout(num_envs: int, steps: int, seed: int) -> Runner:
    env = make_bamdp_env(num_envs, seed)

    def run() -> int:
        rollout = env.rollout(steps, break_when_any_done=False)
        return rollout.numel()

    return run


def bamdp_step_loop(num_envs: int, steps: int, seed: int) -> Runner:
    env = make_bamdp_env(num_envs, seed)
    action_spec = env.full_action_spec

    def run() -> int:
        td = env.reset()
        for _ in range(steps):
            td.update(action_spec.rand())
            td = env.step(td)
            td = step_mdp(td)
            td = env.maybe_reset(td)
        return num_envs * steps

    return run


def varibad_rollout(num_envs: int, steps: int, seed: int) -> Runner:
    env = make_varibad_env(num_envs, seed)

    def run() -> int:
        rollout = env.rollout(steps, break_when_any_done=False)
        return rollout.numel()

    return run


def collector_batches(steps: int) -> int:
    """Number of ``num_envs * 60``-frame collector batches that covers ``steps`` env steps."""
    return max(1, math.ceil(steps / HORIZON))


def varibad_collector(num_envs: int, steps: int, seed: int) -> Runner:
    env = make_varibad_env(num_envs, seed)
    frames_per_batch = num_envs * HORIZON
    total_frames = frames_per_batch * collector_batches(steps)

    def run() -> int:
        collector = Collector(
            env,
            policy=None,  # a RandomPolicy over env.full_action_spec
            frames_per_batch=frames_per_batch,
            total_frames=total_frames,
            auto_register_policy_transforms=False,
        )
        frames = 0
        try:
            for batch in collector:
                frames += batch.numel()
        finally:
            collector.shutdown()
        return frames

    return run


VARIANTS: dict[str, Callable[[int, int, int], Runner]] = {
    "raw_dynamics": raw_dynamics,
    "bamdp_rollout": bamdp_rollout,
    "bamdp_step_loop": bamdp_step_loop,
    "varibad_rollout": varibad_rollout,
    "varibad_collector": varibad_collector,
}


# -- measurement -----------------------------------------------------------------------------
def measure(runner: Runner, repeats: int) -> dict[str, Any]:
    runner()  # warm-up: first-call allocations, lazy spec work
    seconds, frames = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        n = runner()
        seconds.append(time.perf_counter() - start)
        frames.append(n)
    fps = [f / s for f, s in zip(frames, seconds, strict=True)]
    return {
        "frames": frames[0],
        "seconds": seconds,
        "frames_per_s_all": fps,
        "frames_per_s": statistics.median(fps),
    }


def run_benchmark(num_envs: int, steps: int, repeats: int, seed: int) -> dict[str, dict[str, Any]]:
    results = {}
    with torch.no_grad():
        for name, make_runner in VARIANTS.items():
            torch.manual_seed(seed)
            results[name] = measure(make_runner(num_envs, steps, seed), repeats)
            results[name]["description"] = DESCRIPTIONS[name]
    ref = results[REFERENCE]["frames_per_s"]
    for res in results.values():
        res["ratio_to_reference"] = res["frames_per_s"] / ref
    return results


def format_table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        f"{'variant':<20} {'frames':>10} {'frames/s':>14} {'x bamdp_rollout':>16}  description",
        "-" * 110,
    ]
    for name, res in results.items():
        lines.append(
            f"{name:<20} {res['frames']:>10d} {res['frames_per_s']:>14,.0f} "
            f"{res['ratio_to_reference']:>16.3f}  {res['description']}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-envs", type=int, default=TARGET_NUM_ENVS)
    parser.add_argument(
        "--steps", type=int, default=600, help="env steps per timed run (collector: batches of 60)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed runs; the median is kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON output path")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table, write the JSON report and return it."""
    args = parse_args(argv)
    if args.num_envs < 1 or args.steps < 1 or args.repeats < 1:
        raise SystemExit("--num-envs, --steps and --repeats must be >= 1")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    try:
        wall_start = time.perf_counter()
        results = run_benchmark(args.num_envs, args.steps, args.repeats, args.seed)
        wall = time.perf_counter() - wall_start
    finally:
        torch.set_num_threads(previous_threads)

    ref_fps = results[REFERENCE]["frames_per_s"]
    report = {
        "benchmark": "gridworld_throughput",
        "config": {
            "num_envs": args.num_envs,
            "steps": args.steps,
            "repeats": args.repeats,
            "torch_num_threads": args.threads,
            "episode_length": EPISODE_LENGTH,
            "episodes_per_task": EPISODES_PER_TASK,
            "collector_frames_per_batch": args.num_envs * HORIZON,
            "collector_batches": collector_batches(args.steps),
            "grad_enabled": False,
            "actions": "uniform random",
            "statistic": "median over repeats (after one untimed warm-up run)",
        },
        "seed": args.seed,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchrl": torchrl.__version__,
            "tensordict": tensordict.__version__,
        },
        "platform": {
            "system": platform.platform(),
            "machine": platform.machine(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            # 1/5/15-min load averages before and after: other processes on a 2-core machine
            # move these numbers by tens of percent.
            "load_average_start": list(load_start),
            "load_average_end": list(os.getloadavg()),
        },
        "wall_clock_s": wall,
        "reference": REFERENCE,
        "results": results,
        "frames_per_s": {name: res["frames_per_s"] for name, res in results.items()},
        "target": {
            "variant": REFERENCE,
            "num_envs": TARGET_NUM_ENVS,
            "frames_per_s": TARGET_FPS,
            "measured_frames_per_s": ref_fps,
            # Only meaningful at the target batch size; None otherwise.
            "met": (ref_fps >= TARGET_FPS) if args.num_envs == TARGET_NUM_ENVS else None,
        },
    }

    print(
        f"GridNavi throughput: {args.num_envs} envs, {args.steps} steps, "
        f"median of {args.repeats}, {args.threads} torch thread(s), no_grad, "
        f"torch {torch.__version__}, torchrl {torchrl.__version__}"
    )
    print(format_table(results))
    met = report["target"]["met"]
    verdict = "n/a (not at 1024 envs)" if met is None else ("MET" if met else "NOT met")
    print(
        f"target: {REFERENCE} >= {TARGET_FPS:,} frames/s at {TARGET_NUM_ENVS} envs: {verdict} "
        f"({ref_fps:,.0f} frames/s); wall clock {wall:.1f} s; "
        f"load average {load_start[0]:.2f} -> {os.getloadavg()[0]:.2f}"
    )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_result_json(args.out, report)
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
