"""Task changes with no boundaries (issue 20, item 2): GridNavi whose goal switches unannounced.

The test env: 5 x 5 GridNavi, one rollout of ``HORIZON`` = 200 steps per task *sequence*, the
goal redrawn from the prior (uniform over the 21 candidates) with probability ``HAZARD`` = 0.05
after every step (a task lasts 20 steps on average, ~9.5 real changes per rollout), no signal,
no return to the start. Three agents, ``--seeds`` (default 0 1 2) each, the same frame budget:

* ``varibad_switching`` (a): VariBAD with the switching prior's ELBO, trained on that env
  (``bamdp-train algo=varibad_switching env.switching_hazard=0.05 env.episode_length=200
  env.episodes_per_task=1``);
* ``varibad`` (b): our VariBAD trained with *known* boundaries, on the normal GridNavi BAMDP
  (tasks of 4 x 15 steps, the belief reset at every new task), meta-tested on the switching env;
* ``belief_oracle`` (c): PPO on the exact switching posterior (the HMM filter,
  ``SwitchingGridBelief``), trained on the switching env.

All three share the PPO settings, and none reads privileged information in training: the
privileged critic (``algo.ppo.critic_task``) and the time features, which tuning/gridworld.yaml
turns on for GridNavi, are off for every run (the time of a fixed-task BAMDP means nothing on
the switching env); both VariBADs read the decoded per-cell belief (``algo.policy_belief=auto``
= ``decoded``, GridNavi task structure), the table says so. Every final policy is meta-tested on
the same 210 rollouts (the 21 initial goals 10 times each, the same switch times and goals for
every agent: the evaluation seed), greedy and with sampled actions; the score is the return per
100 steps, mean +- s.e. over seeds. References on the same rollouts, no training: uniformly
random actions; the exact filter with a greedy planner (walk to the most likely cell, nearest
first, and stay); a policy that knows the goal in force (privileged: the ceiling).

Why this size: a 2.0M-frame run of (a) takes ~6-12 minutes on 2 cores shared with other work, (b)
about as long, (c) ~3; nine runs fit in ~90 minutes. Resumable, one run at a time, interleaved
by seed: each (algo, seed) trains in ``<runs-root>/<algo>/seed<k>`` (checkpointed; a killed run
resumes) and, once at its budget, is meta-tested and written to ``<out-dir>/<algo>_seed<k>.json``;
runs with a JSON are skipped. ``--max-minutes`` bounds one invocation; ``--jobs N`` trains N runs
at once, each in a child process of this script (output in ``<runs-root>/<algo>/seed<k>.log``)::

    nice -n 5 .venv/bin/python benchmarks/switching_campaign.py --seeds 0 1 2 --max-minutes 90
    .venv/bin/python benchmarks/switching_campaign.py --summary   # the table of what is done
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import torch
from tensordict import TensorDictBase
from torchrl.envs import TransformedEnv

from torchrl_bamdp.cli import (
    add_campaign_arguments,
    campaign_child_command,
    campaign_deadline,
    compose_config,
    fail_if_any,
    train_campaign_runs,
    train_to_budget,
)
from torchrl_bamdp.envs import make_env_from_config
from torchrl_bamdp.evaluation.meta_test import meta_test
from torchrl_bamdp.policies import uniform_random_policy
from torchrl_bamdp.trainers.runs import evaluate_run_switching, learning_curve
from torchrl_bamdp.trainers.trainer import EVAL_SEED, environment_info
from torchrl_bamdp.transforms import BELIEF_PROBS, SwitchingGridBelief
from torchrl_bamdp.utils import Job, write_result_json

ROOT = Path(__file__).resolve().parent.parent

ALGORITHMS = ("varibad_switching", "varibad", "belief_oracle")
HAZARD, HORIZON, EVAL_TASKS = 0.05, 200, 210
SWITCHING = [
    f"env.switching_hazard={HAZARD}",
    f"env.episode_length={HORIZON}",
    "env.episodes_per_task=1",
]
#: The same PPO settings for every run, nothing privileged (see the module docstring).
SHARED = ["env=gridworld", "algo.ppo.critic_task=false", "algo.ppo.time_features=false"]
#: What each run trains on: (b) on the normal GridNavi BAMDP, the others on the switching env.
TRAINED_ON = {"varibad_switching": SWITCHING, "varibad": [], "belief_oracle": SWITCHING}
LABELS = {
    "varibad_switching": "(a) varibad_switching, trained on the switching env",
    "varibad": "(b) varibad, trained with known boundaries (4 x 15-step tasks)",
    "belief_oracle": "(c) belief_oracle on the exact switching posterior",
}
EVAL_FRAMES = 256_000  # meta-test on the run's own env every ~256k training frames
TRAINED_MARKER = "switching_campaign_trained.json"


def overrides(algo: str) -> list[str]:
    return [f"algo={algo}", *SHARED, *TRAINED_ON[algo]]


def train_one(algo: str, seed: int, args: argparse.Namespace, deadline: float) -> bool:
    """Train (or continue) one run; whether it has reached its frame budget."""
    minutes = max(1.0, (deadline - time.time()) / 60)
    trained = train_to_budget(
        Path(args.runs_root) / algo / f"seed{seed}",
        [*overrides(algo), f"seed={seed}"],
        args.frames,
        minutes,
        EVAL_FRAMES,
        label=f"{algo} seed {seed}",
        marker=TRAINED_MARKER,
    )
    return trained is not None


def _machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
    }


def evaluate_one(algo: str, seed: int, args: argparse.Namespace) -> dict:
    """Meta-test a trained run on the switching env (greedy and sampled); its JSON record."""
    run_dir = Path(args.runs_root) / algo / f"seed{seed}"
    start = time.perf_counter()
    results = {
        mode: evaluate_run_switching(
            run_dir, HAZARD, HORIZON, tasks=EVAL_TASKS, deterministic=mode == "greedy"
        )
        for mode in ("greedy", "sampled")
    }
    versions = environment_info(seed)  # its git_commit is the run's commit
    return {
        "benchmark": "switching_campaign",
        "algo": algo,
        "seed": seed,
        "overrides": overrides(algo),
        "frames": results["greedy"]["frames"],
        "train_seconds": results["greedy"]["train_seconds"],
        "eval_seconds": round(time.perf_counter() - start, 1),
        "hazard": HAZARD,
        "horizon": HORIZON,
        "commit": (versions["git_commit"] or "unknown")[:7],
        "date": time.strftime("%Y-%m-%d"),
        "machine": _machine(),
        "versions": versions,
        "return_per_100": {m: r["return_per_100"] for m, r in results.items()},
        "stderr_per_100_over_tasks": {m: r["stderr_per_100"] for m, r in results.items()},
        "meta_test": results,
        "learning_curve": learning_curve(run_dir),
        "config": json.loads((run_dir / "config.json").read_text()),
    }


# -- references on the same rollouts, no training ------------------------------------------------
GOAL_MOVES = {(1, 0): 2, (-1, 0): 4, (0, 1): 1, (0, -1): 3}  # right, left, up, down


def _walk_to(position: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """GridNavi actions one step from ``position`` toward ``target`` (x first; noop there)."""
    delta = (target - position.long()).sign()
    action = torch.zeros(position.shape[:-1], dtype=torch.long)
    for (dx, dy), index in GOAL_MOVES.items():
        if dx:
            action = torch.where(delta[..., 0] == dx, index, action)
        elif dy:
            action = torch.where((delta[..., 0] == 0) & (delta[..., 1] == dy), index, action)
    return action


def greedy_filter_policy(grid: int):
    """Walk to the most likely goal cell under the exact switching posterior (the nearest of
    equally likely ones) and stay there: the exact Bayes filter with a myopic planner."""
    cells = torch.stack(torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij"), -1)
    cells = cells.reshape(-1, 2)

    def policy(td: TensorDictBase) -> TensorDictBase:
        position, probs = td["observation"].long(), td[BELIEF_PROBS]
        distance = (cells.unsqueeze(0) - position.unsqueeze(1)).abs().sum(-1)
        # Probabilities of distinct beliefs differ by far more than 1e-6; ties go to the nearest.
        target = cells[(probs - 1e-6 * distance).argmax(-1)]
        td["action"] = _walk_to(position, target)
        return td

    return policy


def knows_the_goal_policy(td: TensorDictBase) -> TensorDictBase:
    """Walk to the goal in force and stay (reads the privileged ``task``: the ceiling)."""
    td["action"] = _walk_to(td["observation"].long(), td["task"].long())
    return td


def references(seeds: list[int]) -> dict:
    """Return per 100 steps of the policies that need no training, on the meta-test rollouts."""
    config = compose_config(overrides("belief_oracle"))
    env = make_env_from_config(
        config.env,
        seed=EVAL_SEED,
        num_envs=EVAL_TASKS,
        stratified=True,
        episodes_per_task=1,
    )
    env = TransformedEnv(env, SwitchingGridBelief.from_env(env))
    rows = {
        "exact filter + greedy planner (no training)": greedy_filter_policy(config.env.grid_size),
        "knows the goal in force (privileged ceiling)": knows_the_goal_policy,
    }
    out = {}
    for label, policy in rows.items():
        returns = meta_test(env, policy, 1, HORIZON, seed=EVAL_SEED).returns[:, 0] * 100 / HORIZON
        out[label] = {"mean": float(returns.mean()), "stderr_over_tasks": _se(returns)}
    random = []
    for seed in seeds:
        policy = uniform_random_policy(env.action_spec.n, seed=seed)
        returns = meta_test(env, policy, 1, HORIZON, seed=EVAL_SEED).returns[:, 0] * 100 / HORIZON
        random.append(float(returns.mean()))
    out["uniformly random actions"] = {"mean": _mean(random), "stderr_over_seeds": _se(random)}
    return out


def _mean(values) -> float:
    return float(torch.as_tensor(values, dtype=torch.float64).mean())


def _se(values) -> float:
    values = torch.as_tensor(values, dtype=torch.float64)
    return float(values.std() / math.sqrt(len(values))) if len(values) > 1 else math.nan


def summary(out_dir: Path, seeds: list[int], with_references: bool = True) -> dict | None:
    runs = [json.loads(p.read_text()) for p in sorted(out_dir.glob("*_seed*.json"))]
    if not runs:
        return None
    rows = {}
    for algo in ALGORITHMS:
        mine = sorted((r for r in runs if r["algo"] == algo), key=lambda r: r["seed"])
        if not mine:
            continue
        rows[algo] = {
            "label": LABELS[algo],
            "seeds": [r["seed"] for r in mine],
            "frames": [r["frames"] for r in mine],
            "train_minutes": [round(r["train_seconds"] / 60, 1) for r in mine],
            **{
                mode: {
                    "per_seed": [round(r["return_per_100"][mode], 2) for r in mine],
                    "mean": _mean([r["return_per_100"][mode] for r in mine]),
                    "stderr_over_seeds": _se([r["return_per_100"][mode] for r in mine]),
                }
                for mode in ("greedy", "sampled")
            },
        }
    return {
        "benchmark": "switching_campaign",
        "hazard": HAZARD,
        "horizon": HORIZON,
        "eval_tasks": EVAL_TASKS,
        "command": "nice -n 5 .venv/bin/python benchmarks/switching_campaign.py --seeds 0 1 2",
        "algorithms": rows,
        "references": references(seeds) if with_references else {},
    }


def markdown(report: dict) -> str:
    def cell(entry: dict) -> str:
        se = entry["stderr_over_seeds"]
        return f"{entry['mean']:.1f} +- {se:.1f}" if math.isfinite(se) else f"{entry['mean']:.1f}"

    lines = [
        f"GridNavi 5x5, the goal redrawn with probability {report['hazard']} per step, rollouts of "
        f"{report['horizon']} steps; return per 100 steps on {report['eval_tasks']} test rollouts "
        "(mean +- s.e. over seeds)",
        "",
        "| agent | seeds | frames | greedy | sampled actions |",
        "|---|---|---|---|---|",
    ]
    for row in report["algorithms"].values():
        frames = f"{max(row['frames']) / 1e6:.1f}M"
        seeds = ", ".join(map(str, row["seeds"]))
        lines.append(
            f"| {row['label']} | {seeds} | {frames} | {cell(row['greedy'])} | "
            f"{cell(row['sampled'])} |"
        )
    for label, ref in report["references"].items():
        over = "seeds" if "stderr_over_seeds" in ref else "tasks"
        se = ref[f"stderr_over_{over}"]
        lines.append(f"| {label} | | | {ref['mean']:.1f} +- {se:.1f} (over {over}) | |")
    return "\n".join(lines) + "\n"


def child_job(args: argparse.Namespace, algo: str, seed: int, deadline: float) -> Job:
    """One run of a ``--jobs`` campaign as a child invocation of this script."""
    run = ["--algos", algo, "--seeds", str(seed), "--frames", str(args.frames)]
    command = campaign_child_command(__file__, run, args, deadline)
    log = Path(args.runs_root) / algo / f"seed{seed}.log"
    return Job(f"{algo} seed {seed}", command, log)


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algos", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    # 53 x 38,400: whole batches of both the switching env (64 x 200) and GridNavi (64 x 60).
    parser.add_argument("--frames", type=int, default=2_035_200)
    add_campaign_arguments(
        parser,
        runs_root="runs/switching_campaign",
        out_dir=str(ROOT / "benchmarks/results/switching"),
        log="<runs-root>/<algo>/seed<k>.log",
    )
    parser.add_argument("--summary", action="store_true", help="only rebuild the summary")
    parser.add_argument(
        "--no-references", action="store_true", help="leave the untrained references out"
    )
    args = parser.parse_args(argv)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    deadline = campaign_deadline(args)
    runs = [
        (algo, seed)
        for seed in ([] if args.summary else args.seeds)
        for algo in args.algos
        if not (out_dir / f"{algo}_seed{seed}.json").exists()
    ]

    def train(run: tuple[str, int]) -> None:
        algo, seed = run
        if train_one(algo, seed, args, deadline):
            record = evaluate_one(algo, seed, args)
            out = out_dir / f"{algo}_seed{seed}.json"
            write_result_json(out, record)
            print(f"  wrote {out}: return per 100 steps {record['return_per_100']}", flush=True)

    failed = train_campaign_runs(
        runs, args, deadline, child=lambda run: child_job(args, *run, deadline), train=train
    )
    if args.no_summary:
        return None
    report = summary(out_dir, args.seeds, with_references=not args.no_references)
    if report is None:
        print("no finished runs yet")
    else:
        write_result_json(out_dir / "summary.json", report)
        table = markdown(report)
        (out_dir / "summary.md").write_text(table)
        print(table)
    fail_if_any(failed)
    return report


if __name__ == "__main__":
    main()
