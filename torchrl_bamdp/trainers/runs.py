"""Trained runs opened from their directories: meta-test them, report on them, show their tours.

A run directory (``config.json`` + ``checkpoints/last.pt``) becomes a read-only
:class:`~torchrl_bamdp.trainers.Trainer` (:func:`open_run`), whose agent the evaluation functions
are given: :mod:`torchrl_bamdp.evaluation` works on agents, envs, policies and run reports and
never imports ``trainers``, so the dependency is one way (``trainers -> evaluation``). Used by
``bamdp-eval``, ``bamdp-plot``, ``benchmarks/gridworld_baselines.py`` and the tours command::

    python -m torchrl_bamdp.trainers.runs tours <run_dir> [--episodes 2]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torchrl.envs import TransformedEnv

from torchrl_bamdp.configs.schema import read_run_config
from torchrl_bamdp.envs.factory import make_env_from_config
from torchrl_bamdp.envs.gridworld import candidate_goal_cells
from torchrl_bamdp.evaluation.report import (
    aggregate,
    bayes_optimal_returns,
    markdown_table,
    write_figures,
)
from torchrl_bamdp.evaluation.tours import format_tours, gridnavi_tours
from torchrl_bamdp.policies.bayes_optimal import BayesOptimalPolicy
from torchrl_bamdp.trainers.trainer import Trainer, environment_info
from torchrl_bamdp.transforms import exact_belief_transforms
from torchrl_bamdp.utils import write_result_json

__all__ = ["evaluate_run", "main", "open_run", "run_tours", "write_baseline_report"]


def open_run(run_dir: str | Path, **train_overrides: Any) -> Trainer:
    """A read-only :class:`~torchrl_bamdp.trainers.Trainer` on a run's config and checkpoint.

    ``train_overrides`` replace entries of the saved ``train`` config (e.g. ``eval_tasks``).
    The agent is rebuilt from the saved ``algo`` section: the registered ``algo.name``, or the
    builder ``algo.builder`` names by import path (which must import in this process).

    Examples
    --------
    A run of the (untrained) random policy is the cheapest to make; any run opens the same way.

    >>> import tempfile
    >>> from torchrl_bamdp.configs import load_config
    >>> cfg = load_config({"algo": {"name": "random"}, "env": {"num_envs": 4},
    ...                    "train": {"total_frames": 240, "eval_tasks": 21,
    ...                              "progress_bar": False, "figures": False}})
    >>> run_dir = tempfile.mkdtemp()
    >>> _ = Trainer(cfg, run_dir).train()
    >>> trainer = open_run(run_dir, eval_tasks=42)
    >>> trainer.read_only, trainer.config.algo.name, trainer.config.train.eval_tasks
    (True, 'random', 42)
    """
    config = read_run_config(run_dir, **{"progress_bar": False, **train_overrides})
    return Trainer(config, Path(run_dir), read_only=True)


def evaluate_run(
    run_dir: str | Path,
    tasks: int | None = None,
    episodes: int | None = None,
    deterministic: bool | None = None,
) -> dict[str, Any]:
    """Meta-test one run's checkpoint; returns its per-episode result and identity.

    Keys: ``run_dir``, ``env``, ``algo``, ``seed``, ``frames``, ``train_seconds`` and those of
    :meth:`MetaTestResult.to_dict` (``num_tasks``, ``episodes``, ``mean``, ``stderr``, ...).

    Examples
    --------
    >>> import tempfile
    >>> from torchrl_bamdp.configs import load_config
    >>> cfg = load_config({"algo": {"name": "random"}, "env": {"num_envs": 4},
    ...                    "train": {"total_frames": 240, "eval_tasks": 21,
    ...                              "progress_bar": False, "figures": False}})
    >>> run_dir = tempfile.mkdtemp()
    >>> _ = Trainer(cfg, run_dir).train()
    >>> report = evaluate_run(run_dir, tasks=21, episodes=2)
    >>> report["algo"], report["num_tasks"], report["episodes"], len(report["mean"])
    ('random', 21, 2, 2)
    """
    overrides = {} if deterministic is None else {"eval_deterministic": deterministic}
    trainer = open_run(run_dir, **overrides)
    result = trainer.evaluate(num_tasks=tasks, episodes=episodes)
    config = trainer.config
    return {
        "run_dir": str(run_dir),
        "env": config.env.name,
        "algo": config.algo.name,
        "seed": config.seed,
        "frames": trainer.frames,
        "train_seconds": trainer.train_seconds,
        **result.to_dict(),
    }


def write_baseline_report(
    runs: Sequence[str | Path],
    out: str | Path,
    eval_tasks: int | None = None,
    episodes: int | None = None,
    rollout_goal: Sequence[int] = (4, 2),
    command: str | None = None,
    extra: dict[str, Any] | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Evaluate ``runs``, aggregate over seeds per algorithm, write JSON, Markdown and figures.

    Writes ``<name>.json`` / ``.md`` (``name`` defaults to ``<env>_baselines``, e.g.
    ``gridworld_baselines``) and the figures of :func:`write_figures` into ``out``; returns the
    report.

    Examples
    --------
    One (cheap) random-policy run; VariBAD runs add learning curves and belief figures (Fig 3).

    >>> import tempfile
    >>> from torchrl_bamdp.configs import load_config
    >>> cfg = load_config({"algo": {"name": "random"}, "env": {"num_envs": 4},
    ...                    "train": {"total_frames": 240, "eval_tasks": 21,
    ...                              "progress_bar": False, "figures": False}})
    >>> run_dir, out = tempfile.mkdtemp(), tempfile.mkdtemp()
    >>> _ = Trainer(cfg, run_dir).train()
    >>> report = write_baseline_report([run_dir], out, episodes=2)  # doctest: +ELLIPSIS
    evaluated ...: [...]
    >>> report["eval_tasks"], list(report["algorithms"]), report["env"]["episodes"]
    (21, ['random'], 2)
    >>> sorted(p.name for p in Path(out).glob("gridworld_baselines.*"))
    ['gridworld_baselines.json', 'gridworld_baselines.md']
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    reports = []
    for run in runs:
        report = evaluate_run(run, tasks=eval_tasks, episodes=episodes)
        reports.append(report)
        means = ", ".join(f"{m:.3f}" for m in report["mean"])
        print(f"evaluated {run}: [{means}]", flush=True)
    aggregated = aggregate(reports)
    config = open_run(runs[0]).config
    k = len(reports[0]["mean"])
    optimal = bayes_optimal_returns(config, k)
    report = {
        "command": command,
        "environment": environment_info(config.seed),
        "env": {
            "name": config.env.name,
            "grid_size": config.env.grid_size,
            "episode_length": config.env.episode_length,
            "episodes": k,
        },
        "eval_tasks": reports[0]["num_tasks"],
        "bayes_optimal_dp": optimal,
        "algorithms": aggregated,
        **(extra or {}),
    }
    name = name or f"{config.env.name}_baselines"
    (out / f"{name}.md").write_text(markdown_table(aggregated))
    write_result_json(out / f"{name}.json", report)
    write_figures(
        aggregated,
        out,
        optimal=optimal,
        rollout_goal=rollout_goal,
        subtitle=f" ({report['eval_tasks']} test tasks)",
        open_run=open_run,
    )
    return report


def run_tours(run_dir: str | Path, episodes: int = 2) -> str:
    """A GridNavi run's greedy tours next to the Bayes-optimal ones on the same tasks, as text.

    One task per candidate goal (stratified), ``episodes`` inner episodes each; see
    :func:`~torchrl_bamdp.evaluation.tours.gridnavi_tours` and
    :func:`~torchrl_bamdp.evaluation.tours.format_tours`. Raises ``ValueError`` for a run of
    another task family or ``episodes < 1``.
    """
    if episodes < 1:
        raise ValueError(f"--episodes must be >= 1 (got {episodes})")
    config = read_run_config(run_dir)
    if config.env.name != "gridworld":
        raise ValueError(f"tours need a GridNavi run; {run_dir} has env.name={config.env.name!r}")
    trainer = Trainer(config, run_dir, read_only=True)
    goals = len(candidate_goal_cells(config.env.grid_size))

    def base_env():
        return make_env_from_config(
            config.env, seed=None, num_envs=goals, episodes_per_task=episodes, stratified=True
        )

    env = trainer.agent.transformed_env(base_env())
    learned = gridnavi_tours(env, trainer.agent.policy_for(env))
    reference = TransformedEnv(base_env(), exact_belief_transforms(grid_size=config.env.grid_size))
    optimal = gridnavi_tours(reference, BayesOptimalPolicy.from_env(reference))
    return "\n".join(
        [
            format_tours(learned, config.env.grid_size, f"{config.algo.name} ({run_dir})"),
            "",
            format_tours(optimal, config.env.grid_size, "Bayes-optimal (exact DP)"),
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m torchrl_bamdp.trainers.runs tours <run_dir> [--episodes 2]``: print a GridNavi
    run's greedy tours and the Bayes-optimal ones on the same 21 tasks (:func:`run_tours`)."""
    parser = argparse.ArgumentParser(prog="python -m torchrl_bamdp.trainers.runs")
    commands = parser.add_subparsers(dest="command", required=True)
    tours = commands.add_parser("tours", help=run_tours.__doc__.splitlines()[0])
    tours.add_argument("run_dir", help="a GridNavi run directory (with checkpoints/last.pt)")
    tours.add_argument("--episodes", type=int, default=2, help="inner episodes per task")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        tours.error(f"--episodes must be >= 1 (got {args.episodes})")
    try:
        print(run_tours(args.run_dir, args.episodes))
    except ValueError as err:
        raise SystemExit(str(err)) from None


if __name__ == "__main__":
    main()
