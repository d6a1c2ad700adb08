"""Console scripts: ``bamdp-train`` (Hydra), ``bamdp-eval`` and ``bamdp-plot``."""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torchrl_bamdp.configs.compose import CONFIG_DIR, compose_dict, config_group_options
from torchrl_bamdp.configs.schema import (
    Config,
    ConfigError,
    config_to_dict,
    load_config,
    read_config_file,
    read_run_config,
)

if TYPE_CHECKING:
    from torchrl_bamdp.utils import Job

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
    return load_config(compose_dict(overrides))


#: Config entries that are open mappings (any key): a new key needs Hydra's ``+`` form.
OPEN_MAPPINGS = ("env.kwargs",)

#: Config groups a command line selects with ``group=option``.
CONFIG_GROUPS = ("env", "algo", "logger", "tuning")


def _dotted_keys(node: Any, prefix: str = "") -> list[str]:
    if not isinstance(node, dict):
        return []
    keys = []
    for key, value in node.items():
        path = f"{prefix}{key}"
        keys.append(path)
        keys.extend(_dotted_keys(value, f"{path}."))
    return keys


def check_overrides(overrides: list[str]) -> None:
    """Check ``bamdp-train`` overrides before Hydra composes them; raise a clear ConfigError.

    Catches what Hydra reports poorly: a group option that is a private partial or does not
    exist (``algo=_ppo``, ``env=gridwrld``), and a misspelt key without ``+``
    (``train.total_frame=1000``, for which Hydra only says "not in struct") with the key it
    probably meant. Hydra flags (``--help``, ``-m``) and ``hydra.*`` keys are left to Hydra.

    Examples
    --------
    >>> check_overrides(["train.total_frames=1000", "algo=rl2", "seed=0,1"])
    >>> try:
    ...     check_overrides(["train.total_frame=1000"])
    ... except ConfigError as err:
    ...     print(err)
    unknown key 'train.total_frame' in train.total_frame=1000; did you mean 'train.total_frames'?
    >>> try:
    ...     check_overrides(["algo=_ppo"])
    ... except ConfigError as err:
    ...     print(str(err).split(";")[0])
    algo=_ppo: '_ppo' is a partial shared by the algo configs, not one itself
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType
    from hydra.errors import HydraException

    items = [a for a in overrides if not a.startswith("-") and ("=" in a or a.startswith("~"))]
    try:
        parsed = OverridesParser.create().parse_overrides(items)
    except HydraException:
        return  # a syntax error: Hydra reports it with its own parser's message
    groups: list[str] = []
    for override in parsed:
        key = override.key_or_group
        if key not in CONFIG_GROUPS or override.type == OverrideType.DEL:
            continue
        options = config_group_options(key)
        if override.is_sweep_override():
            values = list(override.sweep_string_iterator())
        else:
            values = [str(override.value())]
        for value in values:
            if value.startswith("_"):
                raise ConfigError(
                    f"{override.input_line}: {value!r} is a partial shared by the {key} configs, "
                    f"not one itself; choose one of {options}"
                )
            if value not in options:
                close = difflib.get_close_matches(value, options, n=1, cutoff=0.5)
                hint = f"; did you mean {key}={close[0]}?" if close else ""
                raise ConfigError(
                    f"{override.input_line}: no {key} config {value!r}{hint} "
                    f"(choose one of {options})"
                )
        groups.append(f"{key}={values[0]}")
    changes = [
        o
        for o in parsed
        if o.type == OverrideType.CHANGE
        and o.key_or_group not in CONFIG_GROUPS
        and not o.key_or_group.startswith("hydra")
    ]
    if not changes:
        return
    composed = compose_dict(groups)
    known = _dotted_keys(composed)
    for override in changes:
        key = override.key_or_group
        if key in known:
            continue
        parent = key.rpartition(".")[0]
        if parent in OPEN_MAPPINGS and parent in known:
            # A new entry of an open mapping (env.kwargs): Hydra wants the + form.
            raise ConfigError(
                f"{override.input_line}: {parent} has no entry {key.rpartition('.')[2]!r} yet; "
                f"add it with +{override.input_line}"
            )
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else f" (add a new key with +{key}=...)"
        raise ConfigError(f"unknown key '{key}' in {override.input_line}{hint}")


def _apply_overrides(base: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` command-line overrides (Hydra syntax) onto a saved config dict.

    Group selections are not plain values here: ``env=`` and ``algo=`` must name the saved
    run's own env family and algorithm (a run cannot change them), ``tuning=`` follows the env,
    and ``logger=<option>`` replaces the saved logger section by that option's config.
    """
    from omegaconf import OmegaConf

    kept = []
    for item in overrides:
        key, _, value = item.lstrip("+~").partition("=")
        if key in ("resume", "run_dir") or key.startswith("hydra"):
            continue
        if key in ("env", "algo"):
            saved = (base.get(key) or {}).get("name")
            if value != saved:
                raise ConfigError(
                    f"{item}: the run being resumed is a {key} {saved!r} run and a resumed run "
                    f"cannot change its {key} (saved: {key}={saved}, asked: {key}={value}); "
                    "drop the override or start a new run_dir"
                )
            continue
        if key in ("tuning", "tuning_algo"):
            continue
        if key == "logger":
            if value not in config_group_options("logger"):
                raise ConfigError(
                    f"{item}: no logger config {value!r} "
                    f"(choose one of {config_group_options('logger')})"
                )
            path = Path(CONFIG_DIR) / "logger" / f"{value}.yaml"
            base = {**base, "logger": OmegaConf.to_container(OmegaConf.load(path))}
            continue
        kept.append(item.lstrip("+"))
    merged = OmegaConf.create(base)
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


def compose_or_resume(
    run_dir: str | Path, overrides: list[str], train_overrides: list[str] | None = None
) -> Config:
    """The config to train ``run_dir`` with: a new run, or the continuation of the one there.

    A campaign script's start-or-continue step (what ``bamdp-train`` does with and without
    ``resume=``): where ``run_dir`` holds a run (its ``config.json``), the saved config with only
    ``train_overrides`` on top (a budget or a wall-clock bound; the run's own settings are
    kept); otherwise ``overrides + train_overrides`` composed like the command line, with
    ``run_dir`` as the run directory.

    Examples
    --------
    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp()) / "run"
    >>> compose_or_resume(d, ["env.num_envs=8"], ["train.total_frames=960"]).env.num_envs
    8
    >>> _ = d.mkdir(), (d / "config.json").write_text(json.dumps(config_to_dict(
    ...     compose_or_resume(d, ["env.num_envs=8"]))))
    >>> config = compose_or_resume(d, ["env.num_envs=16"], ["train.total_frames=1920"])
    >>> config.env.num_envs, config.train.total_frames, config.resume == str(d)
    (8, 1920, True)
    """
    run_dir = Path(run_dir)
    train_overrides = list(train_overrides or [])
    if (run_dir / "config.json").exists():
        config, _ = resolve_run({"resume": str(run_dir)}, train_overrides)
    else:
        composed = compose_config([*overrides, f"run_dir={run_dir}", *train_overrides])
        config, _ = resolve_run(config_to_dict(composed), [])
    return config


def train_to_budget(
    run_dir: str | Path,
    overrides: Sequence[str],
    frames: int,
    max_minutes: float,
    eval_frames: int,
    *,
    label: str | None = None,
    marker: str | None = None,
    figures: bool = False,
    progress_bar: bool = False,
):
    """Start or continue a benchmark's run until its frame budget, within a wall-clock bound.

    The step every campaign script (``benchmarks/*_campaign.py``, ``pixel_gridnavi.py``) repeats
    per run: a new run composed from ``overrides`` like the command line, or the run already in
    ``run_dir`` continued with its own saved settings
    (:func:`compose_or_resume`); trained to ``frames`` frames
    (``train.total_frames``) for at most ``max_minutes`` (``train.max_minutes``), meta-tested
    every ``eval_frames`` frames whatever the batch size (so that runs with 16 and 64 envs spend
    the same on evaluation and their learning curves have the same resolution). A killed or
    timed-out run loses only the work since its last checkpoint, and the same call continues it.

    Parameters
    ----------
    run_dir : str or Path
        The run's directory.
    overrides : sequence of str
        Command-line overrides of a new run (``algo=...``, ``seed=...``); ignored on resume.
    frames : int
        The budget, ``train.total_frames``.
    max_minutes : float
        This call's wall-clock bound, ``train.max_minutes``.
    eval_frames : int
        Training frames between meta-tests (``train.eval_interval`` in batches, at least 1).
    label : str, optional
        What the progress lines call the run, before its directory.
    marker : str, optional
        A file name in ``run_dir``: written once the budget is reached (frames and training
        seconds), and read instead of opening the run when it exists, so that a finished run
        costs nothing on the next call.
    figures, progress_bar : bool
        ``train.figures`` (the end-of-run figures) and ``train.progress_bar``.

    Returns
    -------
    tuple of (Config, dict) or None
        ``None`` if the bound stopped the run before its budget; else its config and the
        ``Trainer.train()`` result with ``train_seconds`` added (from the marker, only
        ``frames`` and ``train_seconds``). A reference policy that is not trained (``random``,
        ``bayes_optimal``) is at its budget at once, with 0 frames.

    Examples
    --------
    >>> import tempfile
    >>> run_dir = Path(tempfile.mkdtemp()) / "run"
    >>> overrides = ["algo=oracle", "env.num_envs=4", "train.eval_tasks=21"]
    >>> config, result = train_to_budget(
    ...     run_dir, overrides, 240, 5.0, 240, label="oracle", marker="done.json"
    ... )  # doctest: +ELLIPSIS
    [...] train oracle: .../run
      trained 240 frames in ... min
    >>> result["frames"], config.train.eval_interval
    (240, 1)

    Called again, the finished run is not opened (its marker answers):

    >>> train_to_budget(run_dir, overrides, 240, 5.0, 240, marker="done.json")[1]["frames"]
    240
    """
    from torchrl_bamdp.trainers import Trainer  # trainers import torch: only when training

    run_dir = Path(run_dir)
    if marker is not None and (run_dir / marker).exists():
        return read_run_config(run_dir), json.loads((run_dir / marker).read_text())
    budget = [
        f"train.total_frames={frames}",
        f"train.max_minutes={max_minutes}",
        f"train.progress_bar={str(progress_bar).lower()}",
        f"train.figures={str(figures).lower()}",
    ]
    config = compose_or_resume(run_dir, list(overrides), budget)
    config.train.eval_interval = max(1, round(eval_frames / config.frames_per_batch))
    where = f"{label}: {run_dir}" if label else str(run_dir)
    print(f"[{time.strftime('%H:%M:%S')}] train {where}", flush=True)
    trainer = Trainer(config, run_dir)
    result = trainer.train()
    # A reference policy (random, bayes_optimal) is not trained: it is done at once.
    if result["frames"] < frames and trainer.agent.trains_policy:
        print(f"  stopped at {result['frames']:,} frames (time); the same call resumes it")
        return None
    result["train_seconds"] = round(trainer.train_seconds, 1)
    if marker is not None:
        done = {"frames": result["frames"], "train_seconds": result["train_seconds"]}
        (run_dir / marker).write_text(json.dumps(done))
    print(f"  trained {result['frames']:,} frames in {trainer.train_seconds / 60:.1f} min")
    return config, result


def add_campaign_arguments(
    parser: argparse.ArgumentParser, *, runs_root: str, out_dir: str, log: str
) -> None:
    """The options every campaign script (``benchmarks/*_campaign.py``) shares.

    ``--max-minutes`` (this invocation's wall-clock bound), ``--jobs`` (runs trained at once,
    each in a child process of the script: :func:`torchrl_bamdp.utils.run_jobs`),
    ``--runs-root``, ``--out-dir``, and the two a ``--jobs`` parent gives its children:
    ``--deadline`` (the parent's, so that no child outlives the bound) and ``--no-summary``
    (the parent summarises once; :func:`campaign_child_command`). :func:`campaign_deadline`
    reads the bound back.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The script's parser.
    runs_root, out_dir : str
        Defaults of ``--runs-root`` (run directories) and ``--out-dir`` (result JSON).
    log : str
        Where a child's output goes, for the help text (e.g. ``<runs-root>/<variant>/seed<k>.log``).

    Examples
    --------
    >>> parser = argparse.ArgumentParser()
    >>> add_campaign_arguments(parser, runs_root="runs/c", out_dir="out", log="<runs-root>/x.log")
    >>> args = parser.parse_args(["--jobs", "2", "--max-minutes", "30"])
    >>> args.jobs, args.runs_root, args.no_summary
    (2, 'runs/c', False)
    >>> campaign_deadline(args, now=1000.0)
    2800.0
    """
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=600.0,
        help="wall-clock bound of this invocation (resume with the same command)",
    )
    parser.add_argument(
        "--jobs",
        type=_at_least_one,
        default=1,
        help=f"runs trained at once, each in its own process (output in {log}); 1: one after "
        "another in this process",
    )
    parser.add_argument("--runs-root", default=runs_root)
    parser.add_argument("--out-dir", default=out_dir)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--no-summary", action="store_true", help=argparse.SUPPRESS)


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 (got {value})")
    return value


def campaign_deadline(args: argparse.Namespace, now: float | None = None) -> float:
    """The time (``time.time()`` seconds) by which a campaign invocation stops training:
    its parent's ``--deadline``, else ``--max-minutes`` from ``now``."""
    if args.deadline is not None:
        return args.deadline
    return (time.time() if now is None else now) + 60 * args.max_minutes


def campaign_child_command(
    script: str | Path, run_arguments: Sequence[str], args: argparse.Namespace, deadline: float
) -> list[str]:
    """The command line of one ``--jobs`` child: ``script`` run by this interpreter with its one
    run's ``run_arguments``, the parent's ``--runs-root``/``--out-dir``, its deadline and
    ``--no-summary``."""
    return [
        sys.executable,
        str(Path(script).resolve()),
        *run_arguments,
        "--runs-root",
        str(args.runs_root),
        "--out-dir",
        str(args.out_dir),
        "--deadline",
        repr(deadline),
        "--no-summary",
    ]


def train_campaign_runs(
    runs: Sequence[Any],
    args: argparse.Namespace,
    deadline: float,
    *,
    child: Callable[[Any], Job],
    train: Callable[[Any], None],
) -> list[Job]:
    """Train a campaign's pending ``runs``: ``--jobs`` at a time in child processes
    (``child(run)``: its :class:`~torchrl_bamdp.utils.Job`), or with ``--jobs 1`` one after another
    in this process (``train(run)``) while a minute is left before ``deadline``.

    Returns the child jobs that failed (none in-process: an error there propagates).
    """
    from torchrl_bamdp.utils import run_jobs  # imports torch: not on every console-script start

    if args.jobs > 1:
        return run_jobs([child(run) for run in runs], args.jobs)
    for run in runs:
        if time.time() > deadline - 60:
            break
        train(run)
    return []


def fail_if_any(failed: Sequence[Job]) -> None:
    """Exit non-zero naming the logs of failed campaign runs (after the summary of the others)."""
    if failed:
        raise SystemExit(f"{len(failed)} runs failed; see {[str(job.log) for job in failed]}")


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
    No traceback is printed for either. A run directory whose checkpoint already holds
    ``train.total_frames`` frames or more has nothing to train: that is said, with the frames
    on both sides, and the exit code is 2, before the run's files or logger are touched.

    Examples
    --------
    >>> import tempfile
    >>> cfg = load_config({"env": {"num_envs": 4}, "train": {"total_frames": 240,
    ...                    "eval_tasks": 21, "progress_bar": False,
    ...                    "figures": False}})  # figures: seconds of matplotlib
    >>> run_training(cfg, Path(tempfile.mkdtemp()))["frames"]
    240
    """
    # Imported only once the config is valid: a typo is reported without loading TorchRL.
    from torchrl_bamdp.trainers import CheckpointError, NonFiniteError, Trainer

    try:
        trainer = Trainer(config, run_dir, refuse_finished=True)
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

    try:
        check_overrides(sys.argv[1:])
    except ConfigError as err:
        print(f"bamdp-train: invalid configuration: {err}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="config")(_train)()


EVAL_USAGE = (
    "usage: bamdp-eval run_dir=<run directory, or a folder of runs> [run_dir=...] [tasks=210] "
    "[episodes=<k>] [deterministic=true] [test_tasks=<distribution>,...] "
    "[switching_hazard=<h> horizon=<steps>] [out=<path stem for a multi-run summary>]"
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
    evaluated on the same test tasks and the per-episode returns are aggregated per (env
    family, algorithm) over seeds (mean +- s.e. over seeds) into ``<out>.json`` (``{"runs":
    [...], "envs": {<env>: {<algo>: ...}}}``) and ``<out>.md`` (one table per env family;
    default ``meta_test_summary`` in the folder given, or in the working directory). Runs are
    opened read-only: their config, metrics and logger are left untouched.

    Out of distribution: with test task distributions (``test_tasks=heldout_test,...``, names
    the run's task family declares, or the run's own ``env.test_tasks`` when the argument is
    not given; ``test_tasks=`` with nothing turns them off), every run is also meta-tested on
    each of them, on ``tasks`` tasks of ``episodes`` episodes each (``episodes`` may exceed the
    trained number: the original meta-tests GridNavi on 6), and an OOD report is written:
    ``ood_report.json`` / ``ood_report.md`` in the run directory, or ``<out>_ood.json`` /
    ``<out>_ood.md`` for several runs (one pair per env, training distribution and split seed,
    suffixed ``_<env>-<train_tasks>-split<seed>`` when there are several). It holds the
    per-episode mean +- s.e. (over tasks for one run, over seeds for several) in distribution
    and per test distribution side by side, with the exact Bayes-optimal returns of each
    distribution's prior for GridNavi (schema: :func:`~torchrl_bamdp.evaluation.report.
    check_ood_report`). The in-distribution numbers also fill ``meta_test.*`` / ``<out>.*``.

    Examples
    --------
    A misspelt argument (``task`` for ``tasks``) is a usage error, exit code 2:

    >>> try:
    ...     eval_main(["run_dir=runs/demo", "task=21"])
    ... except SystemExit as err:
    ...     print("exit code", err.code)
    exit code 2
    """
    allowed = {"tasks", "episodes", "deterministic", "out", "test_tasks"}
    allowed |= {"switching_hazard", "horizon"}
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
    if "switching_hazard" in args or "horizon" in args or _all_switching(paths):
        _eval_switching(paths, args)
        return
    if len(paths) == 1 and ((paths[0] / "config.json").exists() or not paths[0].is_dir()):
        _eval_one(paths[0], args)
        return
    runs = _find_runs_or_exit(paths, "bamdp-eval")
    default_out = (paths[0] if len(paths) == 1 else Path(".")) / "meta_test_summary"
    _eval_many(runs, args, Path(args.get("out", default_out)))


def _all_switching(paths: list[Path]) -> bool:
    """Whether every run under ``paths`` was trained on a task-switching env."""
    from torchrl_bamdp.evaluation.report import find_runs

    try:
        runs = find_runs(paths)
    except FileNotFoundError:
        return False  # reported by the usual path
    try:
        hazards = [
            (read_config_file(run / "config.json").get("env") or {}).get("switching_hazard", 0.0)
            for run in runs
        ]
    except (ConfigError, AttributeError):
        return False  # an unreadable config: reported by the usual path
    return bool(hazards) and all(h for h in hazards)


def _eval_switching(paths: list[Path], args: dict[str, str]) -> None:
    """``bamdp-eval`` on the task-switching env: the return per 100 steps of every run (a
    switching run on its own env; a fixed-task run on ``switching_hazard`` / ``horizon``),
    written to ``switching_eval.json`` / ``.md`` (in the run directory for one run, else
    ``<out>`` / ``switching_eval`` in the folder given)."""
    from torchrl_bamdp.trainers import CheckpointError
    from torchrl_bamdp.trainers.runs import evaluate_run_switching
    from torchrl_bamdp.utils import write_result_json

    if "episodes" in args or "test_tasks" in args:
        print(
            "bamdp-eval: a switching meta-test is one rollout per task, in distribution: "
            f"episodes= and test_tasks= do not apply\n{EVAL_USAGE}",
            file=sys.stderr,
        )
        sys.exit(EXIT_BAD_INPUT)
    try:
        hazard = float(args["switching_hazard"]) if "switching_hazard" in args else None
        horizon = int(args["horizon"]) if "horizon" in args else None
    except ValueError:
        print(
            f"bamdp-eval: switching_hazard must be a number and horizon an integer (got "
            f"{args.get('switching_hazard')!r}, {args.get('horizon')!r})\n{EVAL_USAGE}",
            file=sys.stderr,
        )
        sys.exit(EXIT_BAD_INPUT)
    runs = _find_runs_or_exit(paths, "bamdp-eval")
    reports = []
    for run_dir in runs:
        try:
            reports.append(
                evaluate_run_switching(
                    run_dir,
                    hazard=hazard,
                    horizon=horizon,
                    tasks=int(args["tasks"]) if "tasks" in args else None,
                    deterministic=_deterministic_arg(args),
                )
            )
        except (CheckpointError, FileNotFoundError, ConfigError, ValueError) as err:
            print(f"bamdp-eval: {run_dir}: {err}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
    lines = [
        "| run | algo | seed | hazard | horizon | return per 100 steps (mean +- s.e. over tasks) |",
        "|---|---|---|---|---|---|",
    ]
    for r in reports:
        lines.append(
            f"| {r['run_dir']} | {r['algo']} | {r['seed']} | {r['hazard']} | {r['horizon']} | "
            f"{r['return_per_100']:.2f} +- {r['stderr_per_100']:.2f} |"
        )
    table = "\n".join(lines) + "\n"
    default = paths[0] / "switching_eval" if len(paths) == 1 else Path("switching_eval")
    out = Path(args.get("out", default))
    out.parent.mkdir(parents=True, exist_ok=True)
    write_result_json(out.with_suffix(".json"), {"runs": reports})
    out.with_suffix(".md").write_text(table)
    print(table, end="")
    print(f"bamdp-eval: wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


def _test_tasks_arg(args: dict[str, str]) -> list[str] | None:
    """``test_tasks=a,b`` as a list (``None`` when not given: each run's env.test_tasks)."""
    if "test_tasks" not in args:
        return None
    return [name.strip() for name in args["test_tasks"].split(",") if name.strip()]


def _deterministic_arg(args: dict[str, str]) -> bool | None:
    return None if "deterministic" not in args else args["deterministic"].lower() == "true"


def _wants_ood(run_dir: Path, test_tasks: list[str] | None) -> bool:
    if test_tasks is not None:
        return bool(test_tasks)
    config = read_config_file(run_dir / "config.json")
    return bool(((config.get("env") or {}).get("test_tasks")) or [])


def _in_distribution(record: dict[str, Any]) -> dict[str, Any]:
    """The in-distribution result of an OOD record, shaped like ``evaluate_run``'s report."""
    split = record["splits"][record["train_tasks"]]
    keys = ("run_dir", "env", "algo", "seed", "frames", "train_seconds")
    result = ("num_tasks", "episodes", "mean", "stderr", "total_mean")
    return {**{k: record[k] for k in keys}, **{k: split[k] for k in result}}


def _write_ood(records: list[dict[str, Any]], stem: Path) -> None:
    """One OOD report per (env, training distribution, split seed): JSON + Markdown."""
    from torchrl_bamdp.evaluation.report import ood_markdown, ood_report
    from torchrl_bamdp.utils import write_result_json

    groups: dict[tuple, list[dict[str, Any]]] = {}
    for record in records:
        key = (record["env"], record["train_tasks"], record["split_seed"])
        groups.setdefault(key, []).append(record)
    command = "bamdp-eval " + " ".join(sys.argv[1:]) if sys.argv[1:] else None
    for (env, train_tasks, split_seed), group in groups.items():
        suffix = "" if len(groups) == 1 else f"_{env}-{train_tasks}-split{split_seed}"
        out = stem.with_name(stem.name + suffix)
        report = ood_report(group, command=command)
        write_result_json(out.with_suffix(".json"), report)
        table = ood_markdown(report)
        out.with_suffix(".md").write_text(table)
        print(table, end="")
        print(f"bamdp-eval: wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


def _eval_many(runs: list[Path], args: dict[str, str], out: Path) -> None:
    from torchrl_bamdp.evaluation.report import aggregate, group_by_env, markdown_table
    from torchrl_bamdp.trainers import CheckpointError
    from torchrl_bamdp.trainers.runs import evaluate_run, evaluate_run_ood

    deterministic = _deterministic_arg(args)
    test_tasks = _test_tasks_arg(args)
    reports, records = [], []
    for run_dir in runs:
        kwargs = {
            "tasks": int(args["tasks"]) if "tasks" in args else None,
            "episodes": int(args["episodes"]) if "episodes" in args else None,
            "deterministic": deterministic,
        }
        try:
            if _wants_ood(run_dir, test_tasks):
                records.append(evaluate_run_ood(run_dir, test_tasks=test_tasks, **kwargs))
                reports.append(_in_distribution(records[-1]))
            else:
                reports.append(evaluate_run(run_dir, **kwargs))
        except (CheckpointError, FileNotFoundError, ConfigError, ValueError) as err:
            print(f"bamdp-eval: {run_dir}: {err}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
    groups = group_by_env(reports)
    try:
        by_env = {env: aggregate(group) for env, group in groups.items()}
    except ValueError as err:
        print(f"bamdp-eval: {err}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"runs": reports, "envs": by_env}
    out.with_suffix(".json").write_text(json.dumps(summary, indent=2))
    if len(by_env) == 1:
        table = markdown_table(next(iter(by_env.values())))
    else:  # one table per env family
        table = "\n".join(f"### {env}\n\n{markdown_table(agg)}" for env, agg in by_env.items())
    out.with_suffix(".md").write_text(table)
    print(table, end="")
    print(f"bamdp-eval: wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    if records:
        try:
            _write_ood(records, out.with_name(out.name + "_ood"))
        except ValueError as err:
            print(f"bamdp-eval: {err}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)


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

    test_tasks = _test_tasks_arg(args)
    if test_tasks is None:
        test_tasks = list(config.env.test_tasks)
    if test_tasks:
        from torchrl_bamdp.trainers.runs import evaluate_run_ood, ood_distributions

        try:  # before the run is opened: a misspelt name costs nothing
            ood_distributions(config, test_tasks)
        except ConfigError as err:
            print(f"bamdp-eval: {err}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)

        try:
            record = evaluate_run_ood(
                run_dir,
                test_tasks=test_tasks,
                tasks=tasks,
                episodes=episodes,
                deterministic=_deterministic_arg(args),
            )
        except (CheckpointError, FileNotFoundError, ConfigError, ValueError) as err:
            print(f"bamdp-eval: {err}", file=sys.stderr)
            sys.exit(EXIT_BAD_INPUT)
        split = _in_distribution(record)
        report = {"run_dir": str(run_dir), "frames": record["frames"]}
        report.update((k, split[k]) for k in ("num_tasks", "episodes", "mean", "stderr"))
        report["total_mean"] = split["total_mean"]
        _write_meta_test(run_dir, report)
        _write_ood([record], run_dir / "ood_report")
        return
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
    _write_meta_test(
        run_dir, {"run_dir": str(run_dir), "frames": trainer.frames, **result.to_dict()}
    )


def _write_meta_test(run_dir: Path, report: dict[str, Any]) -> None:
    """``meta_test.json`` and the per-episode ``meta_test.md`` table of one run."""
    (run_dir / "meta_test.json").write_text(json.dumps(report, indent=2))
    lines = ["| episode | return (mean +- s.e.) |", "|---|---|"]
    for k, (m, s) in enumerate(zip(report["mean"], report["stderr"], strict=True)):
        lines.append(f"| {k + 1} | {m:.3f} +- {s:.3f} |")
    (run_dir / "meta_test.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def plot_main(argv: list[str] | None = None) -> None:
    """Entry point of ``bamdp-plot``: the paper's figures from one run or many.

    Fig 4 (per-episode return of each algorithm, mean +- s.e. over seeds, from each run's latest
    evaluation; learning curves from ``eval.jsonl``) and, for a VariBAD GridNavi run, Fig 3a
    (belief heatmaps along a test rollout on the task with goal ``goal``, next to the exact
    posterior) and Fig 3b (latent mean and log-variance). PNG and PDF into ``out`` (default
    ``<run_dir>/figures``); runs of several env families get one subfolder ``out/<env>`` each.

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
        group_by_env,
        last_eval_report,
        write_figures,
    )
    from torchrl_bamdp.trainers.runs import open_run

    out = Path(args.get("out", (paths[0] if len(paths) == 1 else Path(".")) / "figures"))
    written = []
    try:
        groups = group_by_env([last_eval_report(run) for run in runs])
        for env, reports in groups.items():
            aggregated = aggregate(reports)
            config = open_run(reports[0]["run_dir"]).config
            episodes = len(next(iter(aggregated.values()))["mean"])
            # One folder of figures per env family when the runs span several.
            folder = out if len(groups) == 1 else out / env
            folder.mkdir(parents=True, exist_ok=True)
            optimal = bayes_optimal_returns(config, episodes)
            written += write_figures(
                aggregated, folder, optimal=optimal, rollout_goal=goal, open_run=open_run
            )
    except (ValueError, FileNotFoundError) as err:
        print(f"bamdp-plot: {err}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    for path in written:
        print(f"bamdp-plot: wrote {path}")
