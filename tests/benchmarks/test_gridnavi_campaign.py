"""The GridNavi campaign script (issue 17): its summary of the committed runs, one tiny run end to
end, its skip of finished runs and its continuation of a run that stopped short of its budget."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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
