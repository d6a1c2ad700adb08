"""Does the encoder locate a goal found on the *last* step of an inner episode? (issue 17)

Before true terminal observations the encoder saw the next episode's start state in place of
the cell an inner episode ended in, so a goal reached on the last step of episode 1 could not
be located: episode 2 should then do worse on exactly those tasks. This script meta-tests
trained GridNavi runs greedily on every goal and splits the goals by where episode 1 first
found them: on its **last** step, **earlier**, or **not at all**; it reports the episode-2
return of each group, per run and pooled.

It uses only what the code before and after the change shares (a read-only Trainer, its eval
env and acting policy), so the same script measures runs of either version, each with its own
checkout's interpreter::

    .venv/bin/python benchmarks/terminal_observation_check.py --label after \\
        --runs runs/demo_spread/seed0 runs/demo_spread/seed1 --out after.json
    ../old/.venv/bin/python benchmarks/terminal_observation_check.py --label before ...
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torchrl.envs import ExplorationType, set_exploration_type


def open_run(run_dir: Path):
    """A read-only Trainer of ``run_dir`` (the module moved with the layering change)."""
    try:
        from torchrl_bamdp.trainers.runs import open_run as opener
    except ImportError:  # the code before 2026-12-01
        from torchrl_bamdp.evaluation.report import open_run as opener
    return opener(run_dir)


@torch.no_grad()
def first_goal_steps(run_dir: Path, episodes: int = 4) -> dict:
    """Greedy meta-test on every goal once: per goal, the step of episode 1 that first reached it
    (``None``: not reached) and the return of every episode."""
    trainer = open_run(run_dir)
    config = trainer.config
    goals = config.env.grid_size**2 - 4
    env = trainer._make_eval_env(goals, episodes)
    length = config.env.episode_length
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        rollout = env.rollout(
            length * episodes, trainer.agent.acting_policy, break_when_any_done=False
        )
    env.close()
    reward = rollout["next", "reward"].reshape(goals, episodes, length)
    found = reward[:, 0] > 0
    first = [int(row.nonzero()[0]) if bool(row.any()) else None for row in found]
    task = rollout["task"][:, 0].tolist()
    return {
        "run_dir": str(run_dir),
        "seed": config.seed,
        "frames": trainer.frames,
        "episode_length": length,
        "goals": [
            {
                "goal": task[i],
                "first_step_episode_1": first[i],
                "returns": reward[i].sum(-1).tolist(),
                "known_goal_return": known_goal_return(task[i], length),
            }
            for i in range(goals)
        ],
    }


def known_goal_return(goal: list[float], length: int, penalty: float = -0.1) -> float:
    """Return of an episode that walks straight to a known goal from (0, 0) and stays on it.

    Examples
    --------
    >>> round(known_goal_return([2.0, 0.0], 15), 2)  # -0.1, then +1 on steps 2..15
    13.9
    """
    distance = int(abs(goal[0]) + abs(goal[1]))
    return (length - distance + 1) + penalty * (distance - 1)


def group_of(first: int | None, length: int) -> str:
    """``last_step``, ``earlier`` or ``not_found`` (where episode 1 first reached the goal).

    Examples
    --------
    >>> [group_of(s, 15) for s in (14, 3, None)]
    ['last_step', 'earlier', 'not_found']
    """
    if first is None:
        return "not_found"
    return "last_step" if first == length - 1 else "earlier"


def _stats(gaps: list[float]) -> dict:
    return {
        "goals": len(gaps),
        "episode_2_gap_mean": statistics.fmean(gaps) if gaps else None,
        "episode_2_missed": sum(g > 1e-4 for g in gaps),
    }


def summarise(runs: list[dict]) -> dict:
    """Per group, per run and pooled: how far episode 2 falls short of walking straight to the
    goal (``known_goal_return - return``; 0 when the belief located the goal), and on how many
    goals it falls short at all."""
    pooled: dict[str, list[float]] = {"last_step": [], "earlier": [], "not_found": []}
    per_run = []
    for run in runs:
        groups: dict[str, list[float]] = {key: [] for key in pooled}
        for goal in run["goals"]:
            key = group_of(goal["first_step_episode_1"], run["episode_length"])
            groups[key].append(goal["known_goal_return"] - goal["returns"][1])
        for key, values in groups.items():
            pooled[key] += values
        per_run.append({"seed": run["seed"], **{k: _stats(v) for k, v in groups.items()}})
    return {"per_run": per_run, "pooled": {k: _stats(v) for k, v in pooled.items()}}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True)
    parser.add_argument("--label", required=True, help="e.g. before / after")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    runs = [first_goal_steps(run) for run in args.runs]
    report = {
        "command": " ".join(["python", "benchmarks/terminal_observation_check.py", *sys.argv[1:]]),
        "label": args.label,
        "date": time.strftime("%Y-%m-%d"),
        "runs": runs,
        "summary": summarise(runs),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"episode 2 short of walking straight to the goal, by where episode 1 first found it "
        f"({args.label}): goals missed / goals (mean shortfall)"
    )
    print("| seed | last step | earlier | not found |")
    print("|---|---|---|---|")

    def cell(entry: dict) -> str:
        mean = entry["episode_2_gap_mean"]
        if mean is None:
            return "-"
        return f"{entry['episode_2_missed']}/{entry['goals']} ({mean:.2f})"

    for run in report["summary"]["per_run"]:
        print(
            f"| {run['seed']} | {cell(run['last_step'])} | {cell(run['earlier'])} | "
            f"{cell(run['not_found'])} |"
        )
    pooled = report["summary"]["pooled"]
    print(
        f"| pooled | {cell(pooled['last_step'])} | {cell(pooled['earlier'])} | "
        f"{cell(pooled['not_found'])} |"
    )
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
