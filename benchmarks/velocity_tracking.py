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
of ``g`` minimises the mean ``|v - g|``): what no adaptation at all would get at best.

Where an agent does not track its task, the script also asks whether its memory knows the task:
a linear probe of ``g`` from what the policy reads besides the state (RL2: its memory's latent,
:data:`~torchrl_bamdp.transforms.rl2.RL2_LATENT`; VariBAD: the belief's mean and log-variance)
at given steps of rollout 1, scored by its leave-one-out ``R^2`` over the test tasks (a probe
that memorises 64 tasks with 10 numbers scores near 0 or below, not near 1). High ``R^2`` with
slope ~0: the memory holds the task and the policy does not use it; low ``R^2``: the memory
never learnt it::

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
#: Steps of rollout 1 (0-based) at which the memory is probed.
PROBE_STEPS = (10, 50, 199)
#: What the policy reads of the task, per algorithm family: RL2's latent, VariBAD's belief.
MEMORY_KEYS = {
    "rl2": [("rl2", "latent")],
    "varibad": [("belief", "mean"), ("belief", "logvar")],
}


def loo_r2(features: torch.Tensor, target: torch.Tensor, ridge: float = 1e-3) -> float:
    """Leave-one-out ``R^2`` of a ridge-regularised linear probe (with intercept) of ``target``.

    Each task's prediction comes from the fit on the other tasks (closed form through the hat
    matrix), so a probe with as many features as tasks does not score 1 by memorising them.

    Examples
    --------
    >>> x = torch.linspace(0, 1, 20).unsqueeze(1)
    >>> round(loo_r2(x, 2 * x[:, 0] + 1), 4)  # exactly linear: predicted from the others
    1.0
    >>> noise = torch.randn(20, 1, generator=torch.Generator().manual_seed(0))
    >>> loo_r2(noise, x[:, 0]) < 0.2  # unrelated features explain nothing out of sample
    True
    """
    x = torch.cat([torch.ones(len(features), 1, dtype=torch.float64), features.double()], dim=1)
    y = target.double()
    penalty = ridge * torch.eye(x.shape[1], dtype=torch.float64)
    penalty[0, 0] = 0.0  # the intercept is not shrunk
    hat = x @ torch.linalg.solve(x.T @ x + penalty, x.T)
    residual = (y - hat @ y) / (1.0 - hat.diagonal())
    return float(1.0 - residual.square().sum() / (y - y.mean()).square().sum())


def fit_line(x: list[float], y: list[float]) -> dict[str, float]:
    """Least-squares ``y = intercept + slope x`` and its coefficient of determination.

    Examples
    --------
    >>> fit_line([0.0, 1.0, 2.0], [1.0, 3.0, 5.0])
    {'slope': 2.0, 'intercept': 1.0, 'r2': 1.0}
    """
    slope, intercept = statistics.linear_regression(x, y)
    # A constant y (one speed for every task) is fit exactly by the flat line.
    r2 = 1.0 if len(set(y)) == 1 else statistics.correlation(x, y) ** 2
    return {"slope": slope, "intercept": intercept, "r2": r2}


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
    probes = {}
    keys = MEMORY_KEYS.get(trainer.config.algo.name.removesuffix("_original"))
    if keys is not None:
        memory = torch.cat([rollout.get(key) for key in keys], dim=-1)
        for step in PROBE_STEPS:
            if step < memory.shape[1]:
                probes[str(step)] = loo_r2(memory[:, step], result.tasks[:, 0])
    return {
        "run_dir": str(run_dir),
        "algo": trainer.config.algo.name,
        "seed": trainer.config.seed,
        **result_provenance(trainer.config.seed, run_dir),
        "frames": trainer.frames,
        "target": result.tasks[:, 0].tolist(),
        "velocity": per_rollout.tolist(),
        "returns": result.returns.tolist(),
        "memory_probe_loo_r2": probes,
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
    for name in ("tasks", "rollouts"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1 (got {getattr(args, name)})")
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
    for run in runs:
        probes = ", ".join(f"step {t}: {r2:.2f}" for t, r2 in run["memory_probe_loo_r2"].items())
        print(f"{run['algo']} seed {run['seed']}: task from memory, leave-one-out R^2: {probes}")
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
