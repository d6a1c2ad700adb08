"""Discounted value of a GridNavi run's greedy tours next to the Bayes-optimal agent's.

Reads a file written by ``python -m torchrl_bamdp.trainers.runs tours <run_dir>`` (the run's
tours, then the Bayes-optimal ones) and prints, for several discounts, the expected discounted
return of episodes 1-2 from the start of a task (every goal equally likely), from the step at
which each goal is found in each episode: -0.1 per step before it, +1 per step on it. Episodes
3-4 are left out: both policies walk straight to the known goal there. It answers whether a
plateau tour is the optimum of the *discounted* objective PPO maximises or a local optimum::

    python benchmarks/tour_values.py \
        benchmarks/results/gridnavi_campaign/tours_varibad_original_critic0.5_seed1.txt
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

EPISODE_LENGTH = 15
ROW = re.compile(r"^(\d\d) \| ([-\d ]+) \|")


def found_steps(block: str) -> dict[str, list[int | None]]:
    """Per goal, the step at which each episode finds it (``None``: never)."""
    rows = {}
    for line in block.splitlines():
        match = ROW.match(line)
        if match:
            rows[match.group(1)] = [None if x == "-" else int(x) for x in match.group(2).split()]
    return rows


def discounted_value(rows: dict[str, list[int | None]], gamma: float) -> float:
    """Mean over goals of the discounted return of the episodes in ``rows`` from step 0."""
    total = 0.0
    for found in rows.values():
        rewards = [
            -0.1 if (k is None or t < k) else 1.0
            for k in found
            for t in range(1, EPISODE_LENGTH + 1)
        ]
        total += sum(gamma**i * r for i, r in enumerate(rewards))
    return total / len(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tours", type=Path, help="output of `trainers.runs tours`")
    parser.add_argument("--gammas", type=float, nargs="+", default=[0.95, 0.99, 1.0])
    args = parser.parse_args(argv)
    run_block, optimal_block = args.tours.read_text().split("Bayes-optimal (exact DP)")
    run, optimal = found_steps(run_block), found_steps(optimal_block)
    print("| gamma | run's tours | Bayes-optimal tours | difference |")
    print("|---|---|---|---|")
    for gamma in args.gammas:
        ours, best = discounted_value(run, gamma), discounted_value(optimal, gamma)
        print(f"| {gamma} | {ours:.3f} | {best:.3f} | {best - ours:+.3f} |")


if __name__ == "__main__":
    main()
