"""Smoke test of the device parity script, CPU against CPU (CI has no GPU).

On a GPU machine the same script compares the CPU with ``--device cuda``; here it must run end
to end, write its report, pass on identical devices, and fail when the envs differ.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "device_parity.py"
TINY = ["--device", "cpu", "--frames", "3840", "--sizes", "64", "--steps", "60", "--skip", "gpu"]


@pytest.fixture(scope="module")
def parity(load_script):
    return load_script(SCRIPT)


def test_cpu_against_cpu_passes_and_writes_the_report(parity, tmp_path, capsys):
    out = tmp_path / "parity.json"
    assert parity.main([*TINY, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["checks"] == {
        "env identical": True,
        "beliefs close": True,
        "rewards identical": True,
    }
    assert report["env"]["check_env_specs"] == "passed" and report["env"]["goal_rewards"] > 0
    assert report["belief"]["hyper_state_max_abs_difference_fp32"] == 0.0
    assert {run["frames"] for run in report["train"].values()} == {3840}
    assert all(run["parallel_updates"] for run in report["train"].values())
    for check in report["checkpoint"].values():
        assert check["meta_test_mean_cpu"] == check["meta_test_mean_device"]
    assert [(row["device"], row["num_envs"]) for row in report["throughput"]] == [
        ("cpu", 64),
        ("device", 64),
    ]
    assert "checks: all passed" in capsys.readouterr().out


def test_different_envs_fail_the_check(parity, tmp_path, monkeypatch, capsys):
    make_env = parity.make_env_from_config
    calls = []

    def second_env_reseeded(config, seed, device, **changes):
        calls.append(device)  # the second env built is env_parity's "device" one
        return make_env(config, seed=seed + (len(calls) == 2), device=device, **changes)

    monkeypatch.setattr(parity, "make_env_from_config", second_env_reseeded)
    assert parity.main([*TINY, "--out", str(tmp_path / "parity.json")]) == 1
    assert "checks: FAILED: env identical" in capsys.readouterr().out


def test_bad_device_fails_at_argument_parsing(parity, capsys):
    with pytest.raises(SystemExit):
        parity.main(["--device", "nope"])
    assert "--device 'nope'" in capsys.readouterr().err


def test_gpu_path_sections_run_and_report(parity, tmp_path, capsys):
    """Sections 6-8 (the GPU path) at tiny sizes on the CPU: schema, sync count, frame counts."""
    out = tmp_path / "gpu.json"
    argv = ["--device", "cpu", "--skip", "parity", "--gpu-envs", "16", "--gpu-frames", "960"]
    assert parity.main([*argv, "--learning-minutes", "0.02", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    step = report["sync_free"]
    assert step["host_syncs"] == {"ours": 0, "with_our_code_on_the_stack": 0, "sites": []}
    assert step["sync_free_fps"] > 0 and step["default_fps"] > 0
    assert set(report["gpu_train"]) == {"parallel_updates", "sequential_updates"}
    assert {run["frames"] for run in report["gpu_train"].values()} == {960}
    assert {run["num_envs"] for run in report["gpu_train"].values()} == {16}
    learning = report["gpu_learning"]
    assert learning["frames"] >= 960 and set(learning["bar_met"]) >= {"episode_1_vs_bayes_optimal"}
    assert report["checks"] == {"no host sync of ours in the step path": True}
    assert "learning bar in" in capsys.readouterr().out
