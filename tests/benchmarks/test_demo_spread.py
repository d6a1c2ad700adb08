"""The demo's reference spread: the benchmark trains the demo's config per seed, resumes, and
the demo prints the committed spread under its own result."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from torchrl_bamdp.demo import SPREAD_FILE, demo_config, demo_config_record, reference_lines

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "demo_spread.py"


def test_spread_of_two_tiny_seeds_and_resume(tmp_path, load_script, capsys):
    module = load_script(SCRIPT)
    frames = demo_config(1, 0).frames_per_batch  # one batch
    args = ["--seeds", "0", "1", "--frames", str(frames), "--runs-dir", str(tmp_path / "runs")]
    out = tmp_path / "spread.json"
    report = module.main([*args, "--out", str(out)])
    assert json.loads(out.read_text())["per_seed"] == report["per_seed"]
    assert [r["seed"] for r in report["per_seed"]] == [0, 1]
    assert all(r["frames"] == frames and len(r["mean"]) == 4 for r in report["per_seed"])
    stats = report["per_episode"]
    for k in range(4):
        values = [r["mean"][k] for r in report["per_seed"]]
        assert stats["min"][k] == min(values) and stats["max"][k] == max(values)
    assert report["bayes_optimal"][0] == pytest.approx(4.0)
    assert report["machine"]["cpus"] >= 1 and report["machine"]["versions"]["torch"]
    assert str(tmp_path) not in out.read_text()  # portable paths only
    assert report["config"] == demo_config_record(frames)  # what the seeds trained
    # each seed is the demo itself, with its own run directory and printed reference
    log = (tmp_path / "runs" / "seed0" / "demo.log").read_text()
    assert "Bayes-optimal (exact DP)" in log and reference_lines()[0] in log

    # a second call trains nothing and gives the same numbers
    capsys.readouterr()
    again = module.main([*args, "--out", str(out)])
    printed = capsys.readouterr().out
    assert "seed 0: finished before, kept" in printed and "started" not in printed
    assert again["per_seed"] == report["per_seed"]


def test_the_committed_spread_is_the_demo_config():
    """The reference make demo prints was trained with the demo's current config: a change of
    the defaults fails here until benchmarks/demo_spread.py is rerun."""
    spread = json.loads(SPREAD_FILE.read_text())
    assert spread["frames"] == 3_000_000 and len(spread["seeds"]) >= 5
    assert spread["config"] == demo_config_record(spread["frames"])
    lines = reference_lines()
    assert lines[0].startswith(f"Reference: {len(spread['seeds'])} seeds")
    assert len(lines) == 7 and not any("WARNING" in line for line in lines)
    for run in spread["per_seed"]:
        for k, value in enumerate(run["mean"]):
            assert spread["per_episode"]["min"][k] <= value <= spread["per_episode"]["max"][k]


def test_a_reference_of_another_config_is_flagged(tmp_path):
    spread = json.loads(SPREAD_FILE.read_text())
    path = tmp_path / "spread.json"
    spread["config"] = {**demo_config_record(spread["frames"]), "env.bamdp_end": "truncated"}
    path.write_text(json.dumps(spread))
    warning = reference_lines(path)[-1]
    assert warning.startswith("WARNING: this reference was trained with another config")
    assert "env.bamdp_end: 'truncated' -> 'terminated'" in warning
    del spread["config"]
    path.write_text(json.dumps(spread))
    assert "records no config" in reference_lines(path)[-1]
