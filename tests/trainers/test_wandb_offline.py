"""Weights & Biases offline logging: an offline run directory, and the same run id on resume."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from torchrl_bamdp.configs import load_config
from torchrl_bamdp.trainers import Trainer

pytest.importorskip("wandb")


@pytest.fixture
def wandb_env(tmp_path, monkeypatch):
    """Keep W&B offline, quiet and out of the home directory."""
    home = tmp_path / "wandb_home"
    home.mkdir()
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(home))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_RUN_ID", raising=False)
    monkeypatch.delenv("WANDB_RESUME", raising=False)
    yield


def config(total_frames: int, figures: bool = False):
    """A tiny W&B-offline run; figures only where a test checks them (they take seconds)."""
    return load_config(
        {
            "env": {"num_envs": 4},
            "logger": {"backend": "wandb", "mode": "offline", "project": "bamdp-tests"},
            "train": {
                "total_frames": total_frames,
                "eval_tasks": 21,
                "eval_interval": 1,
                "progress_bar": False,
                "figures": figures,
            },
        }
    )


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def test_wandb_offline_run_and_resume(tmp_path, wandb_env):
    run_dir = tmp_path / "run"
    result = Trainer(config(240), run_dir).train()
    assert result["frames"] == 240

    id_file = run_dir / "wandb_id.txt"
    assert id_file.is_file()
    run_id = id_file.read_text().strip()
    assert run_id
    runs = offline_runs(run_dir)
    assert len(runs) == 1, list((run_dir / "wandb").iterdir())
    assert runs[0].name.endswith(run_id)
    wandb_files = list(runs[0].glob("*.wandb"))
    assert len(wandb_files) == 1 and wandb_files[0].stat().st_size > 0
    assert wandb_files[0].name == f"run-{run_id}.wandb"
    data = wandb_files[0].read_bytes()
    for metric in (b"ppo/loss_objective", b"elbo/loss", b"eval/return_total"):
        assert metric in data, metric  # the metrics went to W&B, not only to the CSV
    # the CSV is written whatever the backend
    with (run_dir / "metrics.csv").open() as f:
        metrics = {row["metric"] for row in csv.DictReader(f)}
    assert {"ppo/loss_objective", "elbo/loss", "eval/return_total"} <= metrics

    # resume: the same W&B run id, the run continues
    result = Trainer(config(480), run_dir).train()
    assert result["frames"] == 480
    assert id_file.read_text().strip() == run_id
    runs = offline_runs(run_dir)
    assert runs, "no offline run after resume"
    for run in runs:
        # offline-run-<date>_<time>-<id>, with "-1", "-2"... when two start in the same second
        assert re.fullmatch(rf"offline-run-\d{{8}}_\d{{6}}-{run_id}(-\d+)?", run.name), run.name
        assert list(run.glob(f"run-{run_id}.wandb"))


def test_other_run_dirs_get_other_ids(tmp_path, wandb_env):
    Trainer(config(240), tmp_path / "a").train()
    Trainer(config(240), tmp_path / "b").train()
    ids = {(tmp_path / d / "wandb_id.txt").read_text().strip() for d in ("a", "b")}
    assert len(ids) == 2


def test_wandb_gets_figures_tables_name_and_group(tmp_path, wandb_env):
    run_dir = tmp_path / "run"
    Trainer(config(240, figures=True), run_dir).train()
    (run,) = offline_runs(run_dir)
    data = next(run.glob("*.wandb")).read_bytes()
    # the run's name and group encode env, algo and seed
    assert b"gridworld-varibad-seed0" in data and b"gridworld-varibad" in data
    # figures as W&B images, the per-episode evaluation as a W&B table
    for key in (
        b"figures/fig3a_belief_rollout",
        b"figures/fig4_learning_curves",
        b"eval/per_episode",
    ):
        assert key in data, key
    images = list((run / "files" / "media" / "images").rglob("*.png"))
    assert {p.name.split("_")[0] for p in images} >= {"fig3a", "fig3b", "fig4"}
    tables = list((run / "files" / "media" / "table").rglob("*.table.json"))
    assert tables
    table = json.loads(tables[-1].read_text())
    assert table["columns"] == ["episode", "mean", "stderr"] and len(table["data"]) == 4
    # the same figures are files of the run directory
    assert (run_dir / "figures" / "fig3a_belief_rollout.png").stat().st_size > 0
