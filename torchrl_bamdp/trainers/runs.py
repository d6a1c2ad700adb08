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
import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torchrl.envs import TransformedEnv

from torchrl_bamdp.configs.schema import (
    GRIDWORLD_ONLY_ALGOS,
    VARIBAD_ALGOS,
    ConfigError,
    read_run_config,
)
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

__all__ = [
    "evaluate_run",
    "evaluate_run_ood",
    "evaluate_run_switching",
    "main",
    "ood_distributions",
    "open_run",
    "run_tours",
    "write_baseline_report",
]


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
    trainer = _open_for_evaluation(run_dir, deterministic)
    result = trainer.evaluate(num_tasks=tasks, episodes=episodes)
    return {**_run_identity(run_dir, trainer), **result.to_dict()}


def evaluate_run_switching(
    run_dir: str | Path,
    hazard: float | None = None,
    horizon: int | None = None,
    tasks: int | None = None,
    deterministic: bool | None = None,
) -> dict[str, Any]:
    """Meta-test one run's checkpoint on the task-switching env: one rollout of ``horizon`` steps
    per test task, the task redrawn with probability ``hazard`` after every step.

    A run trained on a switching env is tested on its own (``hazard`` and ``horizon`` default to
    its ``env.switching_hazard`` and ``env.episode_length``); a run trained on the fixed-task
    BAMDP (known task boundaries) is tested on the switching version of its task family, which
    needs both. The test tasks are the *initial* tasks of the rollouts (stratified on finite
    task sets), the switch times and later tasks come from the evaluation seed, the same for
    every run. Keys: those of :func:`evaluate_run` (``mean`` holds the one rollout's return),
    ``hazard``, ``horizon`` and ``return_per_100`` / ``stderr_per_100`` (the return per 100
    steps and its standard error over test tasks).

    Examples
    --------
    >>> import tempfile
    >>> from torchrl_bamdp.configs import load_config
    >>> cfg = load_config({"algo": {"name": "random"}, "env": {"num_envs": 4},
    ...                    "train": {"total_frames": 240, "eval_tasks": 21,
    ...                              "progress_bar": False, "figures": False}})
    >>> run_dir = tempfile.mkdtemp()
    >>> _ = Trainer(cfg, run_dir).train()
    >>> report = evaluate_run_switching(run_dir, hazard=0.1, horizon=50, tasks=21)
    >>> report["hazard"], report["horizon"], report["episodes"], report["return_per_100"] < 0
    (0.1, 50, 1, True)
    """
    trainer = _open_for_evaluation(run_dir, deterministic)
    env = trainer.config.env
    if not env.switching and (hazard is None or horizon is None):
        raise ConfigError(
            f"{run_dir} was trained with fixed tasks (env.switching_hazard=0): name the switching "
            "env to test it on, with both hazard and horizon"
        )
    hazard = env.switching_hazard if hazard is None else float(hazard)
    horizon = env.episode_length if horizon is None else int(horizon)
    if not 0.0 < hazard <= 1.0 or horizon < 1:
        raise ConfigError(
            f"a switching meta-test needs a hazard in (0, 1] and a horizon >= 1 (got hazard="
            f"{hazard}, horizon={horizon})"
        )
    name = trainer.config.algo.name
    if not env.switching and name in GRIDWORLD_ONLY_ALGOS:
        raise ConfigError(
            f"algo.name={name!r} of {run_dir} acts on the exact posterior of a fixed task, which "
            "switches rule out: it cannot be meta-tested on a switching env (train it on one, "
            "env.switching_hazard > 0)"
        )
    changes = {"switching_hazard": hazard, "episode_length": horizon}
    result = trainer.evaluate(num_tasks=tasks, episodes=1, env_changes=changes)
    per_100 = result.returns[:, 0] * (100.0 / horizon)
    stderr = float(per_100.std() / len(per_100) ** 0.5) if len(per_100) > 1 else float("nan")
    return {
        **_run_identity(run_dir, trainer),
        **result.to_dict(),
        "hazard": hazard,
        "horizon": horizon,
        "return_per_100": float(per_100.mean()),
        "stderr_per_100": stderr,
    }


def result_provenance(seed: int, run_dir: str | Path | None = None) -> dict[str, Any]:
    """What produced a benchmark's result record: the fields every campaign record starts with.

    ``commit`` (short; the code this process runs, read once per process: see
    :func:`~torchrl_bamdp.trainers.trainer.process_git_commit`), ``date``, ``machine``
    (platform, processor, CPU count) and ``versions``
    (:func:`~torchrl_bamdp.trainers.trainer.environment_info`: packages, command line, time).
    With ``run_dir``, also ``trained_commits``: the short commit of each process that trained
    the run, in order (from its ``run_info.json``; a resumed run has one per session).

    Examples
    --------
    >>> sorted(result_provenance(0))
    ['commit', 'date', 'machine', 'versions']
    """
    versions = environment_info(seed)
    provenance: dict[str, Any] = {
        "commit": (versions["git_commit"] or "unknown")[:7],
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
        },
        "versions": versions,
    }
    if run_dir is not None:
        provenance["trained_commits"] = trained_commits(run_dir)
    return provenance


def trained_commits(run_dir: str | Path) -> list[str]:
    """The short git commit of each session that trained ``run_dir`` (``run_info.json``).

    Examples
    --------
    >>> import tempfile
    >>> run = Path(tempfile.mkdtemp())
    >>> sessions = [{"git_commit": "11826e0af243"}, {"git_commit": None}]
    >>> _ = (run / "run_info.json").write_text(json.dumps(sessions))
    >>> trained_commits(run)
    ['11826e0', 'unknown']
    """
    path = Path(run_dir) / "run_info.json"
    if not path.exists():
        return []
    sessions = json.loads(path.read_text())
    return [(session.get("git_commit") or "unknown")[:7] for session in sessions]


def learning_curve(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every meta-test the run logged while training (``eval.jsonl``): its frames and
    per-episode mean returns (rounded to 3 decimals); ``[]`` before the first one.

    Examples
    --------
    >>> import json, tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "eval.jsonl").write_text(json.dumps({"frames": 9, "mean": [1.23456]}) + chr(10))
    >>> learning_curve(d)
    [{'frames': 9, 'mean': [1.235]}]
    """
    path = Path(run_dir) / "eval.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [{"frames": r["frames"], "mean": [round(m, 3) for m in r["mean"]]} for r in rows]


def _open_for_evaluation(run_dir: str | Path, deterministic: bool | None) -> Trainer:
    """:func:`open_run`, with ``train.eval_deterministic`` overridden when given."""
    overrides = {} if deterministic is None else {"eval_deterministic": deterministic}
    return open_run(run_dir, **overrides)


def _run_identity(run_dir: str | Path, trainer: Trainer) -> dict[str, Any]:
    """What every evaluation record says of the run it evaluated."""
    config = trainer.config
    return {
        "run_dir": str(run_dir),
        "env": config.env.name,
        "algo": config.algo.name,
        "seed": config.seed,
        "frames": trainer.frames,
        "train_seconds": trainer.train_seconds,
    }


def ood_distributions(config, test_tasks: Sequence[str] | None = None) -> list[str]:
    """The task distributions an OOD meta-test of a run covers: its training one
    (``env.train_tasks``) first, then ``test_tasks`` (default ``env.test_tasks``).

    Raises a :class:`~torchrl_bamdp.configs.ConfigError` naming the declared distributions
    for a name the run's task family does not declare, or for the training distribution
    among the test ones.

    Examples
    --------
    >>> from torchrl_bamdp.configs import load_config
    >>> ood_distributions(load_config({}), ["region_test"])
    ['all', 'region_test']
    >>> try:
    ...     ood_distributions(load_config({}), ["heldout"])
    ... except ConfigError as err:
    ...     print(str(err).split(" (declared")[0])
    test_tasks: 'heldout' is not a task distribution of env.name='gridworld'
    """
    env = config.env
    tests = list(env.test_tasks if test_tasks is None else test_tasks)
    if env.train_tasks in tests:
        raise ConfigError(
            f"test_tasks: {env.train_tasks!r} is the run's training distribution "
            f"(env.train_tasks), reported in distribution already; name other ones"
        )
    family = env.family
    if family is not None:
        for name in tests:
            try:
                family.distribution(name, "test_tasks")
            except ValueError as err:
                raise ConfigError(str(err)) from None
    return [env.train_tasks, *dict.fromkeys(tests)]


def _privileged(config) -> list[str]:
    """What an agent reads beyond its belief (named in every results table, DESIGN.md §7)."""
    out = []
    ppo = config.algo.ppo
    if config.algo.name in ("oracle",):
        out.append("the true task (oracle)")
    if ppo.critic_task and config.algo.name not in ("bayes_optimal", "random"):
        out.append("the true task in its critic during training (algo.ppo.critic_task)")
    if config.algo.name in VARIBAD_ALGOS and "decoded" in config.policy_belief:
        out.append(f"the decoded per-cell belief (algo.policy_belief={config.policy_belief})")
    return out


def evaluate_run_ood(
    run_dir: str | Path,
    test_tasks: Sequence[str] | None = None,
    tasks: int | None = None,
    episodes: int | None = None,
    deterministic: bool | None = None,
) -> dict[str, Any]:
    """Meta-test one run's checkpoint in distribution and on each test distribution.

    The run is meta-tested on ``tasks`` seeded test tasks (default ``train.eval_tasks``; the
    same number from each distribution, stratified on finite ones) of ``episodes`` inner
    episodes (default ``train.eval_episodes`` or the trained ``env.episodes_per_task``; more
    than trained is a longer meta-test horizon) from its training distribution and from each
    of ``test_tasks`` (default ``env.test_tasks``; see :func:`ood_distributions`). For GridNavi
    each distribution carries the exact Bayes-optimal per-episode returns under its prior.

    Returns the run's identity (``run_dir``, ``env``, ``algo``, ``seed``, ``frames``,
    ``train_seconds``), the split (``train_tasks``, ``split_seed``), ``trained_episodes``,
    ``episodes``, ``deterministic``, ``time_features`` (whether its hyper-state holds the
    time, which saturates past the trained horizon), ``privileged`` (what it reads beyond its
    belief) and ``splits``: per distribution, in order, ``role`` (``train``/``test``),
    ``description``, ``disjoint_from_train``, ``bayes_optimal``, the entries of
    :meth:`~torchrl_bamdp.evaluation.meta_test.MetaTestResult.to_dict` and ``per_task``
    (finite distributions, stratified: each task's mean per-episode returns; else empty).
    Aggregate several with :func:`~torchrl_bamdp.evaluation.report.ood_report`.

    Examples
    --------
    >>> import tempfile
    >>> from torchrl_bamdp.configs import load_config
    >>> cfg = load_config({"algo": {"name": "random"}, "env": {"num_envs": 4,
    ...                    "train_tasks": "heldout_train", "test_tasks": ["heldout_test"]},
    ...                    "train": {"total_frames": 240, "eval_tasks": 80,
    ...                              "progress_bar": False, "figures": False}})
    >>> run_dir = tempfile.mkdtemp()
    >>> _ = Trainer(cfg, run_dir).train()
    >>> record = evaluate_run_ood(run_dir, episodes=6)
    >>> {name: (s["role"], s["num_tasks"]) for name, s in record["splits"].items()}
    {'heldout_train': ('train', 80), 'heldout_test': ('test', 80)}
    >>> [round(r, 2) for r in record["splits"]["heldout_test"]["bayes_optimal"]][:2]
    [9.28, 11.48]
    """
    trainer = _open_for_evaluation(run_dir, deterministic)
    config = trainer.config
    names = ood_distributions(config, test_tasks)
    num_tasks = tasks or config.train.eval_tasks
    k = episodes or config.train.eval_episodes or config.env.episodes_per_task
    family = config.env.family
    splits: dict[str, Any] = {}
    for name in names:
        role = "train" if name == config.env.train_tasks else "test"
        described = family.distributions[name].description if family is not None else ""
        disjoint = (
            family is not None and role == "test" and family.disjoint(config.env.train_tasks, name)
        )
        result = trainer.evaluate(num_tasks=num_tasks, episodes=k, distribution=name)
        finite = config.eval_stratified and config.num_tasks_of(name) is not None
        splits[name] = {
            "role": role,
            "description": described,
            "disjoint_from_train": bool(disjoint),
            "bayes_optimal": bayes_optimal_returns(config, k, name),
            **result.to_dict(),
            # A finite distribution's every task: which goals an agent finds and exploits.
            "per_task": result.per_task() if finite else [],
        }
    return {
        **_run_identity(run_dir, trainer),
        "train_tasks": config.env.train_tasks,
        "split_seed": config.env.split_seed,
        "trained_episodes": config.env.episodes_per_task,
        "episodes": k,
        "deterministic": config.train.eval_deterministic,
        "time_features": bool(trainer.agent.trains_policy and config.algo.ppo.time_features),
        "privileged": _privileged(config),
        "splits": splits,
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

    One task per goal of the run's training distribution (stratified), ``episodes`` inner
    episodes each; see
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
    # One task per goal of the run's training distribution (env.train_tasks).
    goals = config.num_finite_tasks or len(candidate_goal_cells(config.env.grid_size))

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
