"""Out-of-distribution campaign of issue 20: GridNavi with held-out goals.

VariBAD, RL2 and the belief oracle are trained on 16 of GridNavi's 21 goals
(``env.train_tasks=heldout_train``; the other 5, drawn by ``env.split_seed=0``, are never
seen in training) for 4 episodes per task, and their *final* greedy policies are meta-tested
for **6** episodes per task (as the original evaluates GridNavi) on the 16 training goals (in
distribution) and on the 5 held-out ones (``heldout_test``, out of distribution), with the
exact Bayes-optimal per-episode returns under each split's prior (the agent that knows the test
prior and plans for 6 episodes) as the reference. Each algorithm runs at its shipped GridNavi
defaults (``bamdp-train algo=<algo> env=gridworld``), which for all three include the
privileged critic (``algo.ppo.critic_task``: the critic, not the policy, reads the true goal
during training) and, for VariBAD, the decoded per-cell belief as policy input
(``algo.policy_belief=auto`` = ``decoded``); the tables say so.

The belief oracle keeps the prior it was trained with (the 16 goals; see
``torchrl_bamdp.trainers.agents.build_belief_oracle``): on a held-out goal its exact posterior
runs out of training goals and falls back to the goals no reward has ruled out.

Resumable, one run at a time, interleaved by seed (seed 0 of every algorithm first): each
(algorithm, seed) trains in ``<runs-root>/<algo>/seed<k>`` (checkpointed; a killed run resumes)
and, once at its frame budget, is meta-tested and written to ``<out-dir>/<algo>_seed<k>.json``;
runs with a JSON are skipped. ``--max-minutes`` bounds one invocation. The summary
(``summary.json`` / ``summary.md``: per-episode mean +- s.e. over seeds, in and out of
distribution side by side) is rebuilt from the JSON files of the finished runs::

    .venv/bin/python benchmarks/ood_campaign.py --seeds 0 1 2 --max-minutes 90
    .venv/bin/python benchmarks/ood_campaign.py --summary   # the table of what is done

``--train-only`` trains without meta-testing (a second invocation with ``--evaluate-only``
meta-tests the runs that reached their budget, e.g. while the first goes on training).

``--family cheetah_vel``: HalfCheetahVel extrapolation. VariBAD, RL2 and the oracle (whose
policy reads the true target velocity: a privileged upper reference, not a meta-learner) at
their shipped cheetah_vel settings (``env=cheetah_vel``: ``configs/tuning/cheetah_vel.yaml``) are
trained on ``extrapolation_train`` (v* ~ U[0, 2), 2 rollouts per task) for 1M frames per run by
default (the original trains for 1e8) and meta-tested greedy for the first **5** rollouts (the
paper's Figure 4) on 64 fixed test tasks of ``extrapolation_train`` (in distribution) and of
``extrapolation_test`` (v* ~ U[2, 3), out of distribution). No exact Bayes-optimal reference
exists there; the uniformly random policy (``algo=random``, not trained) on the same test tasks
is the floor reference. Runs in ``runs/ood_cheetah_vel``, results in
``benchmarks/results/ood_cheetah_vel/``::

    .venv/bin/python benchmarks/ood_campaign.py --family cheetah_vel --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import NamedTuple

from torchrl_bamdp.cli import train_to_budget
from torchrl_bamdp.policies import BayesOptimalGridNavi, GridNaviSpec
from torchrl_bamdp.trainers.runs import learning_curve, result_provenance
from torchrl_bamdp.utils import write_result_json

ROOT = Path(__file__).resolve().parent.parent

ALGORITHMS = ("varibad", "rl2", "belief_oracle")
#: The split: train on 16 goals, hold 5 out (drawn by split seed 0), 4 episodes per task.
SPLIT = [
    "env=gridworld",
    "env.train_tasks=heldout_train",
    "env.test_tasks=[heldout_test]",
    "env.split_seed=0",
    # 80 = 5 x 16 = 16 x 5: every goal of either split equally often (stratified).
    "train.eval_tasks=80",
]
EVAL_EPISODES = 6
EVAL_TASKS = 80
EVAL_FRAMES = 100_000  # meta-test (in distribution, 4 episodes) every ~100k training frames
TRAINED_MARKER = "ood_campaign_trained.json"

#: HalfCheetahVel: train on v* ~ U[0, 2), meta-test in distribution and on U[2, 3).
CHEETAH_SPLIT = [
    "env=cheetah_vel",
    "env.train_tasks=extrapolation_train",
    "env.test_tasks=[extrapolation_test]",
]
CHEETAH_REFERENCES = (
    "the references instead: the uniformly random policy (Random, algo=random, not trained: "
    "the floor) and the oracle, whose policy reads the true target velocity (privileged: an "
    "upper reference, not a meta-learner)"
)


class Family(NamedTuple):
    """One task family's OOD campaign: what is trained, on which split, and how it is tested."""

    algorithms: tuple[str, ...]
    split: tuple[str, ...]
    episodes: int  # meta-tested episodes (rollouts) per task
    tasks: int  # meta-test tasks per distribution
    frames: int  # default frame budget per run
    runs_root: str
    out_dir: str
    command: str  # the summary's command
    notes: tuple[str, ...] = ()  # appended to the report's notes
    labels: tuple[tuple[str, str], ...] = ()  # table labels that replace the default ones


FAMILIES = {
    "gridworld": Family(
        algorithms=ALGORITHMS,
        split=tuple(SPLIT),
        episodes=EVAL_EPISODES,
        tasks=EVAL_TASKS,
        frames=2_000_000,
        runs_root="runs/ood_campaign",
        out_dir="benchmarks/results/ood",
        command="python benchmarks/ood_campaign.py --seeds 0 1 2",
    ),
    "cheetah_vel": Family(
        # Random is the floor reference: not trained, evaluated on the same test tasks.
        algorithms=("varibad", "rl2", "oracle", "random"),
        split=tuple(CHEETAH_SPLIT),
        episodes=5,  # the paper's Figure 4: the first 5 rollouts (2 are trained)
        tasks=64,
        frames=1_000_000,  # the original: 1e8
        runs_root="runs/ood_cheetah_vel",
        out_dir="benchmarks/results/ood_cheetah_vel",
        command="python benchmarks/ood_campaign.py --family cheetah_vel --seeds 0 1 2",
        notes=(CHEETAH_REFERENCES,),
        labels=(("oracle", "Oracle (privileged: true v*)"), ("random", "Random (floor)")),
    ),
}


def train_one(algo: str, seed: int, args: argparse.Namespace, deadline: float) -> bool:
    """Train (or continue) one run; whether it has reached its frame budget."""
    minutes = max(1.0, (deadline - time.time()) / 60)
    trained = train_to_budget(
        Path(args.runs_root) / algo / f"seed{seed}",
        [f"algo={algo}", *FAMILIES[args.family].split, f"seed={seed}"],
        args.frames,
        minutes,
        EVAL_FRAMES,
        label=f"{algo} seed {seed}",
        marker=TRAINED_MARKER,
    )
    return trained is not None


def evaluate_one(algo: str, seed: int, args: argparse.Namespace) -> dict:
    """Meta-test a trained run in and out of distribution; the run's JSON record."""
    from torchrl_bamdp.trainers.runs import evaluate_run_ood

    family = FAMILIES[args.family]
    run_dir = Path(args.runs_root) / algo / f"seed{seed}"
    report = evaluate_run_ood(run_dir, tasks=family.tasks, episodes=family.episodes)
    config = json.loads((run_dir / "config.json").read_text())
    return {
        "benchmark": "ood_campaign",
        "algo": algo,
        "seed": seed,
        "overrides": [f"algo={algo}", *family.split],
        **result_provenance(seed, run_dir),
        **report,
        "learning_curve": learning_curve(run_dir),
        "config": config,
    }


def summary(out_dir: Path, family: str = "gridworld") -> dict | None:
    """The OOD report over the finished runs (``None`` before the first)."""
    runs = [json.loads(p.read_text()) for p in sorted(out_dir.glob("*_seed*.json"))]
    if not runs:
        return None
    from torchrl_bamdp.evaluation.report import ood_report

    spec = FAMILIES[family]
    report = ood_report(runs, command=spec.command, notes=spec.notes)
    for algo, label in spec.labels:
        if algo in report["algorithms"]:
            report["algorithms"][algo]["label"] = label
    return report


def goal_table(report: dict, distribution: str = "heldout_test") -> str:
    """Per held-out goal and run: the return of each episode (from the runs' ``per_task``)."""
    seeds = [(a, p) for a, v in report["algorithms"].items() for p in v["per_seed"]]
    goals = sorted({tuple(t["task"]) for _, p in seeds for t in p["per_task"][distribution]})
    if not goals:
        return ""
    header = ["run", *(f"goal {tuple(int(c) for c in g)}" for g in goals)]
    lines = [
        f"Per goal of `{distribution}`: return per episode 1-{report['episodes']} "
        "(greedy; every goal is one deterministic task)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for algo, p in seeds:
        by_goal = {tuple(t["task"]): t["mean"] for t in p["per_task"][distribution]}
        cells = [" ".join(f"{m:.1f}" for m in by_goal[g]) if g in by_goal else "" for g in goals]
        label = report["algorithms"][algo]["label"]
        lines.append(f"| {label} seed {p['seed']} | " + " | ".join(cells) + " |")
    # The reference: the Bayes-optimal agent that knows this prior, on each goal.
    cells = tuple(tuple(int(c) for c in g) for g in goals)
    spec = GridNaviSpec(episodes_per_task=report["episodes"], goals=cells)
    solver = BayesOptimalGridNavi(spec)
    row = [" ".join(f"{m:.1f}" for m in solver.simulate(g)) for g in cells]
    lines.append("| Bayes-optimal (knows this prior) | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--family",
        default="gridworld",
        choices=list(FAMILIES),
        help="gridworld: GridNavi held-out goals; cheetah_vel: HalfCheetahVel extrapolation",
    )
    parser.add_argument(
        "--algos", nargs="+", help="default: every algorithm of the family (see --family)"
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument(
        "--frames", type=int, help="frames per run (default: gridworld 2M, cheetah_vel 1M)"
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=600.0,
        help="wall-clock bound of this invocation (resume with the same command)",
    )
    parser.add_argument(
        "--runs-root", help="default: runs/ood_campaign (gridworld), runs/ood_cheetah_vel"
    )
    parser.add_argument(
        "--out-dir",
        help="default: benchmarks/results/ood (gridworld), benchmarks/results/ood_cheetah_vel",
    )
    parser.add_argument("--summary", action="store_true", help="only rebuild the summary")
    phase = parser.add_mutually_exclusive_group()
    phase.add_argument("--train-only", action="store_true", help="train, do not meta-test")
    phase.add_argument(
        "--evaluate-only", action="store_true", help="meta-test runs at their budget only"
    )
    args = parser.parse_args(argv)
    family = FAMILIES[args.family]
    args.algos = list(family.algorithms) if args.algos is None else args.algos
    unknown = [a for a in args.algos if a not in family.algorithms]
    if unknown:
        parser.error(
            f"--algos {' '.join(unknown)}: not an algorithm of --family {args.family} "
            f"(choose from {', '.join(family.algorithms)})"
        )
    args.frames = family.frames if args.frames is None else args.frames
    if args.frames < 1:
        parser.error(f"--frames must be >= 1 (got {args.frames})")
    args.runs_root = args.runs_root or family.runs_root
    args.out_dir = args.out_dir or str(ROOT / family.out_dir)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.time() + 60 * args.max_minutes
    for seed in [] if args.summary else args.seeds:
        for algo in args.algos:
            out = out_dir / f"{algo}_seed{seed}.json"
            if out.exists():
                continue
            if time.time() > deadline - 60:
                break
            if args.evaluate_only:
                run_dir = Path(args.runs_root) / algo / f"seed{seed}"
                if not (run_dir / TRAINED_MARKER).exists():
                    continue
            elif not train_one(algo, seed, args, deadline):
                continue
            if args.train_only:
                continue
            record = evaluate_one(algo, seed, args)
            write_result_json(out, record)
            splits = {k: [round(m, 2) for m in v["mean"]] for k, v in record["splits"].items()}
            print(f"  wrote {out}: {splits}", flush=True)
    report = summary(out_dir, args.family)
    if report is None:
        print("no finished runs yet")
        return None
    from torchrl_bamdp.evaluation.report import ood_markdown

    write_result_json(out_dir / "summary.json", report)
    table = ood_markdown(report)
    if args.family == "gridworld":
        table += "\n" + goal_table(report)
    (out_dir / "summary.md").write_text(table)
    print(table)
    return report


if __name__ == "__main__":
    main()
