"""VariBAD on pixel GridNavi (issue 20, item 3): per-episode returns vs Bayes-optimal.

Trains ``bamdp-train env=gridworld env.observation=pixels algo=varibad`` (the 5x5 grid and
every other GridNavi default: ``configs/tuning/gridworld.yaml``, so the privileged critic and the
decoded per-cell belief too) with the policy's frame embedding ``algo.cnn.policy=<--policy>``
for ``--frames`` frames, then meta-tests the final greedy policy on the 210 stratified test
tasks (every goal 10 times) and writes ``<out-dir>/<tag>.json`` (per-episode mean +- s.e., the
exact Bayes-optimal returns of the same task distribution, frames, training wall-clock, the
learning curve, config, versions, machine) and the belief heatmap of the pixel agent
(``<tag>_belief_rollout.png``, Fig 3a on the goal (4, 2)).

Resumable: the run trains in ``<runs-root>/<tag>`` and checkpoints every
``train.checkpoint_interval`` iterations; ``--max-minutes`` bounds one invocation, and the same
command continues a stopped run (a finished run is only re-evaluated when its JSON is missing)::

    nice -n 5 .venv/bin/python benchmarks/pixel_gridnavi.py --max-minutes 70
    nice -n 5 .venv/bin/python benchmarks/pixel_gridnavi.py --policy separate \\
        --frames 500000 --tag cnn_separate_500k     # the CNN comparison's runs

``--summary`` prints the table of the JSON files in ``--out-dir``; ``--partial`` meta-tests a
run stopped before its budget as it is (no training; the JSON says ``reached_budget: false``),
e.g. a run too slow to finish in the time given.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

from torchrl_bamdp.cli import train_to_budget
from torchrl_bamdp.configs import config_to_dict
from torchrl_bamdp.trainers.runs import evaluate_run, learning_curve, trained_commits
from torchrl_bamdp.trainers.trainer import environment_info
from torchrl_bamdp.utils import write_result_json

ROOT = Path(__file__).resolve().parent.parent
#: The task: GridNavi's defaults, observed as 3 x 32 x 32 frames.
TASK = ["env=gridworld", "env.observation=pixels", "algo=varibad"]
EVAL_FRAMES = 100_000  # meta-test every ~100k training frames (the learning curve)
FIGURE = "fig3a_belief_rollout.png"


def train(args: argparse.Namespace, run_dir: Path) -> dict | None:
    """Train (or continue) the run until its budget or ``--max-minutes``; the train result
    once the budget is reached, else ``None``."""
    trained = train_to_budget(
        run_dir,
        [*TASK, f"algo.cnn.policy={args.policy}", f"seed={args.seed}"],
        args.frames,
        args.max_minutes,
        EVAL_FRAMES,
        figures=True,  # the belief heatmap of the pixel agent
        progress_bar=args.progress,
    )
    return None if trained is None else trained[1]


def record(args: argparse.Namespace, run_dir: Path) -> dict:
    """Meta-test the trained run; the JSON record."""
    from torchrl_bamdp.configs.schema import read_run_config
    from torchrl_bamdp.evaluation.report import bayes_optimal_returns

    report = evaluate_run(run_dir)
    config = read_run_config(run_dir)
    versions = environment_info(args.seed)
    commits = trained_commits(run_dir)  # one per invocation that trained the run
    optimal = bayes_optimal_returns(config, config.env.episodes_per_task)
    return {
        "benchmark": "pixel_gridnavi",
        "tag": args.tag,
        "budget_frames": args.frames,
        "reached_budget": report["frames"] >= args.frames,
        "command": f"python benchmarks/pixel_gridnavi.py --policy {args.policy} --frames "
        f"{args.frames} --seed {args.seed} --tag {args.tag}",
        "overrides": [*TASK, f"algo.cnn.policy={config.algo.cnn.policy}", f"seed={args.seed}"],
        # The commit the run trained with (its first start), not this process's.
        "commit": commits[0],
        "commits": sorted(set(commits)),
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "load_average_at_end": list(os.getloadavg()),
        },
        "versions": versions,
        "frames": report["frames"],
        "train_minutes": round(report["train_seconds"] / 60.0, 2),
        "frames_per_second": round(report["frames"] / max(report["train_seconds"], 1e-9), 1),
        "invocations": len(commits),
        "bayes_optimal": [round(r, 4) for r in optimal],
        "per_episode": {"mean": report["mean"], "stderr": report["stderr"]},
        "meta_test": report,
        "learning_curve": learning_curve(run_dir),
        "config": config_to_dict(config),
    }


def summary(out_dir: Path) -> str:
    """A markdown table of every record in ``out_dir``."""
    lines = [
        "| run | CNN policy | frames | minutes | frames/s | episode 1 | episode 2 | episode 3 "
        "| episode 4 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    optimal = None
    for path in sorted(out_dir.glob("*.json")):
        r = json.loads(path.read_text())
        if r.get("benchmark") != "pixel_gridnavi":
            continue
        optimal = r["bayes_optimal"]
        means = r["per_episode"]["mean"]
        errors = r["per_episode"]["stderr"]
        cells = [f"{m:.2f} +- {e:.2f}" for m, e in zip(means, errors, strict=True)]
        policy = r["config"]["algo"]["cnn"]["policy"]
        frames = f"{r['frames']:,}" + ("" if r.get("reached_budget", True) else " (stopped)")
        fps = f"{r['frames_per_second']:.0f}"
        row = [r["tag"], policy, frames, f"{r['train_minutes']:.1f}", fps, *cells]
        lines.append("| " + " | ".join(row) + " |")
    if optimal is not None:
        cells = " | ".join(f"{m:.2f}" for m in optimal)
        lines.append(f"| Bayes-optimal | | | | | {cells} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", choices=("separate", "shared"), default="shared")
    parser.add_argument("--frames", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-minutes", type=float, default=70.0)
    parser.add_argument("--tag", default=None, help="run and JSON name (default: from options)")
    parser.add_argument("--runs-root", default="runs/pixels")
    parser.add_argument("--out-dir", default=str(ROOT / "benchmarks/results/pixels"))
    parser.add_argument("--progress", action="store_true", help="show the progress bar")
    parser.add_argument("--summary", action="store_true", help="only print the table")
    parser.add_argument(
        "--partial", action="store_true", help="meta-test the run as it is, without training"
    )
    args = parser.parse_args(argv)
    out_dir = Path(args.out_dir)
    if args.summary:
        print(summary(out_dir))
        return None
    args.tag = args.tag or f"varibad_{args.policy}_{args.frames // 1000}k_seed{args.seed}"
    run_dir = Path(args.runs_root) / args.tag
    out = out_dir / f"{args.tag}.json"
    if not args.partial and train(args, run_dir) is None:
        return None  # stopped by --max-minutes; the same command resumes it
    data = record(args, run_dir)
    write_result_json(out, data)
    figure = run_dir / "figures" / FIGURE
    if figure.exists():
        shutil.copyfile(figure, out_dir / f"{args.tag}_belief_rollout.png")
    means = [round(m, 2) for m in data["per_episode"]["mean"]]
    print(f"  wrote {out}: {means} (Bayes-optimal {[round(m, 2) for m in data['bayes_optimal']]})")
    print(summary(out_dir))
    return data


if __name__ == "__main__":
    main()
