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
