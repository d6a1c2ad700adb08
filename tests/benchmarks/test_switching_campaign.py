"""The switching campaign script: its reference policies and the summary of the committed runs."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import torch
from tensordict import TensorDict

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "switching_campaign.py"
RESULTS = ROOT / "benchmarks" / "results" / "switching"


def _campaign():
    spec = importlib.util.spec_from_file_location("switching_campaign", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_policies_walk_to_their_target() -> None:
    campaign = _campaign()
    position = torch.tensor([[0, 0], [3, 1], [2, 2], [4, 4]])
    target = torch.tensor([[2, 0], [3, 4], [2, 2], [1, 4]])
    # right, up, noop (there), left: x first, then y
    assert campaign._walk_to(position, target).tolist() == [2, 1, 0, 4]
    td = TensorDict({"observation": position.float(), "task": target.float()}, [4])
    assert campaign.knows_the_goal_policy(td)["action"].tolist() == [2, 1, 0, 4]
    # The greedy filter walks to the most likely cell, the nearest of equally likely ones.
    probs = torch.zeros(4, 25)
    probs[:, 24] = 1.0  # all on (4, 4)
    probs[2, [2 * 5 + 2, 0]] = 2.0  # env 2: (2, 2) where it stands, tied with (0, 0)
    td = TensorDict({"observation": position.float(), ("belief", "probs"): probs}, [4])
    actions = campaign.greedy_filter_policy(5)(td)["action"].tolist()
    assert actions == [2, 2, 0, 0]


def test_summary_of_the_committed_runs(tmp_path) -> None:
    runs = sorted(RESULTS.glob("*_seed*.json"))
    assert runs, "benchmarks/results/switching holds no finished run"
    for path in runs:
        shutil.copy(path, tmp_path)
    report = _campaign().main(["--summary", "--no-references", "--out-dir", str(tmp_path)])
    committed = json.loads((RESULTS / "summary.json").read_text())
    assert report["algorithms"].keys() == committed["algorithms"].keys()
    for algo, row in report["algorithms"].items():
        assert row["greedy"]["per_seed"] == committed["algorithms"][algo]["greedy"]["per_seed"]
        assert len(row["seeds"]) >= 3
    for record in map(json.loads, map(Path.read_text, runs)):
        assert record["hazard"] == 0.05 and record["horizon"] == 200
        # Nothing privileged in training, for any of the three agents.
        assert record["config"]["algo"]["ppo"]["critic_task"] is False
    assert "return per 100 steps" in (tmp_path / "summary.md").read_text()


def test_a_jobs_child_is_told_its_one_run_the_parents_deadline_and_no_summary(
    tmp_path, monkeypatch
) -> None:
    # End to end, --jobs runs through the same utils.run_jobs as the MuJoCo and GridNavi
    # campaigns (tests/benchmarks/test_mujoco_campaign.py); here: what a child is asked to do.
    campaign = _campaign()
    parent = ["--seeds", "0", "1", "--frames", "38400", "--jobs", "2"]
    parent += ["--runs-root", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out")]
    captured = {}

    def fake_run_jobs(jobs, processes):
        captured["jobs"], captured["processes"] = list(jobs), processes
        return []

    monkeypatch.setattr("torchrl_bamdp.utils.run_jobs", fake_run_jobs)
    campaign.main(parent)
    jobs = captured["jobs"]
    assert captured["processes"] == 2
    assert [job.name for job in jobs] == [
        f"{algo} seed {seed}" for seed in (0, 1) for algo in campaign.ALGORITHMS
    ]
    job = jobs[1]
    assert job.command[1] == str(SCRIPT) and job.log == tmp_path / "runs" / "varibad" / "seed0.log"
    child = job.command[2:]
    assert child[: child.index("--deadline")] == [
        "--algos", "varibad", "--seeds", "0", "--frames", "38400",
        "--runs-root", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "out"),
    ]  # fmt: skip
    assert child[-1] == "--no-summary"
    deadline = float(child[child.index("--deadline") + 1])
    assert all(float(j.command[j.command.index("--deadline") + 1]) == deadline for j in jobs)
