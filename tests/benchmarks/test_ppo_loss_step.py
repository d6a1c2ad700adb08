"""Smoke test of the PPO-loss benchmark: both losses timed, and the same update from both.

Timings are not asserted (they depend on the machine and its load); the report's shape, and
that one PPO update with ClipPPOLoss and with TensorClipPPOLoss leaves identical parameters.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ppo_loss_step.py"


def test_benchmark_report(load_script, tmp_path):
    bench = load_script(SCRIPT)
    out = tmp_path / "results" / "ppo_loss_step.json"
    argv = ["--families", "gridworld", "--repeats", "1", "--num-envs", "8", "--out", str(out)]
    returned = bench.main(argv)

    report = json.loads(out.read_text())
    assert report["benchmark"] == "ppo_loss_step"
    result = report["measured"]["gridworld"]
    assert result["frames_per_batch"] == 8 * 60
    assert result["max_abs_param_diff_after_one_update"] == 0.0
    for part in ("ppo_update", "train_iteration"):
        assert set(result[part]["median_s"]) == set(bench.LOSSES)
        values = [*result[part]["median_s"].values(), result[part]["paired_ratio_clip_over_tensor"]]
        assert all(math.isfinite(v) and v > 0 for v in values)
    assert returned["measured"] == report["measured"]


def test_bad_repeats_is_refused(load_script, capsys):
    bench = load_script(SCRIPT)
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--repeats", "0"])
    assert exit_.value.code == 2
    assert "--repeats must be >= 1" in capsys.readouterr().err
