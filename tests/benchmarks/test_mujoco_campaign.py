"""The MuJoCo Figure-4 campaign script: normalised scores by hand, one tiny campaign end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "mujoco_campaign.py"
TINY = ["env.num_envs=4", "env.episode_length=8", "train.eval_tasks=4", "algo.ppo.minibatches=2"]


@pytest.fixture(scope="module")
def campaign(load_script):
    return load_script(SCRIPT)


def _record(algo, seed, mean, frames=100):
    return {
        "benchmark": "mujoco_campaign",
        "algo": algo,
        "seed": seed,
        "mean": mean,
        "frames": frames,
        "train_seconds": 60.0,
        "num_tasks": 64,
        "config": {"env": {"episodes_per_task": 2}},
    }


def test_normalised_scores_against_random_and_oracle(campaign):
    records = [
        _record("random", 0, [-300.0, -310.0]),
        _record("random", 1, [-320.0, -290.0]),  # seed mean [-310, -300]
        _record("oracle", 0, [-90.0, -100.0]),
        _record("oracle", 1, [-110.0, -100.0]),  # seed mean [-100, -100]
        _record("varibad", 0, [-142.0, -120.0]),
        _record("varibad", 1, [-121.0, -160.0]),
    ]
    out = campaign.family_summary(records)
    assert out["rollouts"] == 2 and out["test_tasks"] == [64] and out["trained_rollouts"] == [2]
    varibad = out["algorithms"]["varibad"]
    # Rollout 1: (-142 + 310) / 210 = 0.8, (-121 + 310) / 210 = 0.9; rollout 2: 0.9 and 0.7.
    assert varibad["normalized_mean"] == pytest.approx([0.85, 0.8])
    assert varibad["normalized_stderr"] == pytest.approx([0.05, 0.1])
    assert varibad["mean"] == pytest.approx([-131.5, -140.0])
    assert varibad["stderr"] == pytest.approx([10.5, 20.0])
    assert out["algorithms"]["random"]["normalized_mean"] == pytest.approx([0.0, 0.0])
    assert out["algorithms"]["oracle"]["normalized_mean"] == pytest.approx([1.0, 1.0])
    # Algorithms in the campaign's order, whatever the records' order.
    assert list(out["algorithms"]) == ["varibad", "oracle", "random"]

    targets = campaign.targets({"cheetah_vel": out})
    assert targets["cheetah_vel"] == {
        "varibad_rollout1_score": pytest.approx(0.85),
        "score_met": True,
        "adapts": False,  # rollout 2 (-140) below rollout 1 (-131.5)
    }


def test_no_normalised_score_without_both_references(campaign):
    out = campaign.family_summary([_record("varibad", 0, [-1.0]), _record("random", 0, [-2.0])])
    assert out["algorithms"]["varibad"]["normalized_mean"] is None
    assert math.isnan(out["algorithms"]["varibad"]["stderr"][0])  # one seed: no s.e.
    assert campaign.targets({"cheetah_vel": out}) == {}


def test_tiny_campaign_trains_tests_summarises_and_skips_finished_runs(campaign, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{campaign.README_BEGIN}\nold\n{campaign.README_END}\noutro\n")
    args = ["--families", "cheetah_vel", "--algos", "varibad", "oracle", "random"]
    args += ["--original-on", "--seeds", "0", "--frames", "64", "--test-tasks", "4"]
    args += ["--rollouts", "3", "--eval-frames", "32", "--runs-root", str(tmp_path / "runs")]
    args += ["--out-dir", str(tmp_path / "out"), "--readme", str(readme), "--override", *TINY]
    report = campaign.main(args)

    family = report["families"]["cheetah_vel"]
    assert list(family["algorithms"]) == ["varibad", "oracle", "random"]
    assert family["rollouts"] == 3 and family["test_tasks"] == [4]
    out = tmp_path / "out" / "cheetah_vel"
    record = json.loads((out / "varibad_seed0.json").read_text())
    assert record["frames"] == 64 and record["num_tasks"] == 4 and len(record["mean"]) == 3
    assert record["overrides"][:3] == ["env=cheetah_vel", "algo=varibad", "seed=0"]
    assert record["learning_curve"], "meta-tested during training every --eval-frames"
    # The code that trained it, per session, and this process's (read once, not at the end).
    assert record["trained_commits"] == [record["commit"]]
    assert json.loads((out / "random_seed0.json").read_text())["frames"] == 0  # not trained
    for name in ("fig4_per_episode.png", "fig4_learning_curves.png"):
        assert (out / name).stat().st_size > 0
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "old" not in text
    assert "| VariBAD |" in text and "Oracle (privileged" in text
    assert (tmp_path / "out" / "summary.md").read_text() in text

    mtime = (out / "varibad_seed0.json").stat().st_mtime
    campaign.main(args)  # finished runs are skipped, not retrained
    assert (out / "varibad_seed0.json").stat().st_mtime == mtime
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert not math.isnan(summary["families"]["cheetah_vel"]["algorithms"]["varibad"]["mean"][0])


def test_bad_arguments_are_refused_before_training(campaign, tmp_path, capsys):
    with pytest.raises(SystemExit):
        campaign.main(["--frames", "0", "--runs-root", str(tmp_path)])
    assert "--frames must be >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        campaign.main(["--jobs", "0", "--runs-root", str(tmp_path)])
    assert "argument --jobs: must be >= 1 (got 0)" in capsys.readouterr().err
    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    with pytest.raises(SystemExit):
        campaign.main(["--readme", str(readme), "--runs-root", str(tmp_path)])
    assert "no block between" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        campaign.main(["--families", "ant_dir"])
    assert "invalid choice" in capsys.readouterr().err
    assert not (tmp_path / "cheetah_dir").exists()  # nothing was trained


def test_jobs_train_each_run_in_its_own_process_and_summarise_once(campaign, tmp_path):
    args = ["--families", "cheetah_vel", "--algos", "oracle", "random", "--original-on"]
    args += ["--seeds", "0", "--frames", "32", "--test-tasks", "4", "--rollouts", "2"]
    args += ["--eval-frames", "32", "--runs-root", str(tmp_path / "runs")]
    args += ["--out-dir", str(tmp_path / "out"), "--jobs", "2", "--override", *TINY]
    report = campaign.main(args)

    assert list(report["families"]["cheetah_vel"]["algorithms"]) == ["oracle", "random"]
    out = tmp_path / "out" / "cheetah_vel"
    oracle = json.loads((out / "oracle_seed0.json").read_text())
    assert oracle["frames"] == 64 and oracle["num_tasks"] == 4  # one batch; --override reached it
    assert oracle["overrides"] == ["env=cheetah_vel", "algo=oracle", "seed=0", *TINY]
    for algo in ("oracle", "random"):  # each child's output in its own log beside its run
        assert (
            f"train cheetah_vel {algo} seed 0"
            in (tmp_path / "runs" / "cheetah_vel" / algo / "seed0.log").read_text()
        )
    # The children wrote no summary of their own; the parent wrote one of both runs.
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert list(summary["families"]["cheetah_vel"]["algorithms"]) == ["oracle", "random"]

    mtime = (out / "oracle_seed0.json").stat().st_mtime
    assert campaign.pending_runs(campaign.parse_args(args)) == []  # finished: nothing to start
    campaign.main(args)
    assert (out / "oracle_seed0.json").stat().st_mtime == mtime


def test_a_failed_child_fails_the_campaign_after_the_summary(campaign, tmp_path):
    args = ["--families", "cheetah_vel", "--algos", "oracle", "--original-on", "--seeds", "0"]
    args += ["--frames", "32", "--runs-root", str(tmp_path / "runs"), "--jobs", "2"]
    args += ["--out-dir", str(tmp_path / "out"), "--override", "algo.ppo.lr=-1"]
    with pytest.raises(SystemExit, match="1 runs failed"):
        campaign.main(args)
    log = (tmp_path / "runs" / "cheetah_vel" / "oracle" / "seed0.log").read_text()
    assert "algo.ppo.lr" in log  # the child's own error, in its log
