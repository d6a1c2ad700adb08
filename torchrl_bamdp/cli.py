"""Console scripts: ``bamdp-train`` (Hydra), ``bamdp-eval`` and ``bamdp-plot``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from torchrl_bamdp.configs.schema import (
    Config,
    ConfigError,
    load_config,
    read_config_file,
    read_run_config,
)

CONFIG_DIR = str(Path(__file__).parent / "configs")

#: Exit codes of the console scripts besides 0: bad input (configuration, arguments, checkpoint)
#: and a run stopped by NaN/inf (``train.on_nonfinite``).
EXIT_BAD_INPUT = 2
EXIT_NONFINITE = 3


def default_run_dir(config: Config) -> Path:
    """``runs/<env>-<algo>-seed<seed>-<YYYYmmdd-HHMMSS>`` under the working directory.

    Examples
    --------
    >>> default_run_dir(Config(seed=3)).as_posix()  # doctest: +ELLIPSIS
    'runs/gridworld-varibad-seed3-...'
    """
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{config.env.name}-{config.algo.name}-seed{config.seed}-{stamp}"


def compose_config(overrides: list[str] | None = None) -> Config:
    """Compose the packaged Hydra configs with ``overrides`` (as on the command line), validated.

    Examples
    --------
    >>> compose_config(["env.num_envs=32"]).env.num_envs
    32
    """
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose(config_name="config", overrides=list(overrides or []))
    data = OmegaConf.to_container(cfg, resolve=True)
    data.pop("hydra", None)
    return load_config(data)


def _apply_overrides(base: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` command-line overrides (Hydra syntax) onto a saved config dict."""
    from omegaconf import OmegaConf

    merged = OmegaConf.create(base)
    kept = []
    for item in overrides:
        key = item.lstrip("+~").partition("=")[0]
        if key in ("resume", "run_dir") or key.startswith("hydra"):
            continue
        kept.append(item.lstrip("+"))
    # from_dotlist parses values as YAML, as Hydra does: "960" -> 960, "null" -> None.
    merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(kept))
    return OmegaConf.to_container(merged, resolve=True)


def resolve_run(data: dict[str, Any], overrides: list[str]) -> tuple[Config, Path]:
    """Turn a composed config into a validated config and its run directory.

    With ``resume=<run_dir>`` the run's saved ``config.json`` is the base and only the
    command-line overrides are applied on top (e.g. a larger ``train.total_frames``).

    Examples
    --------
    >>> import json, tempfile
    >>> from torchrl_bamdp.configs.schema import config_to_dict
    >>> d = tempfile.mkdtemp()
    >>> config, run_dir = resolve_run({"run_dir": d, "env": {"num_envs": 8}}, [])
    >>> run_dir == Path(d), config.env.num_envs
    (True, 8)
    >>> _ = (run_dir / "config.json").write_text(json.dumps(config_to_dict(config)))
    >>> config, _ = resolve_run({"resume": d}, ["train.total_frames=960"])
    >>> config.env.num_envs, config.train.total_frames, config.resume == d
    (8, 960, True)
    >>> resolve_run({"resume": tempfile.mkdtemp()}, [])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    torchrl_bamdp.configs.schema.ConfigError: resume='...': no config.json there; is it a run \
directory?
    """
    resume = data.get("resume")
    if resume:
        run_dir = Path(resume)
        saved = run_dir / "config.json"
        if not saved.exists():
            raise ConfigError(f"resume={resume!r}: no config.json there; is it a run directory?")
        base = read_config_file(saved)
        config = load_config(_apply_overrides(base, overrides))
        config.resume = str(run_dir)
        config.run_dir = str(run_dir)
        return config, run_dir
    config = load_config(data)
    run_dir = Path(config.run_dir) if config.run_dir else default_run_dir(config)
    config.run_dir = str(run_dir)
    return config, run_dir


def _train(cfg) -> None:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(cfg, resolve=True)
    try:
        config, run_dir = resolve_run(data, list(HydraConfig.get().overrides.task))
    except ConfigError as err:
        print(f"bamdp-train: invalid configuration: {err}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    print(f"bamdp-train: run directory {run_dir}")
    result = run_training(config, run_dir)
    evaluation = result["eval"]
    returns = ", ".join(f"{m:.3f}" for m in evaluation["mean"])
    print(f"bamdp-train: {result['frames']} frames; meta-test return per episode: {returns}")


def run_training(config: Config, run_dir: Path) -> dict[str, Any]:
    """Train a run as ``bamdp-train`` does, turning known failures into a message and exit code.

    A corrupt or mismatched checkpoint (:class:`~torchrl_bamdp.trainers.CheckpointError`) prints
    its message and exits with code 2; a run stopped by non-finite values
    (:class:`~torchrl_bamdp.trainers.NonFiniteError`) prints its report and exits with code 3.
    No traceback is printed for either.

    Examples
    --------
    >>> import tempfile
    >>> cfg = load_config({"env": {"num_envs": 4}, "train": {"total_frames": 240,
    ...                    "eval_tasks": 21, "progress_bar": False}})
    >>> run_training(cfg, Path(tempfile.mkdtemp()))["frames"]
    240
    """
    # Imported only once the config is valid: a typo is reported without loading TorchRL.
    from torchrl_bamdp.trainers import CheckpointError, NonFiniteError, Trainer

    try:
        trainer = Trainer(config, run_dir)
    except CheckpointError as err:
        print(f"bamdp-train: {err}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    try:
        return trainer.train()
    except NonFiniteError as err:
        if trainer.logger is not None:
            trainer.logger.close()
        print(
            f"bamdp-train: training stopped at iteration {trainer.iteration} ({trainer.frames} "
            f"frames): {err}. The last checkpoint is {trainer.checkpoint_path}.",
            file=sys.stderr,
        )
        sys.exit(EXIT_NONFINITE)


def train_main() -> None:
    """Entry point of ``bamdp-train`` (Hydra: ``bamdp-train env=gridworld algo=varibad``).

    Examples
    --------
    An invalid configuration is reported on stderr, before anything runs, with exit code 2:

    >>> import sys
    >>> from unittest import mock
    >>> with mock.patch.object(sys, "argv", ["bamdp-train", "train.total_frames=0"]):
    ...     try:
    ...         train_main()
    ...     except SystemExit as err:
    ...         print("exit code", err.code)
    exit code 2
    """
    import hydra

    hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="config")(_train)()


EVAL_USAGE = (
    "usage: bamdp-eval run_dir=<run directory, or a folder of runs> [run_dir=...] [tasks=210] "
    "[episodes=<k>] [deterministic=true] [out=<path stem for a multi-run summary>]"
)
PLOT_USAGE = (
    "usage: bamdp-plot run_dir=<run directory, or a folder of runs> [run_dir=...] "
    "[out=<folder>] [goal=<x>,<y>]"
)


def _parse_args(
    argv: list[str] | None, allowed: set[str], usage: str, script: str
) -> tuple[list[Path], dict[str, str]]:
    """``key=value`` arguments; ``run_dir`` may repeat. Exits 2 on unknown or missing ones."""
    pairs = [a.partition("=")[::2] for a in (sys.argv[1:] if argv is None else argv)]
    unknown = sorted({k for k, _ in pairs} - allowed - {"run_dir"})
    run_dirs = [Path(v) for k, v in pairs if k == "run_dir"]
    if unknown or not run_dirs:
        print(f"{script}: unknown or missing arguments {unknown}\n{usage}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    return run_dirs, {k: v for k, v in pairs if k != "run_dir"}


def _find_runs_or_exit(paths: list[Path], script: str) -> list[Path]:
    from torchrl_bamdp.evaluation.report import find_runs

    for path in paths:
        if not (path / "config.json").exists() and not path.is_dir():
            print(f"{script}: run_dir={path} holds no config.json", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
    runs = find_runs(paths)
    if not runs:
        print(f"{script}: no run (a folder with config.json) under {paths}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    return runs


def eval_main(argv: list[str] | None = None) -> None:
    """Entry point of ``bamdp-eval``: meta-test trained runs, write JSON and Markdown.

    With one run directory, ``meta_test.json`` and ``meta_test.md`` are written into it. With
    several (``run_dir=`` repeated, or a folder holding runs, e.g. a multirun's), every run is
    evaluated on the same test tasks and the per-episode returns are aggregated per algorithm
    over seeds (mean +- s.e. over seeds) into ``<out>.json`` / ``<out>.md`` (default
    ``meta_test_summary`` in the folder given, or in the working directory). Runs are opened
    read-only: their config, metrics and logger are left untouched.

    Examples
    --------
    A misspelt argument (``task`` for ``tasks``) is a usage error, exit code 2:

    >>> try:
    ...     eval_main(["run_dir=runs/demo", "task=21"])
    ... except SystemExit as err:
    ...     print("exit code", err.code)
    exit code 2
    """
    allowed = {"tasks", "episodes", "deterministic", "out"}
    paths, args = _parse_args(argv, allowed, EVAL_USAGE, "bamdp-eval")
    try:
        for key in ("tasks", "episodes"):
            if key in args and int(args[key]) < 1:
                raise ValueError
    except ValueError:
        print(
            f"bamdp-eval: tasks and episodes must be positive integers (got "
            f"tasks={args.get('tasks')!r}, episodes={args.get('episodes')!r})\n{EVAL_USAGE}",
            file=sys.stderr,
        )
        sys.exit(EXIT_BAD_INPUT)
    if len(paths) == 1 and ((paths[0] / "config.json").exists() or not paths[0].is_dir()):
        _eval_one(paths[0], args)
        return
    runs = _find_runs_or_exit(paths, "bamdp-eval")
    default_out = (paths[0] if len(paths) == 1 else Path(".")) / "meta_test_summary"
    _eval_many(runs, args, Path(args.get("out", default_out)))


def _eval_many(runs: list[Path], args: dict[str, str], out: Path) -> None:
    from torchrl_bamdp.evaluation.report import aggregate, evaluate_run, markdown_table
    from torchrl_bamdp.trainers import CheckpointError

    deterministic = None
    if "deterministic" in args:
        deterministic = args["deterministic"].lower() == "true"
    reports = []
    for run_dir in runs:
        try:
            reports.append(
                evaluate_run(
                    run_dir,
                    tasks=int(args["tasks"]) if "tasks" in args else None,
                    episodes=int(args["episodes"]) if "episodes" in args else None,
                    deterministic=deterministic,
                )
            )
        except (CheckpointError, FileNotFoundError, ConfigError, ValueError) as err:
            print(f"bamdp-eval: {run_dir}: {err}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
    try:
        aggregated = aggregate(reports)
    except ValueError as err:
        print(f"bamdp-eval: {err}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"runs": reports, "algorithms": aggregated}
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    table = markdown_table(aggregated)
    out.with_suffix(".md").write_text(table)
    print(table, end="")
    print(f"bamdp-eval: wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


def _eval_one(run_dir: Path, args: dict[str, str]) -> None:
    if not (run_dir / "config.json").exists():
        print(f"bamdp-eval: run_dir={run_dir} holds no config.json", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    overrides: dict[str, Any] = {"progress_bar": False}
    if "deterministic" in args:
        overrides["eval_deterministic"] = args["deterministic"].lower() == "true"
    try:
        config = read_run_config(run_dir, **overrides)
    except ConfigError as err:
        print(f"bamdp-eval: {run_dir}/config.json is invalid: {err}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    tasks = int(args.get("tasks", config.train.eval_tasks))
    episodes = int(args.get("episodes", config.train.eval_episodes or config.env.episodes_per_task))
    from torchrl_bamdp.trainers import CheckpointError, Trainer

    try:
        trainer = Trainer(config, run_dir, read_only=True)
    except (CheckpointError, FileNotFoundError) as err:
        print(f"bamdp-eval: {err}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    try:
        result = trainer.evaluate(num_tasks=tasks, episodes=episodes)
    except ValueError as err:  # e.g. tasks not a multiple of the GridNavi goals (stratified)
        print(f"bamdp-eval: {err}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    report = {"run_dir": str(run_dir), "frames": trainer.frames, **result.to_dict()}
    (run_dir / "meta_test.json").write_text(json.dumps(report, indent=2))
    lines = ["| episode | return (mean +- s.e.) |", "|---|---|"]
    for k, (m, s) in enumerate(zip(result.mean, result.stderr, strict=True)):
        lines.append(f"| {k + 1} | {m:.3f} +- {s:.3f} |")
    (run_dir / "meta_test.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def plot_main(argv: list[str] | None = None) -> None:
    """Entry point of ``bamdp-plot``: the paper's figures from one run or many.

    Fig 4 (per-episode return of each algorithm, mean +- s.e. over seeds, from each run's latest
    evaluation; learning curves from ``eval.jsonl``) and, for a VariBAD GridNavi run, Fig 3a
    (belief heatmaps along a test rollout on the task with goal ``goal``, next to the exact
    posterior) and Fig 3b (latent mean and log-variance). PNG and PDF into ``out`` (default
    ``<run_dir>/figures``).

    Examples
    --------
    Arguments are checked before any run is opened: a goal that is not ``x,y`` exits with code 2.

    >>> try:
    ...     plot_main(["run_dir=runs/demo", "goal=4"])
    ... except SystemExit as err:
    ...     print("exit code", err.code)
    exit code 2
    """
    paths, args = _parse_args(argv, {"out", "goal"}, PLOT_USAGE, "bamdp-plot")
    try:
        goal = tuple(int(v) for v in args.get("goal", "4,2").split(","))
        if len(goal) != 2:
            raise ValueError
    except ValueError:
        print(f"bamdp-plot: goal must be two integers x,y (got {args['goal']!r})", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    runs = _find_runs_or_exit(paths, "bamdp-plot")
    from torchrl_bamdp.evaluation.report import (
        aggregate,
        bayes_optimal_returns,
        last_eval_report,
        open_run,
        write_figures,
    )

    try:
        aggregated = aggregate([last_eval_report(run) for run in runs])
        config = open_run(runs[0]).config
        episodes = len(next(iter(aggregated.values()))["mean"])
        out = Path(args.get("out", (paths[0] if len(paths) == 1 else Path(".")) / "figures"))
        out.mkdir(parents=True, exist_ok=True)
        written = write_figures(
            aggregated, out, optimal=bayes_optimal_returns(config, episodes), rollout_goal=goal
        )
    except (ValueError, FileNotFoundError) as err:
        print(f"bamdp-plot: {err}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    for path in written:
        print(f"bamdp-plot: wrote {path}")
