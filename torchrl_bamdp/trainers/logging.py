"""Metrics logging: an append-only CSV always, Weights & Biases through TorchRL when asked."""

from __future__ import annotations

import csv
import uuid
from pathlib import Path

from torchrl_bamdp.configs.schema import Config, config_to_dict

CSV_HEADER = ("iteration", "frames", "metric", "value")


class MetricsLogger:
    """Log scalar metrics to ``<run_dir>/metrics.csv`` and, optionally, to W&B.

    The CSV is long-format (``iteration, frames, metric, value``), flushed on every row, so a
    killed run keeps everything up to its last iteration; :meth:`truncate_after` drops rows
    newer than the checkpoint a resumed run restarts from, so no iteration is logged twice.
    With ``logger.backend=wandb`` metrics also go to a ``torchrl.record.loggers.WandbLogger``
    (offline unless ``logger.mode=online``) whose run id is kept in the run directory, so a
    resumed run continues the same W&B run.

    Parameters
    ----------
    run_dir : Path
        The run directory.
    config : Config
        The run config (logged as W&B config; names the run and its group).

    Examples
    --------
    >>> import tempfile
    >>> from torchrl_bamdp.configs import load_config
    >>> log = MetricsLogger(Path(tempfile.mkdtemp()), load_config({}))
    >>> log.log({"ppo/loss": 1.5}, step=960, iteration=1)
    >>> log.read()[0]["metric"]
    'ppo/loss'
    """

    def __init__(self, run_dir: Path, config: Config) -> None:
        self.run_dir = Path(run_dir)
        self.csv_path = self.run_dir / "metrics.csv"
        if not self.csv_path.exists():
            with self.csv_path.open("w", newline="") as f:
                csv.writer(f).writerow(CSV_HEADER)
        self.wandb = None
        if config.logger.backend == "wandb":
            self.wandb = self._make_wandb(config)

    def _make_wandb(self, config: Config):
        from torchrl.record.loggers import WandbLogger

        id_file = self.run_dir / "wandb_id.txt"
        if not id_file.exists():
            id_file.write_text(uuid.uuid4().hex[:12])
        run_id = id_file.read_text().strip()
        name = f"{config.env.name}-{config.algo.name}-seed{config.seed}"
        group = config.logger.group or f"{config.env.name}-{config.algo.name}"
        kwargs = {"group": group, "config": config_to_dict(config)}
        if config.logger.mode == "disabled":
            kwargs["mode"] = "disabled"
        logger = WandbLogger(
            exp_name=name,
            offline=config.logger.mode != "online",
            save_dir=str(self.run_dir),
            id=run_id,
            project=config.logger.project,
            log_env_packages=False,
            **kwargs,
        )
        return logger

    def log(self, metrics: dict[str, float], step: int, iteration: int) -> None:
        """Write one iteration's metrics (``step`` = frames collected so far)."""
        with self.csv_path.open("a", newline="") as f:
            writer = csv.writer(f)
            for name, value in metrics.items():
                writer.writerow((iteration, step, name, float(value)))
        if self.wandb is not None:
            for name, value in metrics.items():
                self.wandb.log_scalar(name, float(value), step=step)

    def read(self) -> list[dict]:
        """All rows of the CSV as dicts (numbers parsed)."""
        with self.csv_path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        for row in rows:
            row["iteration"] = int(row["iteration"])
            row["frames"] = int(row["frames"])
            row["value"] = float(row["value"])
        return rows

    def truncate_after(self, iteration: int) -> None:
        """Drop rows of iterations after ``iteration`` (those a resumed run will redo)."""
        rows = [r for r in self.read() if r["iteration"] <= iteration]
        tmp = self.csv_path.with_suffix(".tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_HEADER)
            for r in rows:
                writer.writerow((r["iteration"], r["frames"], r["metric"], r["value"]))
        tmp.replace(self.csv_path)

    def close(self) -> None:
        if self.wandb is not None:
            import wandb

            if wandb.run is not None:
                wandb.finish()
            self.wandb = None
