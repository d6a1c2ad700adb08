"""``cli.train_to_budget``: the campaigns' start-or-continue step."""

from __future__ import annotations

import json

from torchrl_bamdp.cli import train_to_budget

# Two batches of 240 frames (4 envs x 60 steps) of the cheapest trained agent.
OVERRIDES = ["algo=oracle", "env.num_envs=4", "train.eval_tasks=21", "seed=3"]


def test_a_run_stopped_by_time_continues_with_its_own_settings(tmp_path, capsys):
    run_dir = tmp_path / "run"
    # A bound shorter than one batch: the trainer stops after its first batch.
    assert train_to_budget(run_dir, OVERRIDES, 480, 1e-6, 240, label="oracle seed 3") is None
    out = capsys.readouterr().out
    assert "train oracle seed 3: " in out and "stopped at 240 frames (time)" in out
    # Continued: the saved run's settings win over the (different) overrides of a new run.
    config, result = train_to_budget(run_dir, [*OVERRIDES[:1], "env.num_envs=8"], 480, 5.0, 480)
    assert result["frames"] == 480 and result["train_seconds"] > 0
    assert config.env.num_envs == 4 and config.seed == 3 and config.resume == str(run_dir)
    assert config.train.eval_interval == 2  # 480 frames between meta-tests = 2 batches
    sessions = json.loads((run_dir / "run_info.json").read_text())
    assert len(sessions) == 2


def test_the_marker_skips_a_finished_run(tmp_path):
    run_dir = tmp_path / "run"
    config, result = train_to_budget(run_dir, OVERRIDES, 240, 5.0, 240, marker="done.json")
    marker = json.loads((run_dir / "done.json").read_text())
    assert marker == {"frames": 240, "train_seconds": result["train_seconds"]}
    # The second call reads the marker and the saved config; no third training session.
    again_config, again = train_to_budget(run_dir, OVERRIDES, 240, 5.0, 240, marker="done.json")
    assert again == marker and again_config.env.num_envs == config.env.num_envs == 4
    assert len(json.loads((run_dir / "run_info.json").read_text())) == 1
