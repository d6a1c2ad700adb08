"""The OOD campaign script: its summary of the committed runs, and one tiny run end to end."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

from torchrl_bamdp.evaluation.report import check_ood_report

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "ood_campaign.py"
RESULTS = ROOT / "benchmarks" / "results" / "ood"


def _campaign():
    spec = importlib.util.spec_from_file_location("ood_campaign", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_summary_of_the_committed_runs_is_a_valid_ood_report(tmp_path):
    runs = sorted(RESULTS.glob("*_seed*.json"))
    assert runs, "benchmarks/results/ood holds no finished run"
    for path in runs:
        shutil.copy(path, tmp_path)
    report = _campaign().main(["--summary", "--out-dir", str(tmp_path)])
    check_ood_report(report)
    assert list(report["distributions"]) == ["heldout_train", "heldout_test"]
    assert report["episodes"] == 6 and report["trained_episodes"] == 4
    check_ood_report(json.loads((tmp_path / "summary.json").read_text()))
    assert "Bayes-optimal `heldout_test`" in (tmp_path / "summary.md").read_text()
    # The committed summary is the one these runs give.
    committed = json.loads((RESULTS / "summary.json").read_text())
    assert committed["algorithms"].keys() == report["algorithms"].keys()


def test_one_run_trains_evaluates_and_is_skipped_when_done(tmp_path):
    campaign = _campaign()
    args = ["--algos", "belief_oracle", "--seeds", "0", "--frames", "3840"]
    args += ["--runs-root", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out")]
    report = campaign.main(args)
    check_ood_report(report)
    record = json.loads((tmp_path / "out" / "belief_oracle_seed0.json").read_text())
    assert record["frames"] == 3840 and record["episodes"] == 6
    assert record["splits"]["heldout_test"]["num_tasks"] == 80
    mtime = (tmp_path / "out" / "belief_oracle_seed0.json").stat().st_mtime
    campaign.main(args)  # finished runs are skipped
    assert (tmp_path / "out" / "belief_oracle_seed0.json").stat().st_mtime == mtime


# -- HalfCheetahVel extrapolation (--family cheetah_vel) ---------------------------------------
def test_cheetah_vel_overrides_compose_its_split_and_algorithms():
    from torchrl_bamdp.cli import compose_config

    campaign = _campaign()
    family = campaign.FAMILIES["cheetah_vel"]
    assert family.algorithms == ("varibad", "rl2", "oracle", "random")
    assert (family.episodes, family.tasks, family.frames) == (5, 64, 1_000_000)
    for algo in family.algorithms:
        config = compose_config([f"algo={algo}", *family.split, "seed=1"])
        assert config.algo.name == algo and config.seed == 1
        assert config.env.name == "cheetah_vel" and config.env.episodes_per_task == 2
        assert config.env.train_tasks == "extrapolation_train"
        assert list(config.env.test_tasks) == ["extrapolation_test"]
        assert config.env.family.disjoint("extrapolation_train", "extrapolation_test")
        # The shipped cheetah_vel settings (configs/tuning/cheetah_vel.yaml).
        assert (config.algo.ppo.epochs, config.algo.ppo.minibatches) == (10, 16)
        assert config.algo.ppo.lr == 3e-4
    # GridNavi keeps its own campaign.
    gridworld = campaign.FAMILIES["gridworld"]
    assert gridworld.algorithms == ("varibad", "rl2", "belief_oracle")
    assert (gridworld.episodes, gridworld.tasks, gridworld.frames) == (6, 80, 2_000_000)
    assert gridworld.out_dir == "benchmarks/results/ood"


def test_cheetah_vel_refuses_an_algorithm_of_another_family(tmp_path, capsys):
    import pytest

    with pytest.raises(SystemExit):
        _campaign().main(["--family", "cheetah_vel", "--algos", "belief_oracle"])
    err = capsys.readouterr().err
    assert "--algos belief_oracle" in err and "varibad, rl2, oracle, random" in err


def test_one_cheetah_vel_run_trains_is_tested_in_and_out_of_distribution(tmp_path):
    campaign = _campaign()
    family = campaign.FAMILIES["cheetah_vel"]
    # A tiny version of the family: 2 envs (one batch = 800 frames), 2 test tasks.
    campaign.FAMILIES["cheetah_vel"] = family._replace(
        split=(*family.split, "env.num_envs=2", "train.eval_tasks=2"), tasks=2
    )
    args = ["--family", "cheetah_vel", "--algos", "oracle", "random", "--seeds", "0"]
    args += ["--frames", "800", "--runs-root", str(tmp_path / "runs")]
    args += ["--out-dir", str(tmp_path / "out")]
    report = campaign.main(args)
    check_ood_report(report)
    assert list(report["distributions"]) == ["extrapolation_train", "extrapolation_test"]
    assert report["distributions"]["extrapolation_test"]["disjoint_from_train"]
    assert all(d["bayes_optimal"] is None for d in report["distributions"].values())
    assert report["episodes"] == 5 and report["trained_episodes"] == 2
    assert any("no exact Bayes-optimal reference" in n for n in report["notes"])
    oracle = report["algorithms"]["oracle"]
    assert oracle["label"].startswith("Oracle (privileged")
    assert oracle["privileged"] == ["the true task (oracle)"]
    assert report["algorithms"]["random"]["frames"] == [0]  # the floor is not trained
    record = json.loads((tmp_path / "out" / "oracle_seed0.json").read_text())
    assert record["frames"] == 800 and record["episodes"] == 5
    for split in record["splits"].values():
        assert split["num_tasks"] == 2 and len(split["mean"]) == 5
    markdown = (tmp_path / "out" / "summary.md").read_text()
    assert "Oracle (privileged" in markdown and "Bayes-optimal `" not in markdown
    mtime = (tmp_path / "out" / "oracle_seed0.json").stat().st_mtime
    campaign.main(args)  # finished runs are skipped
    assert (tmp_path / "out" / "oracle_seed0.json").stat().st_mtime == mtime
