"""VariBAD next to RL2, oracle, belief oracle, Bayes-optimal and random on GridNavi (issue #4).

``--env`` runs the same comparison on another task family (e.g. ``--env cheetah_vel --algos
varibad rl2``; ``belief_oracle``/``bayes_optimal``/``random`` are GridNavi-only), with that
family's packaged hyperparameters (``configs/tuning/<env>.yaml``); outputs then go to
``runs/<env>_baselines`` and ``benchmarks/results/<env>`` as ``<env>_baselines.json/.md``.

One command trains every algorithm for every seed with ``bamdp-train`` (each run in its own
directory, ``--jobs`` processes at a time), meta-tests every run on the same fixed test tasks,
aggregates per-episode returns over seeds and draws the paper's figures:

- ``fig3a_belief_rollout``: a VariBAD test rollout, the decoder's reward posterior per cell at
  every step next to the exact posterior;
- ``fig3b_latents``: VariBAD's latent mean and log-variance along that rollout;
- ``fig4_per_episode``: per-episode test return of every algorithm (mean +- s.e. over seeds)
  with the Bayes-optimal and oracle values as references;
- ``fig4_learning_curves``: test return vs frames for every trained algorithm.

Runs that exist already are continued from their checkpoint (or skipped once finished), so a
killed benchmark loses at most one checkpoint interval per run when started again.

Run: ``.venv/bin/python benchmarks/gridworld_baselines.py`` (defaults: 5 seeds, 3M frames per
run, 2 processes; about 75 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from torchrl_bamdp.configs.schema import ENV_NAMES
from torchrl_bamdp.utils import Job, run_jobs, write_result_json

ROOT = Path(__file__).resolve().parent.parent
TRAINED = ("varibad", "rl2", "oracle", "belief_oracle")
REFERENCES = ("bayes_optimal", "random")


def _finished(run_dir: Path, frames: int) -> bool:
    checkpoint = run_dir / "checkpoints" / "last.pt"
    if not checkpoint.exists():
        return False
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    except Exception:  # a torn checkpoint: let bamdp-train report or redo it
        return False
    name = state.get("config", {}).get("algo", {}).get("name")
    return name in REFERENCES or state.get("frames", 0) >= frames


def train_all(args: argparse.Namespace) -> list[Path]:
    """Start (or continue) every (algo, seed) run; ``--jobs`` at a time. Returns the run dirs."""
    bamdp_train = Path(sys.executable).parent / "bamdp-train"
    pending, runs = [], []
    for seed in args.seeds:
        for algo in args.algos:
            run_dir = args.runs_dir / algo / f"seed{seed}"
            runs.append(run_dir)
            if _finished(run_dir, args.frames):
                continue
            command = [
                str(bamdp_train),
                f"env={args.env}",
                f"algo={algo}",
                f"seed={seed}",
                f"run_dir={run_dir}",
                f"train.total_frames={args.frames}",
                "train.progress_bar=false",
                *args.override,
            ]
            pending.append(Job(str(run_dir), command, run_dir / "train.log"))
    failed = run_jobs(pending, args.jobs)
    if failed:
        raise SystemExit(
            f"{len(failed)} runs failed; see train.log in {[j.log.parent for j in failed]}"
        )
    return runs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--env", default="gridworld", choices=ENV_NAMES, help="task family (bamdp-train env=)"
    )
    parser.add_argument("--algos", nargs="+", default=[*TRAINED, *REFERENCES])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--frames", type=int, default=3_000_000)
    parser.add_argument("--jobs", type=int, default=2, help="training processes at a time")
    parser.add_argument("--eval-tasks", type=int, default=420)
    parser.add_argument("--runs-dir", type=Path, default=None, help="default: runs/<env>_baselines")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default: benchmarks/results/baselines (gridworld), benchmarks/results/<env>",
    )
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument(
        "--override", nargs="*", default=[], help="extra bamdp-train overrides for every run"
    )
    args = parser.parse_args(argv)
    if args.runs_dir is None:
        args.runs_dir = ROOT / "runs" / f"{args.env}_baselines"
    if args.out is None:
        results = "baselines" if args.env == "gridworld" else args.env
        args.out = ROOT / "benchmarks" / "results" / results
    start = time.perf_counter()
    if args.skip_training:
        runs = [args.runs_dir / a / f"seed{s}" for s in args.seeds for a in args.algos]
    else:
        runs = train_all(args)
    from torchrl_bamdp.trainers.runs import write_baseline_report

    report = write_baseline_report(
        runs,
        args.out,
        eval_tasks=args.eval_tasks,
        command=" ".join(["python", *(sys.argv if argv is None else [__file__, *argv])]),
        extra={"frames_budget": args.frames, "seeds": args.seeds, "jobs": args.jobs},
    )
    report["benchmark_wall_clock_s"] = time.perf_counter() - start
    name = f"{args.env}_baselines"
    write_result_json(args.out / f"{name}.json", report)
    print((args.out / f"{name}.md").read_text())


if __name__ == "__main__":
    main()
