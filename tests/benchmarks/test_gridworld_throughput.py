"""Smoke test of the GridNavi throughput benchmark: it runs, counts frames right, writes JSON.

Timings are not asserted (they depend on the machine and its load); only the report's shape and
the frame counts are.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gridworld_throughput.py"
VARIANTS = [
    "raw_dynamics",
    "bamdp_rollout",
    "bamdp_step_loop",
    "varibad_rollout",
    "varibad_collector",
]


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script(SCRIPT)


@pytest.mark.parametrize("steps", [30, 70])
def test_benchmark_report(bench, tmp_path, steps, capsys):
    num_envs = 8
    out = tmp_path / "results" / "throughput.json"
    argv = ["--num-envs", str(num_envs), "--steps", str(steps), "--repeats", "1"]
    returned = bench.main([*argv, "--out", str(out)])

    report = json.loads(out.read_text())
    assert report == json.loads(json.dumps(returned))  # what is returned is what is written

    for key in (
        "config",
        "seed",
        "versions",
        "platform",
        "wall_clock_s",
        "results",
        "frames_per_s",
        "target",
    ):
        assert key in report
    config = report["config"]
    assert config["num_envs"] == num_envs
    assert config["steps"] == steps
    assert config["repeats"] == 1
    assert config["torch_num_threads"] == 1
    assert config["collector_frames_per_batch"] == num_envs * 60
    assert report["seed"] == 0
    assert {"torch", "torchrl", "tensordict", "python"} <= set(report["versions"])

    assert list(report["results"]) == VARIANTS
    assert set(report["frames_per_s"]) == set(VARIANTS)
    expected_frames = dict.fromkeys(VARIANTS, num_envs * steps)
    expected_frames["varibad_collector"] = num_envs * 60 * math.ceil(steps / 60)
    for name, res in report["results"].items():
        assert res["frames"] == expected_frames[name], name
        assert len(res["seconds"]) == len(res["frames_per_s_all"]) == 1
        assert res["frames_per_s"] > 0
        assert res["frames_per_s"] == report["frames_per_s"][name]
        assert isinstance(res["description"], str) and res["description"]
    assert report["results"]["bamdp_rollout"]["ratio_to_reference"] == pytest.approx(1.0)

    target = report["target"]
    assert target["variant"] == "bamdp_rollout"
    assert target["num_envs"] == 1024
    assert target["frames_per_s"] == 1_000_000
    assert target["met"] is None  # only judged at 1024 envs

    printed = capsys.readouterr().out
    for name in VARIANTS:
        assert name in printed


def test_rejects_bad_sizes(bench, tmp_path):
    with pytest.raises(SystemExit):
        bench.main(["--num-envs", "0", "--out", str(tmp_path / "x.json")])
