"""Smoke test of the collector backends benchmark: it runs, counts frames, writes its JSON.

Slow (it starts the MuJoCo worker pool and two TorchRL worker processes); timings are not
asserted, only the report's shape and frame counts.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "collector_backends.py"


@pytest.mark.slow
def test_benchmark_report(load_script, tmp_path):
    bench = load_script(SCRIPT)
    out = tmp_path / "backends.json"
    argv = ["--num-envs", "2", "--episode-length", "2", "--repeats", "1", "--out", str(out)]
    returned = bench.main(argv)
    report = json.loads(out.read_text())
    assert report["benchmark"] == "collector_backends" and report["config"]["workers"] == 2
    assert list(report["results"]) == ["single", "mujoco_pool", "torchrl_process"]
    for res in report["results"].values():
        assert res["frames_per_run"] == 2 * 2 * 2  # one batch: 2 envs x one 4-step task
        assert res["frames_per_s"] > 0 and res["startup_s"] > 0
    assert report["results"]["single"]["ratio_to_single"] == 1.0
    assert returned["frames_per_s"] == report["frames_per_s"]
