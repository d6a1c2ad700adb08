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
    "varibad_switching": "VariBAD (switching ELBO)",
    "rl2": "RL2",
    "rl2_original": "RL2 (original config)",
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
    # The env the agent was trained on: its frames too, with env.observation=pixels.
    pixels = {"observation": config.env.observation}
    if config.env.image_size is not None:
        pixels["image_size"] = config.env.image_size
    base = BAMDPEnv(
        GridNaviEnv(num_envs=1, grid_size=grid, **pixels),
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
        # The cells, read back from the frames with pixel observations.
        positions=base.task_env.positions_of(with_start("observation")),
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


def bayes_optimal_returns(
    config, episodes: int, distribution: str | None = None
) -> list[float] | None:
    """Exact Bayes-optimal per-episode returns for a GridNavi config (``None`` for other envs,
    and for a task-switching GridNavi, whose Bayes-optimal policy the DP does not cover).

    ``distribution`` is the task distribution whose prior the Bayes-optimal agent knows
    (default ``env.train_tasks``); it plans for ``episodes`` episodes.

    Examples
    --------
    >>> from torchrl_bamdp.configs import load_config
    >>> [round(r, 2) for r in bayes_optimal_returns(load_config({}), episodes=4)]
    [4.0, 11.07, 11.07, 11.07]
    >>> [round(r, 2) for r in bayes_optimal_returns(load_config({}), 2, "heldout_test")]
    [9.28, 11.48]
    >>> print(bayes_optimal_returns(load_config({"env": {"name": "point_robot_sparse"}}), 4))
    None
    """
    if config.env.name != "gridworld" or config.env.switching:
        return None  # the DP is for a goal fixed for the whole BAMDP
    distribution = distribution or config.env.train_tasks
    goals = None
    if distribution != ALL_TASKS:
        goals = tuple(grid_goal_cells(config.env.grid_size, distribution, config.env.split_seed))
    spec = GridNaviSpec(
        grid_size=config.env.grid_size,
        episode_length=config.env.episode_length,
        episodes_per_task=episodes,
        goals=goals,
    )
    return BayesOptimalGridNavi(spec).expected_returns()


# -- out-of-distribution reports --------------------------------------------------------------
#: The ``schema`` entry of an OOD report (:func:`ood_report`); checked by :func:`check_ood_report`.
OOD_SCHEMA = "torchrl_bamdp.ood_report/1"
#: Keys of one run's OOD record (``trainers.runs.evaluate_run_ood``) that every run of a report
#: must share: they define what the columns are.
OOD_RUN_IDENTITY = ("env", "train_tasks", "split_seed", "trained_episodes", "episodes")


def ood_report(
    runs: Sequence[Mapping[str, Any]],
    command: str | None = None,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """Aggregate per-run OOD records over seeds: per algorithm and task distribution, the
    per-episode mean return and its standard error over seeds, next to the Bayes-optimal
    reference of each distribution's prior where one exists (GridNavi).

    ``runs`` are records of ``torchrl_bamdp.trainers.runs.evaluate_run_ood`` (one per trained
    run): all of one env, training distribution, split seed, trained and meta-tested number of
    episodes, and meta-tested on the same distributions. ``notes`` are appended to the report's
    own (e.g. which references a family without an exact Bayes-optimal one has). The report's
    layout is checked by :func:`check_ood_report` (``schema`` :data:`OOD_SCHEMA`);
    :func:`ood_markdown` renders it.

    Examples
    --------
    >>> def run(algo, seed, train, test):
    ...     split = lambda role, mean: {"role": role, "num_tasks": 80, "mean": mean,
    ...         "stderr": [0.0, 0.0], "total_mean": sum(mean), "bayes_optimal": [9.0, 11.0],
    ...         "description": "", "disjoint_from_train": role == "test"}
    ...     return {"run_dir": f"runs/{algo}{seed}", "env": "gridworld", "algo": algo,
    ...             "seed": seed, "frames": 10, "train_seconds": 60.0,
    ...             "train_tasks": "heldout_train", "split_seed": 0, "trained_episodes": 1,
    ...             "episodes": 2, "deterministic": True, "time_features": False,
    ...             "privileged": [], "splits": {"heldout_train": split("train", train),
    ...                                          "heldout_test": split("test", test)}}
    >>> report = ood_report([run("rl2", 0, [1.0, 2.0], [0.0, 1.0]),
    ...                      run("rl2", 1, [3.0, 4.0], [2.0, 1.0])])
    >>> check_ood_report(report)
    >>> rl2 = report["algorithms"]["rl2"]["splits"]
    >>> rl2["heldout_train"]["mean"], rl2["heldout_test"]["stderr"]
    ([2.0, 3.0], [1.0, 0.0])
    """
    if not runs:
        raise ValueError("ood_report needs at least one run record")
    first = runs[0]
    for key in OOD_RUN_IDENTITY:
        values = sorted({json.dumps(r.get(key)) for r in runs})
        if len(values) > 1:
            raise ValueError(
                f"runs with different {key} ({', '.join(values)}) cannot share one OOD report; "
                "report each group on its own"
            )
    names = list(first["splits"])
    for r in runs:
        if list(r["splits"]) != names:
            raise ValueError(
                f"run {r.get('run_dir')} was meta-tested on {list(r['splits'])}, not {names}; "
                "evaluate every run on the same task distributions"
            )
    distributions = {}
    for name in names:
        split = first["splits"][name]
        distributions[name] = {
            "role": split["role"],
            "description": split.get("description", ""),
            "disjoint_from_train": bool(split.get("disjoint_from_train", False)),
            "num_tasks": split["num_tasks"],
            "bayes_optimal": split.get("bayes_optimal"),
        }
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in runs:
        groups.setdefault(r["algo"], []).append(r)
    order = {name: i for i, name in enumerate(ALGO_LABELS)}
    algorithms: dict[str, Any] = {}
    for algo in sorted(groups, key=lambda a: (order.get(a, len(order)), a)):
        mine = sorted(groups[algo], key=lambda r: r["seed"])
        seeds = [r["seed"] for r in mine]
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"runs of {algo!r} repeat a seed ({seeds}); one run per seed")
        splits = {}
        for name in names:
            means = torch.tensor([r["splits"][name]["mean"] for r in mine], dtype=torch.float64)
            n = means.shape[0]
            totals = means.sum(1)
            if n > 1:
                stderr = (means.std(0) / math.sqrt(n)).tolist()
                total_stderr = float(totals.std() / math.sqrt(n))
            else:  # one run: the spread over its test tasks
                stderr = [float(v) for v in mine[0]["splits"][name]["stderr"]]
                total_stderr = math.nan
            splits[name] = {
                "mean": means.mean(0).tolist(),
                "stderr": stderr,
                "total_mean": float(totals.mean()),
                "total_stderr": total_stderr,
            }
        algorithms[algo] = {
            "label": ALGO_LABELS.get(algo, algo),
            "seeds": seeds,
            "frames": [r["frames"] for r in mine],
            "train_seconds": [r["train_seconds"] for r in mine],
            "privileged": sorted({p for r in mine for p in r.get("privileged", [])}),
            "splits": splits,
            "per_seed": [
                {
                    "seed": r["seed"],
                    "run_dir": r.get("run_dir"),
                    "frames": r["frames"],
                    "splits": {name: r["splits"][name]["mean"] for name in names},
                    "per_task": {name: r["splits"][name].get("per_task", []) for name in names},
                }
                for r in mine
            ],
        }
    over_seeds = max(len(group) for group in groups.values()) > 1
    actions = " (greedy actions)" if first.get("deterministic", True) else " (sampled actions)"
    notes_out = [
        (
            "mean +- s.e. over training seeds of each run's mean return per episode over its "
            "test tasks (one seed: the s.e. is over its test tasks)"
            if over_seeds
            else "mean +- s.e. over the test tasks of one run"
        )
        + actions,
    ]
    if any(d["bayes_optimal"] is not None for d in distributions.values()):
        notes_out.append(
            "Bayes-optimal: the exact expected return (dynamic programming) of the agent that "
            "knows each distribution's prior and plans for the meta-tested number of episodes"
        )
    else:
        notes_out.append(f"no exact Bayes-optimal reference exists for {first['env']}")
    if first["episodes"] > first["trained_episodes"] and any(r.get("time_features") for r in runs):
        notes_out.append(
            f"episodes {first['trained_episodes'] + 1}-{first['episodes']} are beyond the "
            f"{first['trained_episodes']} trained: the agents' time features "
            "(algo.ppo.time_features) saturate at the last trained episode there (they read "
            f"episode {first['trained_episodes']})"
        )
    if "belief_oracle" in algorithms:
        notes_out.append(
            "the belief oracle keeps its training prior (env.train_tasks) on every distribution; "
            "once the rewards rule out all its training goals its posterior falls back to the "
            "goals not ruled out"
        )
    return {
        "schema": OOD_SCHEMA,
        "command": command,
        "env": first["env"],
        "train_tasks": first["train_tasks"],
        "split_seed": first["split_seed"],
        "trained_episodes": first["trained_episodes"],
        "episodes": first["episodes"],
        "deterministic": bool(first.get("deterministic", True)),
        "stderr_over": "seeds" if over_seeds else "tasks",
        "distributions": distributions,
        "algorithms": algorithms,
        "notes": [*notes_out, *notes],
    }


def _require(report: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str):
    if key not in report:
        raise ValueError(f"OOD report: {where} has no {key!r} entry")
    value = report[key]
    if not isinstance(value, kind):
        raise ValueError(f"OOD report: {where}.{key} must be {kind} (got {type(value).__name__})")
    return value


def _check_series(values: Any, length: int, where: str, allow_nan: bool = True) -> None:
    if not isinstance(values, list) or len(values) != length:
        raise ValueError(f"OOD report: {where} must be a list of {length} numbers (got {values!r})")
    for v in values:
        ok = isinstance(v, int | float) and not isinstance(v, bool)
        if not ok or (not allow_nan and math.isnan(v)) or math.isinf(v):
            raise ValueError(f"OOD report: {where} holds {v!r}, not a finite number")


def check_ood_report(report: Mapping[str, Any]) -> None:
    """Raise a ``ValueError`` naming the entry unless ``report`` has the layout of
    :func:`ood_report` (schema :data:`OOD_SCHEMA`).

    Top level: ``schema``, ``command``, ``env``, ``train_tasks``, ``split_seed``,
    ``trained_episodes``, ``episodes``, ``deterministic``, ``stderr_over`` (``seeds``, or
    ``tasks`` when every algorithm has one run), ``notes``, and

    * ``distributions``: by name, the training one first (``role`` ``train``) and every test one
      (``role`` ``test``), each with ``description``, ``disjoint_from_train``, ``num_tasks`` and
      ``bayes_optimal`` (``episodes`` values, or ``null`` where no exact reference exists);
    * ``algorithms``: by name, each with ``label``, ``seeds``, ``frames``, ``train_seconds``,
      ``privileged`` (what it reads beyond the belief) and ``splits``: for every distribution
      ``mean`` and ``stderr`` (``episodes`` values; over seeds, or over the test tasks of an
      algorithm's one run), ``total_mean``, ``total_stderr`` (``NaN`` with one run); and
      ``per_seed``.

    Examples
    --------
    >>> check_ood_report({"schema": "something else"})
    Traceback (most recent call last):
    ...
    ValueError: OOD report: schema must be 'torchrl_bamdp.ood_report/1' (got 'something else')
    """
    if report.get("schema") != OOD_SCHEMA:
        raise ValueError(
            f"OOD report: schema must be {OOD_SCHEMA!r} (got {report.get('schema')!r})"
        )
    for key, kind in (
        ("env", str),
        ("train_tasks", str),
        ("split_seed", int),
        ("trained_episodes", int),
        ("episodes", int),
        ("deterministic", bool),
        ("stderr_over", str),
        ("notes", list),
    ):
        _require(report, key, kind, "report")
    if report["stderr_over"] not in ("seeds", "tasks"):
        raise ValueError(
            f"OOD report: stderr_over must be 'seeds' or 'tasks' (got {report['stderr_over']!r})"
        )
    episodes = report["episodes"]
    distributions = _require(report, "distributions", dict, "report")
    roles = [d.get("role") for d in distributions.values()]
    if (
        not roles
        or roles[0] != "train"
        or roles.count("train") != 1
        or set(roles)
        - {
            "train",
            "test",
        }
    ):
        raise ValueError(
            "OOD report: distributions must list the training one first (role 'train') and "
            f"then test ones (role 'test'); got roles {roles}"
        )
    if list(distributions)[0] != report["train_tasks"]:
        raise ValueError(
            f"OOD report: the first distribution {list(distributions)[0]!r} is not "
            f"train_tasks={report['train_tasks']!r}"
        )
    for name, d in distributions.items():
        where = f"distributions.{name}"
        _require(d, "description", str, where)
        _require(d, "disjoint_from_train", bool, where)
        _require(d, "num_tasks", int, where)
        if d.get("bayes_optimal") is not None:
            _check_series(d["bayes_optimal"], episodes, f"{where}.bayes_optimal", allow_nan=False)
    algorithms = _require(report, "algorithms", dict, "report")
    if not algorithms:
        raise ValueError("OOD report: algorithms is empty")
    for algo, entry in algorithms.items():
        where = f"algorithms.{algo}"
        _require(entry, "label", str, where)
        seeds = _require(entry, "seeds", list, where)
        for key in ("frames", "train_seconds", "per_seed"):
            if len(_require(entry, key, list, where)) != len(seeds):
                raise ValueError(f"OOD report: {where}.{key} must have one entry per seed")
        _require(entry, "privileged", list, where)
        splits = _require(entry, "splits", dict, where)
        if list(splits) != list(distributions):
            raise ValueError(
                f"OOD report: {where}.splits must cover the distributions {list(distributions)} "
                f"in order (got {list(splits)})"
            )
        for name, split in splits.items():
            _check_series(split.get("mean"), episodes, f"{where}.splits.{name}.mean", False)
            _check_series(split.get("stderr"), episodes, f"{where}.splits.{name}.stderr")
            for key in ("total_mean", "total_stderr"):
                _require(split, key, float, f"{where}.splits.{name}")


def ood_markdown(report: Mapping[str, Any]) -> str:
    """An OOD report (:func:`ood_report`) as Markdown: one row per episode, and for every task
    distribution (the training one first) one column per algorithm (mean +- s.e. over seeds)
    and the Bayes-optimal reference of that distribution's prior, side by side.

    Examples
    --------
    >>> report = {"env": "gridworld", "train_tasks": "a", "split_seed": 0, "episodes": 1,
    ...           "trained_episodes": 1, "notes": [],
    ...           "distributions": {"a": {"role": "train", "description": "", "num_tasks": 4,
    ...                                   "disjoint_from_train": False, "bayes_optimal": [2.0]},
    ...                             "b": {"role": "test", "description": "", "num_tasks": 4,
    ...                                   "disjoint_from_train": True, "bayes_optimal": None}},
    ...           "algorithms": {"rl2": {"label": "RL2", "seeds": [0], "privileged": [],
    ...               "frames": [9], "splits": {
    ...                   "a": {"mean": [1.0], "stderr": [math.nan], "total_mean": 1.0,
    ...                         "total_stderr": math.nan},
    ...                   "b": {"mean": [0.5], "stderr": [math.nan], "total_mean": 0.5,
    ...                         "total_stderr": math.nan}}}}}
    >>> print(ood_markdown(report).splitlines()[-3])
    | 1 | 1.000 | 2.000 | 0.500 |
    """
    distributions = report["distributions"]
    algorithms = report["algorithms"]

    def cell(mean: float, se: float) -> str:
        return f"{mean:.3f}" if math.isnan(se) else f"{mean:.3f} +- {se:.3f}"

    def kind(name: str) -> str:
        d = distributions[name]
        if d["role"] == "train":
            return "in distribution"
        return (
            "OOD, disjoint from training" if d["disjoint_from_train"] else "test, overlaps training"
        )

    lines = [
        f"**{report['env']}**: trained on `{report['train_tasks']}` (split seed "
        f"{report['split_seed']}) with {report['trained_episodes']} episodes per task, "
        f"meta-tested for {report['episodes']} episodes per task.",
        "",
    ]
    for name, d in distributions.items():
        described = f": {d['description']}" if d.get("description") else ""
        lines.append(f"- `{name}` ({kind(name)}, {d['num_tasks']} test tasks){described}")
    for algo in algorithms.values():
        seeds = len(algo["seeds"])
        frames = "/".join(str(f) for f in sorted(set(algo["frames"])))
        privileged = f"; reads {', '.join(algo['privileged'])}" if algo["privileged"] else ""
        lines.append(f"- {algo['label']}: {seeds} seed(s), {frames} frames per run{privileged}")
    lines.append("")
    header, rows = ["episode"], [[str(k + 1)] for k in range(report["episodes"])] + [["total"]]
    for name, d in distributions.items():
        for algo in algorithms.values():
            header.append(f"{algo['label']} `{name}`")
            split = algo["splits"][name]
            for k, (m, se) in enumerate(zip(split["mean"], split["stderr"], strict=True)):
                rows[k].append(cell(m, se))
            rows[-1].append(cell(split["total_mean"], split["total_stderr"]))
        if d.get("bayes_optimal") is not None:
            header.append(f"Bayes-optimal `{name}`")
            for k, value in enumerate(d["bayes_optimal"]):
                rows[k].append(f"{value:.3f}")
            rows[-1].append(f"{sum(d['bayes_optimal']):.3f}")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", *(f"Note: {note}." for note in report.get("notes", []))]
    return "\n".join(lines) + "\n"


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
