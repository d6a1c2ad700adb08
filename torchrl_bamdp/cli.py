"""Console scripts: ``bamdp-train`` (Hydra) and ``bamdp-eval``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from torchrl_bamdp.configs.schema import Config, ConfigError, load_config

CONFIG_DIR = str(Path(__file__).parent / "configs")

#: Exit codes of the console scripts besides 0: bad input (configuration, arguments, checkpoint)
#: and a run stopped by NaN/inf (``train.on_nonfinite``).
EXIT_BAD_INPUT = 2
EXIT_NONFINITE = 3


def default_run_dir(config: Config) -> Path:
    """``runs/<env>-<algo>-seed<seed>-<YYYYmmdd-HHMMSS>`` under the working directory."""
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


def _read_saved_config(path: Path) -> dict[str, Any]:
    """The ``config.json`` of a run directory, or a :class:`ConfigError` saying what is wrong."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path} is unreadable or not JSON ({err})") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path} holds a {type(data).__name__}, not a config mapping")
    return data


def resolve_run(data: dict[str, Any], overrides: list[str]) -> tuple[Config, Path]:
    """Turn a composed config into a validated config and its run directory.

    With ``resume=<run_dir>`` the run's saved ``config.json`` is the base and only the
    command-line overrides are applied on top (e.g. a larger ``train.total_frames``).
    """
    resume = data.get("resume")
    if resume:
        run_dir = Path(resume)
        saved = run_dir / "config.json"
        if not saved.exists():
            raise ConfigError(f"resume={resume!r}: no config.json there; is it a run directory?")
        base = _read_saved_config(saved)
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
    """Entry point of ``bamdp-train`` (Hydra: ``bamdp-train env=gridworld algo=varibad``)."""
    import hydra

    hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="config")(_train)()


EVAL_USAGE = (
    "usage: bamdp-eval run_dir=<run directory> [tasks=210] [episodes=<k>] [deterministic=true]"
)


def eval_main(argv: list[str] | None = None) -> None:
    """Entry point of ``bamdp-eval``: meta-test a trained run, write JSON and Markdown.

    The run is opened read-only: its config, metrics and logger are left untouched; only
    ``meta_test.json`` and ``meta_test.md`` are written into the run directory.
    """
    args = dict(a.partition("=")[::2] for a in (sys.argv[1:] if argv is None else argv))
    allowed = {"run_dir", "tasks", "episodes", "deterministic"}
    unknown = set(args) - allowed
    if unknown or "run_dir" not in args:
        print(
            f"bamdp-eval: unknown or missing arguments {sorted(unknown)}\n{EVAL_USAGE}",
            file=sys.stderr,
        )
        sys.exit(EXIT_BAD_INPUT)
    run_dir = Path(args["run_dir"])
    if not (run_dir / "config.json").exists():
        print(f"bamdp-eval: run_dir={run_dir} holds no config.json", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    overrides = {"train": {"progress_bar": False}}
    if "deterministic" in args:
        overrides["train"]["eval_deterministic"] = args["deterministic"].lower() == "true"
    try:
        base = _read_saved_config(run_dir / "config.json")
        train = base.setdefault("train", {})
        if isinstance(train, dict):  # otherwise load_config names the problem
            train.update(overrides["train"])
        config = load_config(base)
    except ConfigError as err:
        print(f"bamdp-eval: {run_dir}/config.json is invalid: {err}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    try:
        tasks = int(args.get("tasks", config.train.eval_tasks))
        episodes = int(
            args.get("episodes", config.train.eval_episodes or config.env.episodes_per_task)
        )
        if tasks < 1 or episodes < 1:
            raise ValueError
    except ValueError:
        print(
            f"bamdp-eval: tasks and episodes must be positive integers (got "
            f"tasks={args.get('tasks')!r}, episodes={args.get('episodes')!r})\n{EVAL_USAGE}",
            file=sys.stderr,
        )
        sys.exit(EXIT_BAD_INPUT)
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
