"""MuJoCo campaign of issue 19: the paper's Figure 4 (the first 5 rollouts of new tasks), ours.

Per task family (default ``cheetah_dir``, ``cheetah_vel``, ``walker_rand_params``: the last
changes the dynamics, not the reward) and seed, each algorithm is trained at the family's
shipped settings (``bamdp-train env=<family> algo=<algo>``: ``configs/tuning/<family>.yaml``,
each difference from the original stated there) for ``--frames`` frames (default 5M; the
original trains for 1e8), and its *final* policy is meta-tested greedy on 64 fixed test tasks
(the trainer's seeded test stream, the same for every run) for the first **5** rollouts (2 are
trained). Algorithms:

- ``varibad``: our VariBAD;
- ``rl2``: RL2 (the RL loss trains the GRU);
- ``oracle``: PPO whose policy reads the true task: a privileged upper reference, not a
  meta-learner;
- ``random``: the uniformly random policy (not trained): the floor reference;
- ``varibad_original``: the official implementation's configuration
  (``configs/original/varibad_original_<family>.yaml``) at the same frame budget, on
  ``cheetah_vel`` only by default (``--original-on``).

The summary gives, per family and rollout, the mean +- s.e. over seeds of the return and of the
normalised score ``(R - R_random) / (R_oracle - R_random)`` (per seed, against the seed means of
the random and oracle rows of that rollout), and checks the issue's targets: VariBAD's
rollout-1 score >= 0.8 on ``cheetah_dir`` and ``cheetah_vel``, above RL2's, and rollout 2 >=
rollout 1. It writes ``summary.json``, ``summary.md`` and per family ``fig4_per_episode`` and
``fig4_learning_curves`` (PNG + PDF, from the committed JSON records, not from run
directories); ``--readme README.md`` replaces the README block between
``<!-- mujoco_campaign:begin -->`` and ``<!-- mujoco_campaign:end -->`` with the summary, so the
README's MuJoCo section regenerates from this one command.

Resumable and split across sessions: each (family, algorithm, seed) trains in
``<runs-root>/<family>/<algo>/seed<k>`` (checkpointed; a killed run resumes) and, at its budget,
is meta-tested and written to ``<out-dir>/<family>/<algo>_seed<k>.json``; runs with a JSON are
skipped. ``--max-minutes`` bounds one invocation. Runs go one at a time in this process, seed 0
of everything first, or with ``--jobs N`` N at a time, each in a child process of this script
(its output in ``<runs-root>/<family>/<algo>/seed<k>.log``; on 2 cores 2 jobs, or 4 when they
are single-threaded RL2 runs, keep both cores busy)::

    .venv/bin/python benchmarks/mujoco_campaign.py --seeds 0 1 2 --max-minutes 150
    .venv/bin/python benchmarks/mujoco_campaign.py --algos rl2 --seeds 0 1 2 --jobs 2
    .venv/bin/python benchmarks/mujoco_campaign.py --summary --readme README.md
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import time
from pathlib import Path
from typing import Any

from torchrl_bamdp.cli import (
    add_campaign_arguments,
    campaign_child_command,
    campaign_deadline,
    fail_if_any,
    train_campaign_runs,
    train_to_budget,
)
from torchrl_bamdp.configs import config_to_dict
from torchrl_bamdp.trainers.runs import learning_curve, result_provenance
from torchrl_bamdp.utils import Job, write_result_json

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ("cheetah_dir", "cheetah_vel", "walker_rand_params")
ALGORITHMS = ("varibad", "rl2", "oracle", "random", "varibad_original")
LABELS = {
    "varibad": "VariBAD",
    "rl2": "RL2",
    "oracle": "Oracle (privileged: reads the true task)",
    "random": "Random (floor)",
    "varibad_original": "VariBAD (original config)",
}
FRAMES = 5_000_000  # the original: 1e8
TEST_TASKS = 64
ROLLOUTS = 5  # the paper's Figure 4: the first 5 rollouts of a new task
EVAL_FRAMES = 100_000  # meta-test during training every ~100k frames (train.eval_tasks tasks)
TRAINED_MARKER = "mujoco_campaign_trained.json"
#: Issue 19's targets on the families whose task is in the reward.
TARGET_FAMILIES = ("cheetah_dir", "cheetah_vel")
TARGET_SCORE = 0.8
README_BEGIN = "<!-- mujoco_campaign:begin -->"
README_END = "<!-- mujoco_campaign:end -->"


def run_dir_of(args: argparse.Namespace, family: str, algo: str, seed: int) -> Path:
    return Path(args.runs_root) / family / algo / f"seed{seed}"


def overrides_of(family: str, algo: str, seed: int, extra: list[str]) -> list[str]:
    return [f"env={family}", f"algo={algo}", f"seed={seed}", *extra]


def run_one(
    family: str, algo: str, seed: int, args: argparse.Namespace, deadline: float
) -> dict | None:
    """Train (or continue) one run; its record once at its budget and meta-tested, else None."""
    from torchrl_bamdp.trainers.runs import evaluate_run

    run_dir = run_dir_of(args, family, algo, seed)
    overrides = overrides_of(family, algo, seed, args.override)
    trained = train_to_budget(
        run_dir,
        overrides,
        args.frames,
        max(1.0, (deadline - time.time()) / 60),
        args.eval_frames,
        label=f"{family} {algo} seed {seed}",
        marker=TRAINED_MARKER,
    )
    if trained is None:
        return None
    config, _ = trained
    report = evaluate_run(run_dir, tasks=args.test_tasks, episodes=args.rollouts)
    return {
        "benchmark": "mujoco_campaign",
        "family": family,
        "overrides": overrides,
        **result_provenance(seed, run_dir),
        **report,
        "deterministic": config.train.eval_deterministic,
        "learning_curve": learning_curve(run_dir),
        "config": config_to_dict(config),
    }


# -- summary -----------------------------------------------------------------------------------
def _mean_se(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return mean, se


def family_summary(records: list[dict]) -> dict[str, Any]:
    """Per algorithm: per-rollout return and normalised score, mean +- s.e. over seeds."""
    by_algo: dict[str, list[dict]] = {}
    for record in sorted(records, key=lambda r: r["seed"]):
        by_algo.setdefault(record["algo"], []).append(record)
    rollouts = min(len(r["mean"]) for r in records)
    seed_mean = {
        algo: [statistics.fmean(r["mean"][k] for r in runs) for k in range(rollouts)]
        for algo, runs in by_algo.items()
    }
    low, high = seed_mean.get("random"), seed_mean.get("oracle")
    algorithms = {}
    for algo in [a for a in ALGORITHMS if a in by_algo]:
        runs = by_algo[algo]
        returns = [_mean_se([r["mean"][k] for r in runs]) for k in range(rollouts)]
        row: dict[str, Any] = {
            "label": LABELS[algo],
            "seeds": [r["seed"] for r in runs],
            "mean": [m for m, _ in returns],
            "stderr": [s for _, s in returns],
            "frames": sorted({r["frames"] for r in runs}),
            "train_minutes": [round(r["train_seconds"] / 60, 1) for r in runs],
            "per_seed": {str(r["seed"]): [round(m, 2) for m in r["mean"][:rollouts]] for r in runs},
            "normalized_mean": None,
            "normalized_stderr": None,
        }
        if low is not None and high is not None:
            scores = [
                _mean_se([(r["mean"][k] - low[k]) / (high[k] - low[k]) for r in runs])
                for k in range(rollouts)
            ]
            row["normalized_mean"] = [m for m, _ in scores]
            row["normalized_stderr"] = [s for _, s in scores]
        algorithms[algo] = row
    return {
        "rollouts": rollouts,
        "test_tasks": sorted({r["num_tasks"] for r in records}),
        "trained_rollouts": sorted({r["config"]["env"]["episodes_per_task"] for r in records}),
        "algorithms": algorithms,
    }


def targets(families: dict[str, dict]) -> dict[str, Any]:
    """Issue 19's targets where the rows they need exist."""
    out = {}
    for family in TARGET_FAMILIES:
        algos = families.get(family, {}).get("algorithms", {})
        varibad, rl2 = algos.get("varibad"), algos.get("rl2")
        if varibad is None or varibad["normalized_mean"] is None:
            continue
        score = varibad["normalized_mean"][0]
        entry = {
            "varibad_rollout1_score": score,
            "score_met": score >= TARGET_SCORE,
            "adapts": varibad["mean"][1] >= varibad["mean"][0],
        }
        if rl2 is not None and rl2["normalized_mean"] is not None:
            entry["rl2_rollout1_score"] = rl2["normalized_mean"][0]
            entry["above_rl2"] = score > rl2["normalized_mean"][0]
        out[family] = entry
    return out


def summary(out_dir: Path) -> dict[str, Any]:
    families = {}
    for family in FAMILIES:
        records = [json.loads(p.read_text()) for p in sorted((out_dir / family).glob("*.json"))]
        records = [r for r in records if r.get("benchmark") == "mujoco_campaign"]
        if records:
            families[family] = family_summary(records)
    return {
        "benchmark": "mujoco_campaign",
        "command": "python benchmarks/mujoco_campaign.py --seeds 0 1 2",
        "original_frames": 100_000_000,
        "families": families,
        "targets": targets(families),
    }


def _cell(mean: float, se: float, digits: int = 1) -> str:
    return f"{mean:.{digits}f}" if math.isnan(se) else f"{mean:.{digits}f} +- {se:.{digits}f}"


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "Final policies (greedy), meta-tested on fixed test tasks (the same for every run), "
        "mean +- s.e. over seeds; in brackets the normalised score (R - R_random) / "
        f"(R_oracle - R_random) of that rollout. Command: `{report['command']}`.",
        "",
    ]
    for family, fam in report["families"].items():
        k = fam["rollouts"]
        tasks = "/".join(str(n) for n in fam["test_tasks"])
        trained = "/".join(str(n) for n in fam["trained_rollouts"])
        lines += [f"{family}: {tasks} test tasks, the first {k} rollouts ({trained} trained).", ""]
        header = ["algorithm", *(f"rollout {i + 1}" for i in range(k))]
        header += ["seeds", "frames per run", "train minutes per run"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in fam["algorithms"].values():
            cells = []
            for i in range(k):
                cell = _cell(row["mean"][i], row["stderr"][i])
                if row["normalized_mean"] is not None:
                    cell += f" ({_cell(row['normalized_mean'][i], row['normalized_stderr'][i], 2)})"
                cells.append(cell)
            minutes = statistics.fmean(row["train_minutes"]) if row["train_minutes"] else 0.0
            frames = "/".join(f"{f:,}" for f in row["frames"])
            lines.append(
                f"| {row['label']} | " + " | ".join(cells) + f" | {len(row['seeds'])} | {frames} "
                f"| {minutes:.1f} |"
            )
        lines.append("")
    for family, entry in report["targets"].items():
        text = (
            f"Target on {family}: VariBAD rollout-1 score {entry['varibad_rollout1_score']:.2f} "
            f"(>= {TARGET_SCORE}: {'met' if entry['score_met'] else 'not met'})"
        )
        if "above_rl2" in entry:
            text += (
                f"; above RL2's {entry['rl2_rollout1_score']:.2f}: "
                f"{'yes' if entry['above_rl2'] else 'no'}"
            )
        text += f"; rollout 2 >= rollout 1: {'yes' if entry['adapts'] else 'no'}."
        lines.append(text)
    return "\n".join(lines).rstrip() + "\n"


def write_figures(report: dict[str, Any], out_dir: Path) -> list[Path]:
    """Per family: the per-rollout figure and the learning curves, from the JSON records."""
    from torchrl_bamdp.evaluation.plots import plot_learning_curves, plot_per_episode_returns

    written = []
    for family, fam in report["families"].items():
        rows = fam["algorithms"]
        references = {rows[a]["label"]: rows[a]["mean"] for a in ("oracle", "random") if a in rows}
        results = {
            r["label"]: (r["mean"], r["stderr"])
            for a, r in rows.items()
            if a not in ("oracle", "random")
        }
        if results:
            written += plot_per_episode_returns(
                results,
                out_dir / family / "fig4_per_episode",
                references=references,
                title=f"{family}: meta-test return per rollout\nmean +- s.e. over seeds",
                ylabel="return of the rollout",
            )
        curves = {}
        for algo, row in rows.items():
            if algo == "random":
                continue
            records = [
                json.loads((out_dir / family / f"{algo}_seed{s}.json").read_text())
                for s in row["seeds"]
            ]
            points = [{p["frames"]: sum(p["mean"]) for p in r["learning_curve"]} for r in records]
            common = sorted(set.intersection(*(set(p) for p in points))) if points else []
            if not common:
                continue
            stats = [_mean_se([p[f] for p in points]) for f in common]
            curves[row["label"]] = (common, [m for m, _ in stats], [s for _, s in stats])
        if curves:
            written += plot_learning_curves(
                curves,
                out_dir / family / "fig4_learning_curves",
                title=f"{family}: test return during training\n(mean +- s.e. over seeds)",
                ylabel="test return (sum over the meta-test's rollouts)",
            )
    return written


_README_BLOCK = re.compile(re.escape(README_BEGIN) + r".*?" + re.escape(README_END), re.S)


def check_readme(path: Path) -> str | None:
    """Why ``path`` cannot take the campaign's block, or ``None`` if it can."""
    if not path.is_file():
        return f"--readme {path}: no such file"
    if not _README_BLOCK.search(path.read_text()):
        return f"--readme {path}: no block between {README_BEGIN} and {README_END} to replace"
    return None


def update_readme(path: Path, table: str) -> None:
    """Replace the README block between the campaign's markers with ``table``."""
    block = f"{README_BEGIN}\n{table}{README_END}"
    path.write_text(_README_BLOCK.sub(lambda _: block, path.read_text(), count=1))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument(
        "--algos",
        nargs="+",
        default=[a for a in ALGORITHMS if a != "varibad_original"],
        choices=ALGORITHMS,
        help="varibad_original runs on the --original-on families even when not named",
    )
    parser.add_argument("--original-on", nargs="*", default=["cheetah_vel"], choices=FAMILIES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--frames", type=int, default=FRAMES)
    parser.add_argument("--test-tasks", type=int, default=TEST_TASKS)
    parser.add_argument("--rollouts", type=int, default=ROLLOUTS)
    parser.add_argument("--eval-frames", type=int, default=EVAL_FRAMES)
    parser.add_argument(
        "--override",
        nargs="*",
        default=[],
        help="extra bamdp-train overrides of every new run (e.g. for a smoke test)",
    )
    add_campaign_arguments(
        parser,
        runs_root="runs/mujoco_campaign",
        out_dir=str(ROOT / "benchmarks/results/mujoco_campaign"),
        log="<runs-root>/<family>/<algo>/seed<k>.log",
    )
    parser.add_argument("--summary", action="store_true", help="only rebuild the summary")
    parser.add_argument("--readme", type=Path, help="README whose campaign block is rewritten")
    args = parser.parse_args(argv)
    for name in ("frames", "test_tasks", "rollouts", "eval_frames"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(args, name)})")
    if args.readme is not None and (problem := check_readme(args.readme)) is not None:
        parser.error(problem)  # before hours of training, not after
    return args


def pending_runs(args: argparse.Namespace) -> list[tuple[str, str, int]]:
    """The (family, algorithm, seed) runs without a record yet, seed 0 of everything first."""
    runs = []
    for seed in args.seeds:
        for family in args.families:
            algos = list(args.algos)
            if family in args.original_on and "varibad_original" not in algos:
                algos.append("varibad_original")
            for algo in algos:
                if not (Path(args.out_dir) / family / f"{algo}_seed{seed}.json").exists():
                    runs.append((family, algo, seed))
    return runs


def child_job(args: argparse.Namespace, family: str, algo: str, seed: int, deadline: float) -> Job:
    """One run of a ``--jobs`` campaign as a child invocation of this script."""
    run = ["--families", family, "--algos", algo, "--original-on", "--seeds", str(seed)]
    for name in ("frames", "test_tasks", "rollouts", "eval_frames"):
        run += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    command = campaign_child_command(__file__, run, args, deadline)
    command += ["--override", *args.override]
    log = run_dir_of(args, family, algo, seed).with_suffix(".log")
    return Job(f"{family} {algo} seed {seed}", command, log)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out_dir = Path(args.out_dir)
    deadline = campaign_deadline(args)
    runs = [] if args.summary else pending_runs(args)

    def train(run: tuple[str, str, int]) -> None:
        record = run_one(*run, args, deadline)
        if record is not None:
            family, algo, seed = run
            out = out_dir / family / f"{algo}_seed{seed}.json"
            write_result_json(out, record)
            print(f"  wrote {out}: {[round(m, 1) for m in record['mean']]}", flush=True)

    failed = train_campaign_runs(
        runs, args, deadline, child=lambda run: child_job(args, *run, deadline), train=train
    )
    if args.no_summary:
        return {}
    report = summary(out_dir)
    if report["families"]:
        write_result_json(out_dir / "summary.json", report)
        table = markdown(report)
        (out_dir / "summary.md").write_text(table)
        write_figures(report, out_dir)
        if args.readme is not None:
            update_readme(args.readme, table)
        print(table)
    else:
        print("no finished runs yet")
    fail_if_any(failed)
    return report


if __name__ == "__main__":
    main()
