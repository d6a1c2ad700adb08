"""The GridNavi campaign script (issue 17): its summary of the committed runs, one tiny run end to
end, its skip of finished runs and its continuation of a run that stopped short of its budget."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gridnavi_campaign.py"
RESULTS = ROOT / "benchmarks" / "results" / "gridnavi_campaign"
BAYES = [4.0, 11.071, 11.071, 11.071]


def test_summary_of_the_committed_runs_matches_the_committed_summary(tmp_path, load_script):
    runs = sorted(RESULTS.glob("*_seed*.json"))
    assert runs, "benchmarks/results/gridnavi_campaign holds no finished run"
    for path in runs:
        shutil.copy(path, tmp_path)
    report = load_script(SCRIPT).main(["--summary", "--out-dir", str(tmp_path)])
    assert [round(b, 3) for b in report["bayes_optimal"]] == BAYES
    committed = json.loads((RESULTS / "summary.json").read_text())
    assert report["variants"].keys() == committed["variants"].keys()
    for variant, row in report["variants"].items():
        assert row["seeds"] == committed["variants"][variant]["seeds"], variant
        assert row["within_1pct"] == committed["variants"][variant]["within_1pct"], variant


def test_one_run_trains_is_skipped_when_done_and_continues_to_a_larger_budget(
    tmp_path, load_script
):
    campaign = load_script(SCRIPT)
    runs = ["--runs-root", str(tmp_path / "runs")]
    args = ["--variants", "varibad", "--seeds", "3", "--frames", "3840", *runs]
    report = campaign.main([*args, "--out-dir", str(tmp_path / "out")])
    out = tmp_path / "out" / "varibad_seed3.json"
    record = json.loads(out.read_text())
    assert record["frames"] == 3840 and record["seed"] == 3
    assert record["overrides"] == campaign.VARIANTS["varibad"]
    assert record["eval_tasks"] == 210 and len(record["mean"]) == 4
    assert [round(b, 3) for b in record["bayes_optimal"]] == BAYES
    ratios = [m / b for m, b in zip(record["mean"], record["bayes_optimal"], strict=True)]
    assert record["ratio_to_bayes_optimal"] == ratios
    assert record["within_1pct_every_episode"] == all(r >= 0.99 for r in ratios)
    # the variant's overrides reached the run: no privileged critic, the latent belief as input
    assert record["config"]["algo"]["ppo"]["critic_task"] is False
    assert record["config"]["algo"]["policy_belief"] == "latent"
    assert report["variants"]["varibad"]["seeds"] == [3]

    mtime = out.stat().st_mtime
    campaign.main([*args, "--out-dir", str(tmp_path / "out")])  # finished: skipped
    assert out.stat().st_mtime == mtime

    # A larger budget continues the same run directory (its checkpoint), not a new run.
    bigger = ["--variants", "varibad", "--seeds", "3", "--frames", "7680", *runs]
    campaign.main([*bigger, "--out-dir", str(tmp_path / "out2")])
    continued = json.loads((tmp_path / "out2" / "varibad_seed3.json").read_text())
    assert continued["frames"] == 7680
    first_curve = record["learning_curve"]
    assert first_curve and continued["learning_curve"][: len(first_curve)] == first_curve
    starts = json.loads((tmp_path / "runs" / "varibad" / "seed3" / "run_info.json").read_text())
    assert len(starts) == 2, starts  # one record per start of the run: trained, then resumed


def test_best_evaluated_takes_the_largest_total_and_the_later_of_a_tie(load_script):
    campaign = load_script(SCRIPT)
    curve = [
        {"frames": 100, "mean": [4.0, 11.0, 11.0, 11.0]},  # total 37.0
        {"frames": 200, "mean": [4.0, 11.5, 11.0, 10.5]},  # 37.0 again: the later one wins
        {"frames": 300, "mean": [3.0, 10.0, 10.0, 10.0]},  # the last, worse
    ]
    best = campaign.best_evaluated({"learning_curve": curve, "bayes_optimal": BAYES})
    assert best["frames"] == 200 and best["mean"] == curve[1]["mean"]
    assert best["within_1pct_every_episode"] is False  # 10.5 < 0.99 x 11.071
    curve[1]["mean"] = [4.0, 11.071, 11.071, 10.97]  # >= 0.99 x 11.0714 = 10.9607
    best = campaign.best_evaluated({"learning_curve": curve, "bayes_optimal": BAYES})
    assert best["frames"] == 200 and best["within_1pct_every_episode"] is True


def test_keep_best_variant_ends_with_the_learning_curves_best_policy(
    tmp_path, load_script, monkeypatch
):
    """On GridNavi the validation score is the test score (same 21 goals, greedy, deterministic)
    and validation does not change training: the keep_best run ends with exactly the policy the
    summary reads off the learning curve of a run without it."""
    campaign = load_script(SCRIPT)
    monkeypatch.setattr(campaign, "EVAL_FRAMES", 960)  # a meta-test after every batch
    variant, plain = "varibad+extras_terminated+keep_best", "varibad+extras_terminated"
    base = {name: list(campaign.VARIANTS[name]) for name in (variant, plain)}
    # 16 envs and a large learning rate, so that the best of 5 policies is not the last. Which
    # (lr, seed) does that depends on the CPU's floating-point kernels (on an AMD EPYC every
    # evaluation of lr 0.03 seed 2 tied, on the machine the test was written on its first policy
    # was the best): the first candidate whose curve has a best before the end is used.
    for lr, seed in [("0.03", "2"), ("0.003", "3"), ("0.003", "0"), ("0.01", "3")]:
        for name in (variant, plain):
            extra = [f"algo.ppo.lr={lr}", "env.num_envs=16"]
            monkeypatch.setitem(campaign.VARIANTS, name, [*base[name], *extra])
        common = ["--seeds", seed, "--frames", "4800", "--runs-root", str(tmp_path / lr / "runs")]
        out = tmp_path / lr / "out"
        campaign.main(["--variants", variant, *common, "--out-dir", str(out)])
        record = json.loads((out / f"{variant}_seed{seed}.json").read_text())
        best = campaign.best_evaluated(record)
        if best["frames"] < record["frames"]:  # the selection is not the last policy
            break
    else:
        pytest.fail("no candidate run had its best evaluated policy before the last one")
    assert record["config"]["train"]["keep_best"] is True
    assert len(record["learning_curve"]) == 5
    assert record["selected"]["frames"] == best["frames"]
    assert [round(m, 3) for m in record["mean"]] == best["mean"]  # the curve holds 3 decimals
    campaign.main(["--variants", plain, *common, "--out-dir", str(out)])
    other = json.loads((out / f"{plain}_seed{seed}.json").read_text())
    assert other["learning_curve"] == record["learning_curve"]  # the same training
    assert other["selected"] is None
    assert other["mean"] != record["mean"]  # without keep_best: the last, worse policy


def test_jobs_run_each_run_in_a_child_process(tmp_path, load_script):
    campaign = load_script(SCRIPT)
    args = ["--variants", "varibad", "--seeds", "3", "--frames", "3840", "--jobs", "2"]
    args += ["--runs-root", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out")]
    report = campaign.main(args)
    record = json.loads((tmp_path / "out" / "varibad_seed3.json").read_text())
    assert record["frames"] == 3840 and record["overrides"] == campaign.VARIANTS["varibad"]
    assert report["variants"]["varibad"]["seeds"] == [3]  # summarised once, by the parent
    assert "train varibad seed 3" in (tmp_path / "runs" / "varibad" / "seed3.log").read_text()
