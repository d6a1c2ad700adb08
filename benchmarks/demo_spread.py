"""The spread of ``make demo`` over seeds: the reference line the demo prints.

One demo run is one seed on one machine; its numbers move with the seed and, through floating
point, with the CPU. This script trains the demo's exact configuration
(:func:`torchrl_bamdp.demo.demo_config`) for several seeds, two at a time on two cores, and
writes per-seed returns and the per-episode min / median / max over seeds to
``benchmarks/results/demo_spread.json``, which the demo then prints under its own result.

It resumes: a seed whose run directory already holds a finished result is not trained again
(a killed seed restarts from its last checkpoint). ::

    .venv/bin/python benchmarks/demo_spread.py                     # seeds 0-4, 3M frames
    .venv/bin/python benchmarks/demo_spread.py --seeds 0 1 --frames 200000 --out /tmp/s.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from torchrl_bamdp.demo import demo_config_record, machine_info
from torchrl_bamdp.utils import PACKAGE_ROOT, Job, run_jobs, write_result_json

DEFAULT_OUT = PACKAGE_ROOT / "benchmarks" / "results" / "demo_spread.json"


def git_commit() -> str | None:
    proc = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=PACKAGE_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() or None


def summarise(per_seed: list[dict]) -> dict[str, list[float]]:
    """Per-episode min / median / max over the seeds' greedy returns.

    Examples
    --------
    >>> summarise([{"mean": [1.0, 4.0]}, {"mean": [3.0, 2.0]}, {"mean": [2.0, 3.0]}])
    {'min': [1.0, 2.0], 'median': [2.0, 3.0], 'max': [3.0, 4.0]}
    """
    columns = list(zip(*(run["mean"] for run in per_seed), strict=True))
    return {
        "min": [min(c) for c in columns],
        "median": [statistics.median(c) for c in columns],
        "max": [max(c) for c in columns],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--frames", type=int, default=3_000_000)
    parser.add_argument("--jobs", type=int, default=2, help="seeds trained at once")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs/demo_spread"))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1 (got {args.jobs})")

    def result_path(seed: int) -> Path:
        return args.runs_dir / f"seed{seed}" / "demo_result.json"

    def finished(seed: int) -> bool:
        path = result_path(seed)
        return path.exists() and json.loads(path.read_text()).get("frames", 0) >= args.frames

    pending = [s for s in args.seeds if not finished(s)]
    for seed in sorted(set(args.seeds) - set(pending)):
        print(f"seed {seed}: finished before, kept", flush=True)

    def job(seed: int) -> Job:
        run_dir = args.runs_dir / f"seed{seed}"
        command = [
            sys.executable,
            "-m",
            "torchrl_bamdp.demo",
            f"--frames={args.frames}",
            f"--seed={seed}",
            f"--run-dir={run_dir}",
            f"--json={result_path(seed)}",
        ]
        return Job(f"seed {seed}", command, run_dir / "demo.log")

    failed = []

    def report_seed(job: Job, returncode: int, seconds: float) -> None:
        seed = int(job.name.removeprefix("seed "))
        if returncode == 0 and finished(seed):
            means = json.loads(result_path(seed).read_text())["mean"]
            shown = ", ".join(f"{m:.2f}" for m in means)
            print(f"seed {seed}: done in {seconds:.0f} s: [{shown}]", flush=True)
        else:
            failed.append(seed)
            print(f"seed {seed}: FAILED (exit {returncode}), see its demo.log", flush=True)

    start = time.perf_counter()
    run_jobs([job(seed) for seed in pending], args.jobs, on_done=report_seed, poll_seconds=2.0)
    if failed:
        raise SystemExit(f"seeds {failed} failed; rerun to retry them (finished seeds are kept)")
    per_seed = [json.loads(result_path(s).read_text()) for s in args.seeds]
    report = {
        "command": " ".join(["python", "benchmarks/demo_spread.py", *(argv or sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d"),
        "commit": git_commit(),
        "frames": args.frames,
        "seeds": list(args.seeds),
        "jobs": args.jobs,
        "wall_seconds_this_invocation": time.perf_counter() - start,
        "machine": machine_info(),
        # what the seeds trained: the demo prints a warning when its own config differs
        "config": demo_config_record(args.frames),
        "per_episode": summarise(per_seed),
        "bayes_optimal": per_seed[0]["rows"]["Bayes-optimal (exact DP)"],
        "per_seed": [
            {k: run[k] for k in ("seed", "frames", "train_seconds", "mean")} for run in per_seed
        ],
    }
    write_result_json(args.out, report)
    stats = report["per_episode"]
    print("| seeds | " + " | ".join(f"episode {k + 1}" for k in range(len(stats["min"]))) + " |")
    print("|---" * (len(stats["min"]) + 1) + "|")
    for run in report["per_seed"]:
        print(f"| seed {run['seed']} | " + " | ".join(f"{v:.2f}" for v in run["mean"]) + " |")
    for name in ("min", "median", "max"):
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in stats[name]) + " |")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
