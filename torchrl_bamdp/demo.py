"""``make demo``: train VariBAD on GridNavi briefly and compare it with the exact references.

Prints the meta-test return of each inner episode for the trained agent, a random policy and
the exact Bayes-optimal policy (dynamic programming), and leaves a full run directory (config,
metrics CSV, checkpoint) under ``runs/demo-<time>``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from torchrl_bamdp.configs import load_config
from torchrl_bamdp.evaluation.bayes_optimal import BayesOptimalGridNavi, GridNaviSpec
from torchrl_bamdp.evaluation.meta_test import uniform_random_policy
from torchrl_bamdp.trainers import Trainer


def main(argv: list[str] | None = None) -> None:
    """Train, meta-test and print the comparison table (``make demo``).

    Parameters
    ----------
    argv : list of str, optional
        ``--frames`` (default 3M, or ``$BAMDP_DEMO_FRAMES``), ``--seed`` and ``--run-dir``;
        ``None`` reads ``sys.argv``.

    Examples
    --------
    ``make demo`` runs ``python -m torchrl_bamdp.demo`` (minutes of training, so not run here);
    a shorter run from Python:

    >>> main(["--frames", "200000", "--run-dir", "runs/demo-short"])  # doctest: +SKIP
    Training VariBAD on GridNavi for 200,000 frames -> runs/demo-short
    ...
    | policy | episode 1 | episode 2 | episode 3 | episode 4 |
    ...
    """
    parser = argparse.ArgumentParser(description=__doc__)
    default_frames = int(os.environ.get("BAMDP_DEMO_FRAMES", 3_000_000))
    parser.add_argument("--frames", type=int, default=default_frames)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--run-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    run_dir = args.run_dir or Path("runs") / f"demo-{time.strftime('%Y%m%d-%H%M%S')}"
    config = load_config(
        {
            "seed": args.seed,
            "train": {"total_frames": args.frames, "eval_interval": 50},
        }
    )
    print(f"Training VariBAD on GridNavi for {args.frames:,} frames -> {run_dir}")
    start = time.perf_counter()
    trainer = Trainer(config, run_dir)
    result = trainer.train()
    wall = time.perf_counter() - start
    episodes = config.env.episodes_per_task
    optimal = BayesOptimalGridNavi(
        GridNaviSpec(episode_length=config.env.episode_length, episodes_per_task=episodes)
    )
    rows = {
        "VariBAD (ours)": result["eval"]["mean"],
        "random policy": trainer.evaluate(
            policy=uniform_random_policy(trainer.env.action_spec.n)
        ).mean,
        "Bayes-optimal (exact DP)": optimal.expected_returns(),
    }
    print(f"\nMeta-test return per inner episode on {config.train.eval_tasks} fixed test tasks")
    print(f"({result['frames']:,} frames, {wall:.0f} s wall-clock, torch {torch.__version__})\n")
    header = "| policy | " + " | ".join(f"episode {k + 1}" for k in range(episodes)) + " |"
    print(header)
    print("|---" * (episodes + 1) + "|")
    for name, values in rows.items():
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in values) + " |")
    print(f"\nRun directory: {run_dir} (config.json, metrics.csv, eval.jsonl, checkpoints/)")


if __name__ == "__main__":
    main()
