"""Does a HalfCheetahVel agent run at its task's target velocity, or at one speed? (issue 19)

A return on ``cheetah_vel`` (reward ``-|v - g|`` minus the control cost, ``g`` the task's target
velocity in [0, 3)) does not say whether an agent *adapts*: a task-independent gait at the best
single speed already scores far above standing still. This script meta-tests trained runs'
final greedy policies on the campaign's 64 fixed test tasks (``Trainer.evaluate``, the seeded
test stream) and reads what they did: per task and rollout, the target ``g`` and the mean
forward velocity ``v`` (``qvel[0]``, element 8 of HalfCheetah-v5's observation, over the
rollout's steps). Per run and rollout it reports the least-squares line ``v = a + b g`` (slope
``b`` = 1 and ``R^2`` near 1: the agent tracks its task; ``b`` near 0: one speed for all), the
mean ``|v - g|``, and beside them the same for the best single speed for these tasks (the median
of ``g`` minimises the mean ``|v - g|``): what no adaptation at all would get at best::

    .venv/bin/python benchmarks/velocity_tracking.py \\
        --runs runs/mujoco_campaign/cheetah_vel/rl2/seed0 runs/mujoco_campaign/cheetah_vel/rl2/seed1
    # --out <file.json> writes the per-task numbers and the fits
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from torchrl_bamdp.trainers.runs import open_run, result_provenance
from torchrl_bamdp.utils import write_result_json

#: HalfCheetah-v5's observation: qpos[1:] (8 numbers), then qvel; qvel[0] is the forward velocity.
FORWARD_VELOCITY = 8
TEST_TASKS = 64
ROLLOUTS = 2


def fit_line(x: list[float], y: list[float]) -> dict[str, float]:
    """Least-squares ``y = intercept + slope x`` and its coefficient of determination.

    Examples
    --------
    >>> fit_line([0.0, 1.0, 2.0], [1.0, 3.0, 5.0])
    {'slope': 2.0, 'intercept': 1.0, 'r2': 1.0}
    """
    mx, my = statistics.fmean(x), statistics.fmean(y)
    sxx = sum((a - mx) ** 2 for a in x)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    syy = sum((b - my) ** 2 for b in y)
    slope = sxy / sxx
    r2 = 1.0 if syy == 0 else sxy * sxy / (sxx * syy)
    return {"slope": slope, "intercept": my - slope * mx, "r2": r2}


def velocities(run_dir: Path, tasks: int, rollouts: int) -> dict:
    """Targets, mean forward velocities ``[tasks, rollouts]`` and returns of one run."""
    trainer = open_run(run_dir)
    if trainer.config.env.name != "cheetah_vel":
        raise SystemExit(f"{run_dir}: env.name={trainer.config.env.name!r}, not 'cheetah_vel'")
    result = trainer.evaluate(num_tasks=tasks, episodes=rollouts, keep_rollout=True)
    rollout = result.rollout
    forward = rollout.get(("next", "observation"))[..., FORWARD_VELOCITY]
    episode = rollout.get("episode").reshape(forward.shape).long()
    per_rollout = torch.stack(
        [(forward * (episode == k)).sum(1) / (episode == k).sum(1) for k in range(rollouts)], 1
    )
    return {
        "run_dir": str(run_dir),
        "algo": trainer.config.algo.name,
        "seed": trainer.config.seed,
        **result_provenance(trainer.config.seed, run_dir),
        "frames": trainer.frames,
        "target": result.tasks[:, 0].tolist(),
        "velocity": per_rollout.tolist(),
        "returns": result.returns.tolist(),
    }


def summarise(run: dict) -> list[dict]:
    """Per rollout: the fitted line, mean |v - g| and return, and the best single speed's."""
    target = run["target"]
    best_speed = statistics.median(target)
    single = statistics.fmean(abs(best_speed - g) for g in target)
    rows = []
    for k in range(len(run["velocity"][0])):
        v = [row[k] for row in run["velocity"]]
        errors = [abs(a - g) for a, g in zip(v, target, strict=True)]
        rows.append(
            {
                "rollout": k + 1,
                **fit_line(target, v),
                "mean_abs_error": statistics.fmean(errors),
                "mean_return": statistics.fmean(row[k] for row in run["returns"]),
                "best_single_speed": best_speed,
                "best_single_speed_abs_error": single,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", type=Path, required=True, help="run directories")
    parser.add_argument("--tasks", type=int, default=TEST_TASKS)
    parser.add_argument("--rollouts", type=int, default=ROLLOUTS)
    parser.add_argument("--out", type=Path, help="JSON file of the per-task numbers and fits")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    runs = []
    for run_dir in args.runs:
        run = velocities(run_dir, args.tasks, args.rollouts)
        run["fits"] = summarise(run)
        runs.append(run)
    print("| run | rollout | slope b | intercept a | R^2 | mean abs(v - g) | mean return |")
    print("|---|---|---|---|---|---|---|")
    for run in runs:
        for row in run["fits"]:
            print(
                f"| {run['algo']} seed {run['seed']} ({run['frames']:,} frames) | {row['rollout']} "
                f"| {row['slope']:.2f} | {row['intercept']:.2f} | {row['r2']:.2f} "
                f"| {row['mean_abs_error']:.2f} | {row['mean_return']:.1f} |"
            )
    fit = runs[0]["fits"][0]
    print(
        f"best single speed for these tasks: {fit['best_single_speed']:.2f}, "
        f"mean abs(v - g) {fit['best_single_speed_abs_error']:.2f}"
    )
    report = {
        "benchmark": "velocity_tracking",
        "command": " ".join(["python", "benchmarks/velocity_tracking.py", *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d"),
        "runs": runs,
    }
    if args.out is not None:
        write_result_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
