"""Meta-test reports over runs and seeds, belief rollouts and the paper's figures.

Used by ``bamdp-eval`` (tables), ``bamdp-plot`` (figures) and
``benchmarks/gridworld_baselines.py`` (both, for every algorithm and seed). Everything here works
on run reports, agents and configs; opening a run directory (which builds a read-only
``Trainer``) is :mod:`torchrl_bamdp.trainers.runs`, which calls into this module, never the
other way round.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from torchrl_bamdp.evaluation.plots import (
    BeliefRollout,
    load_eval_curves,
    plot_learning_curves,
    plot_per_episode_returns,
)
from torchrl_bamdp.policies.bayes_optimal import BayesOptimalGridNavi, GridNaviSpec
from torchrl_bamdp.task_distributions import ALL_TASKS, grid_goal_cells

#: Display names, in the order of tables and legends.
ALGO_LABELS = {
    "varibad": "VariBAD",
    "varibad_original": "VariBAD (original config)",
    "rl2": "RL2",
    "oracle": "Oracle",
    "belief_oracle": "Belief oracle",
    "bayes_optimal": "Bayes-optimal",
    "random": "Random",
}


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories (holding ``config.json``) among ``paths`` or below them, sorted.

    Examples
    --------
    >>> find_runs([])
    []
    """
    runs: set[Path] = set()
    for path in map(Path, paths):
        if (path / "config.json").is_file():
            runs.add(path)
        elif path.is_dir():
            runs.update(p.parent for p in path.rglob("config.json"))
        else:
            raise FileNotFoundError(f"run_dir={path} is neither a run directory nor a folder")
    return sorted(runs)


def group_by_env(reports: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Run reports grouped by env family (``report["env"]``), families in sorted order.

    Runs of different families are never averaged together: a folder of GridNavi and MuJoCo
    runs gives one table (and one set of figures) per family.

    Examples
    --------
    >>> groups = group_by_env([{"env": "cheetah_vel", "algo": "rl2"},
    ...                        {"env": "gridworld", "algo": "rl2"}, {"algo": "oracle"}])
    >>> {env: [r["algo"] for r in runs] for env, runs in groups.items()}
    {'cheetah_vel': ['rl2'], 'gridworld': ['rl2', 'oracle']}
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for report in reports:
        groups.setdefault(report.get("env", "gridworld"), []).append(report)
    return {env: groups[env] for env in sorted(groups)}


def aggregate(reports: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Group run reports by algorithm: per-episode mean over seeds and its standard error.

    The standard error is over seeds (the spread between training runs), ``NaN`` with one seed.
    All reports must be of one env family (see :func:`group_by_env`).

    Examples
    --------
    >>> r = [{"algo": "a", "seed": s, "mean": [s, 2.0 * s], "frames": 10, "train_seconds": 1.0}
    ...      for s in (1, 3)]
    >>> agg = aggregate(r)["a"]
    >>> agg["mean"], agg["stderr"], agg["seeds"]
    ([2.0, 4.0], [1.0, 2.0], [1, 3])
    """
    envs = sorted({report.get("env", "gridworld") for report in reports})
    if len(envs) > 1:
        raise ValueError(
            f"runs of several env families ({', '.join(envs)}) cannot be averaged together; "
            "group them by env first (group_by_env)"
        )
    groups: dict[str, list[dict[str, Any]]] = {}
    for report in reports:
        groups.setdefault(report["algo"], []).append(report)
    order = {name: i for i, name in enumerate(ALGO_LABELS)}
    out: dict[str, dict[str, Any]] = {}
    for algo in sorted(groups, key=lambda a: (order.get(a, len(order)), a)):
        runs = sorted(groups[algo], key=lambda r: r["seed"])
        lengths = {len(r["mean"]) for r in runs}
        if len(lengths) != 1:
            counts = ", ".join(f"{r.get('run_dir', r['seed'])}: {len(r['mean'])}" for r in runs)
            raise ValueError(
                f"runs of {algo!r} on {envs[0] if envs else '?'} were evaluated on different "
                f"episode counts ({counts}); evaluate them alike (bamdp-eval episodes=<k>)"
            )
        means = torch.tensor([r["mean"] for r in runs], dtype=torch.float64)
        n = means.shape[0]
        stderr = (means.std(0) / math.sqrt(n)).tolist() if n > 1 else [math.nan] * len(means[0])
        totals = means.sum(1)
        out[algo] = {
            "label": ALGO_LABELS.get(algo, algo),
            "seeds": [r["seed"] for r in runs],
            "mean": means.mean(0).tolist(),
            "stderr": stderr,
            "total_mean": float(totals.mean()),
            "total_stderr": float(totals.std() / math.sqrt(n)) if n > 1 else math.nan,
            "frames": [r["frames"] for r in runs],
            "train_seconds": [r["train_seconds"] for r in runs],
            "per_seed": [
                {k: r[k] for k in ("seed", "run_dir", "frames", "train_seconds", "mean") if k in r}
                for r in runs
            ],
        }
    return out


def markdown_table(aggregated: dict[str, dict[str, Any]]) -> str:
    """Algorithm x episode table (mean +- s.e. over seeds), with seeds, frames and wall-clock.

    Examples
    --------
    >>> agg = {"varibad": {"label": "VariBAD", "mean": [1.0], "stderr": [0.5], "seeds": [0, 1],
    ...        "total_mean": 1.0, "total_stderr": 0.5, "frames": [10, 10],
    ...        "train_seconds": [60.0, 120.0]}}
    >>> print(markdown_table(agg).splitlines()[2])
    | VariBAD | 1.000 +- 0.500 | 1.000 +- 0.500 | 2 | 10 | 1.5 |
    """
    episodes = max(len(a["mean"]) for a in aggregated.values())
    header = ["algorithm", *(f"episode {k + 1}" for k in range(episodes)), "total"]
    header += ["seeds", "frames per run", "minutes per run"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def cell(mean: float, se: float) -> str:
        return f"{mean:.3f}" if math.isnan(se) else f"{mean:.3f} +- {se:.3f}"

    for algo in aggregated.values():
        cells = [cell(m, s) for m, s in zip(algo["mean"], algo["stderr"], strict=True)]
        frames = sorted(set(algo["frames"]))
        minutes = sum(algo["train_seconds"]) / len(algo["train_seconds"]) / 60.0
        row = [
            algo["label"],
            *cells,
            cell(algo["total_mean"], algo["total_stderr"]),
            str(len(algo["seeds"])),
            "/".join(str(f) for f in frames),
            f"{minutes:.1f}",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


@torch.no_grad()
def record_belief_rollout(agent, config, goal: Sequence[int], episodes: int | None = None):
    """Roll a trained VariBAD agent out on one GridNavi task and record its belief at every step.

    ``agent`` is the run's :class:`~torchrl_bamdp.trainers.Agent` (e.g. ``trainer.agent``) and
    ``config`` its config (``trainer.config``).

    Returns a :class:`~torchrl_bamdp.evaluation.plots.BeliefRollout` with the agent's cells, the
    reward decoder's goal probability per cell for the belief mean at every step (t = 0 is the
    prior), the latent mean/log-variance, and the exact posterior for comparison.

    Examples
    --------
    A freshly built (untrained) VariBAD trainer is enough to see what is recorded:

    >>> import tempfile
    >>> from torchrl_bamdp.configs import load_config
    >>> from torchrl_bamdp.trainers import Trainer
    >>> cfg = load_config({"env": {"num_envs": 4}, "train": {"progress_bar": False}})
    >>> trainer = Trainer(cfg, tempfile.mkdtemp())
    >>> rollout = record_belief_rollout(trainer.agent, trainer.config, goal=(4, 2))
    >>> rollout.positions.shape, rollout.reward_probs.shape  # 60 steps + the prior, 5x5 cells
    (torch.Size([61, 2]), torch.Size([61, 25]))
    >>> int((rollout.exact_probs[0] > 0).sum())  # the exact prior: uniform over 21 goals
    21
    """
    from torchrl.envs import ExplorationType, TransformedEnv, set_exploration_type

    from torchrl_bamdp.envs import BAMDPEnv, GridNaviEnv, candidate_goal_cells
    from torchrl_bamdp.modules import GridCellRewardDecoder
    from torchrl_bamdp.transforms import BELIEF_LOGVAR, BELIEF_MEAN, BELIEF_PROBS, ExactGridBelief

    decoder = agent.elbo_loss.reward_decoder if agent.elbo_loss else None
    if not config.has_figure("belief_heatmap") or not isinstance(decoder, GridCellRewardDecoder):
        raise ValueError(
            "belief rollouts need a VariBAD run with algo.decoders.reward=grid_cells on a task "
            "family that declares the belief_heatmap figure (GridNavi) "
            f"(got env={config.env.name!r}, algo={config.algo.name!r})"
        )
    episodes = episodes or config.env.episodes_per_task
    grid = config.env.grid_size
    task = torch.tensor([list(goal)], dtype=torch.float32)
    base = BAMDPEnv(
        GridNaviEnv(num_envs=1, grid_size=grid),
        episode_length=config.env.episode_length,
        episodes_per_task=episodes,
        fixed_tasks=task,
    )
    env = TransformedEnv(base, agent.make_transforms())
    # The exact posterior under the prior the agent was trained with (env.train_tasks), falling
    # back to every goal for a goal outside it (see ExactGridBelief).
    goals = grid_goal_cells(grid, config.env.train_tasks, config.env.split_seed)
    fallback = None if config.env.train_tasks == ALL_TASKS else candidate_goal_cells(grid)
    env.append_transform(ExactGridBelief(grid, candidates=torch.tensor(goals), fallback=fallback))
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        rollout = env.rollout(
            episodes * config.env.episode_length, agent.actor, break_when_any_done=False
        )[0]

    def with_start(key):
        return torch.cat([rollout[key][:1], rollout["next", key]], dim=0)

    mean = with_start(BELIEF_MEAN)
    done = torch.cat([torch.zeros(1, dtype=torch.bool), rollout["next", "episode_done"][:, 0]])
    return BeliefRollout(
        positions=with_start("observation").long(),
        reward_probs=decoder.probabilities(mean),
        goal=tuple(int(g) for g in goal),
        episode_done=done,
        mean=mean,
        logvar=with_start(BELIEF_LOGVAR),
        exact_probs=with_start(BELIEF_PROBS),
        grid_size=grid,
    )


def last_eval_report(run_dir: str | Path) -> dict[str, Any]:
    """A run's latest evaluation from its ``eval.jsonl`` (no new rollouts), shaped like the report
    of :func:`~torchrl_bamdp.trainers.runs.evaluate_run`.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "config.json").write_text(json.dumps({"algo": {"name": "rl2"}, "seed": 3}))
    >>> _ = (d / "eval.jsonl").write_text(json.dumps({"frames": 9, "mean": [1.0]}) + chr(10))
    >>> last_eval_report(d)["algo"], last_eval_report(d)["mean"]
    ('rl2', [1.0])
    """
    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    last = None
    path = run_dir / "eval.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            last = json.loads(line)
        except json.JSONDecodeError:  # a line torn by a kill
            continue
    if last is None:
        raise ValueError(f"{run_dir} has no evaluation yet (eval.jsonl is missing or empty)")
    return {
        "run_dir": str(run_dir),
        "env": config.get("env", {}).get("name", "gridworld"),
        "algo": config.get("algo", {}).get("name", "varibad"),
        "seed": config.get("seed", 0),
        "train_seconds": math.nan,
        **last,
    }


def bayes_optimal_returns(config, episodes: int) -> list[float] | None:
    """Exact Bayes-optimal per-episode returns for a GridNavi config (``None`` for other envs).

    Examples
    --------
    >>> from torchrl_bamdp.configs import load_config
    >>> [round(r, 2) for r in bayes_optimal_returns(load_config({}), episodes=4)]
    [4.0, 11.07, 11.07, 11.07]
    >>> print(bayes_optimal_returns(load_config({"env": {"name": "point_robot_sparse"}}), 4))
    None
    """
    if config.env.name != "gridworld":
        return None
    spec = GridNaviSpec(
        grid_size=config.env.grid_size,
        episode_length=config.env.episode_length,
        episodes_per_task=episodes,
    )
    return BayesOptimalGridNavi(spec).expected_returns()


def write_figures(
    aggregated: dict[str, dict[str, Any]],
    out: str | Path,
    optimal: Sequence[float] | None = None,
    rollout_goal: Sequence[int] = (4, 2),
    subtitle: str = "",
    trainers: Mapping[str, Any] | None = None,
    open_run: Callable[[str], Any] | None = None,
) -> list[Path]:
    """Fig 4 (per-episode returns, learning curves) and, with a VariBAD run, Fig 3a/3b.

    Fig 3a/3b come from the VariBAD run of the lowest seed, on the GridNavi task whose goal is
    ``rollout_goal``. Every figure is written as PNG and PDF into ``out``; returns the paths.
    The belief figures need the run's agent: ``trainers`` maps run directories to already open
    runs (anything with ``agent`` and ``config``, e.g. a ``Trainer``), and ``open_run(run_dir)``
    opens the others (e.g. :func:`torchrl_bamdp.trainers.runs.open_run`, read-only from the
    checkpoint); a VariBAD run that neither gives gets no Fig 3a/3b.

    Examples
    --------
    Two seeds of the random policy (no learning curve, no belief): the per-episode figure only.

    >>> import tempfile
    >>> from torchrl_bamdp.configs import load_config
    >>> reports = [{"algo": "random", "seed": s, "mean": [-1.5 + s, -1.4], "frames": 0,
    ...             "train_seconds": 0.0} for s in (0, 1)]
    >>> optimal = bayes_optimal_returns(load_config({}), episodes=2)
    >>> paths = write_figures(aggregate(reports), tempfile.mkdtemp(), optimal=optimal)
    >>> [p.name for p in paths]
    ['fig4_per_episode.png', 'fig4_per_episode.pdf']
    """
    out = Path(out)
    written: list[Path] = []
    learners = {a: v for a, v in aggregated.items() if a not in ("bayes_optimal", "random")}
    references: dict[str, Any] = {}
    if optimal is not None:
        references["Bayes-optimal (DP)"] = list(optimal)
    # The oracle is a reference line next to other algorithms, and the result when alone.
    oracle_is_reference = "oracle" in aggregated and len(aggregated) > 1
    if oracle_is_reference:
        references["Oracle"] = aggregated["oracle"]["mean"]
    results = {
        v["label"]: (v["mean"], v["stderr"])
        for a, v in aggregated.items()
        if not (a == "oracle" and oracle_is_reference)
    }
    if results:
        written += plot_per_episode_returns(
            results,
            out / "fig4_per_episode",
            references=references,
            title=f"Meta-test return per episode\nmean +- s.e. over seeds{subtitle}",
        )
    curves = {}
    for values in learners.values():
        frames, mean, stderr = load_eval_curves([p["run_dir"] for p in values["per_seed"]])
        curves[values["label"]] = (frames, mean, stderr)
    if curves:
        written += plot_learning_curves(
            curves,
            out / "fig4_learning_curves",
            references={"Bayes-optimal (DP)": float(sum(optimal))} if optimal else None,
            title="Test return during training (mean +- s.e. over seeds)",
        )
    run_dir = aggregated["varibad"]["per_seed"][0]["run_dir"] if "varibad" in aggregated else None
    run = (trainers or {}).get(str(run_dir))
    if run is None and run_dir is not None and open_run is not None:
        run = open_run(run_dir)
    if run is not None and run.config.has_figure("belief_heatmap"):
        episodes = len(aggregated["varibad"]["mean"])
        rollout = record_belief_rollout(run.agent, run.config, rollout_goal, episodes=episodes)
        goal = tuple(rollout_goal)
        written += rollout.plot_belief(
            out / "fig3a_belief_rollout",
            title=f"VariBAD test rollout, goal {goal}: decoder belief (top) vs exact posterior",
        )
        written += rollout.plot_latents(
            out / "fig3b_latents", title=f"VariBAD latent along the rollout, goal {goal}"
        )
    return written
