"""Out-of-distribution meta-tests (issue 20): longer horizons than trained, the OOD record of a
run, the aggregated report's schema and Markdown, and ``bamdp-eval test_tasks=...``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torchrl.envs import ExplorationType, set_exploration_type

from torchrl_bamdp.cli import eval_main
from torchrl_bamdp.configs import ConfigError, load_config
from torchrl_bamdp.envs import make_env
from torchrl_bamdp.evaluation.report import (
    OOD_SCHEMA,
    check_ood_report,
    ood_markdown,
    ood_report,
)
from torchrl_bamdp.policies import BayesOptimalGridNavi, GridNaviSpec
from torchrl_bamdp.task_distributions import grid_goal_cells
from torchrl_bamdp.trainers import Trainer, build_agent
from torchrl_bamdp.trainers.runs import evaluate_run_ood, ood_distributions

SPLIT = {"train_tasks": "heldout_train", "test_tasks": ["heldout_test"]}
#: Short inner episodes keep every rollout here cheap; the horizon logic does not depend on it.
LENGTH = 4


def _config(algo: str, seed: int = 0, **train) -> dict:
    return {
        "algo": {"name": algo},
        "seed": seed,
        "env": {"num_envs": 16, "episode_length": LENGTH, **SPLIT},
        "train": {
            "total_frames": 16 * 4 * LENGTH,
            "eval_tasks": 80,
            "eval_interval": 0,
            "progress_bar": False,
            "figures": False,
            **train,
        },
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Three one-batch runs on the held-out split: RL2 seed 0, belief oracle seeds 0 and 1."""
    root = tmp_path_factory.mktemp("ood_runs")
    for algo, seed in (("rl2", 0), ("belief_oracle", 0), ("belief_oracle", 1)):
        Trainer(load_config(_config(algo, seed)), root / f"{algo}_seed{seed}").train()
    return root


@pytest.fixture(scope="module")
def records(runs) -> list[dict]:
    """The OOD records of the three runs, 6 episodes per task (2 more than trained)."""
    names = ("rl2_seed0", "belief_oracle_seed0", "belief_oracle_seed1")
    return [evaluate_run_ood(runs / name, episodes=6) for name in names]


# -- a meta-test horizon longer than trained ---------------------------------------------------
@pytest.mark.parametrize("algo", ["varibad", "rl2", "belief_oracle", "oracle"])
def test_six_episodes_for_a_four_episode_agent_run_and_saturate_the_time_features(algo):
    """Nothing in the agents' transforms is sized by the trained horizon but the time
    features, which stay at the last trained episode (documented, and said in the report)."""
    config = load_config(_config(algo))
    agent = build_agent(config, make_env(num_envs=2, tasks="heldout_train", episode_length=LENGTH))
    test = make_env(num_envs=5, tasks="heldout_test", episode_length=LENGTH, episodes_per_task=6)
    env = agent.transformed_env(test)
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        rollout = env.rollout(6 * LENGTH, agent.policy_for(env), break_when_any_done=False)
    episode = rollout["episode"][..., 0]
    assert int(episode.max()) == 5 and bool(rollout["next", "done"][:, -1].all())
    time = rollout["hyper_state"][..., -2:]
    assert bool((time[..., 1][episode >= 3] == 1.0).all())  # episodes 4, 5, 6 read as 4
    assert torch.allclose(time[..., 1][episode < 3], episode[episode < 3].float() / 3)
    assert bool(torch.isfinite(rollout["hyper_state"]).all())


# -- one run's OOD record ----------------------------------------------------------------------
def test_a_runs_ood_record_covers_train_and_test_distributions(records):
    record = records[0]
    assert list(record["splits"]) == ["heldout_train", "heldout_test"]
    train, test = record["splits"]["heldout_train"], record["splits"]["heldout_test"]
    assert (train["role"], test["role"]) == ("train", "test")
    assert (train["disjoint_from_train"], test["disjoint_from_train"]) == (False, True)
    assert train["num_tasks"] == test["num_tasks"] == 80 and len(test["mean"]) == 6
    goals = tuple(grid_goal_cells(5, "heldout_test"))
    spec = GridNaviSpec(episode_length=LENGTH, episodes_per_task=6, goals=goals)
    assert test["bayes_optimal"] == pytest.approx(BayesOptimalGridNavi(spec).expected_returns())
    assert record["trained_episodes"] == 4 and record["episodes"] == 6 and record["time_features"]
    per_goal = {tuple(t["task"]): t for t in test["per_task"]}  # every held-out goal, 16 times
    assert set(per_goal) == {tuple(map(float, g)) for g in grid_goal_cells(5, "heldout_test")}
    assert {t["count"] for t in per_goal.values()} == {16} and len(train["per_task"]) == 16
    assert any("critic_task" in p for p in record["privileged"])


def test_ood_distributions_are_checked_against_the_family():
    config = load_config({})
    assert ood_distributions(config) == ["all"]
    with pytest.raises(ConfigError, match=r"'region' is not a task distribution.*declared"):
        ood_distributions(config, ["region"])
    with pytest.raises(ConfigError, match="the run's training distribution"):
        ood_distributions(config, ["all"])


# -- the aggregated report ---------------------------------------------------------------------
def test_ood_report_schema_and_aggregation(records):
    report = ood_report(records, command="test")
    check_ood_report(report)
    assert report["schema"] == OOD_SCHEMA and report["stderr_over"] == "seeds"
    assert list(report["distributions"]) == ["heldout_train", "heldout_test"]
    assert list(report["algorithms"]) == ["rl2", "belief_oracle"]
    oracle = report["algorithms"]["belief_oracle"]
    assert oracle["seeds"] == [0, 1]
    means = [r["splits"]["heldout_test"]["mean"] for r in records[1:]]
    expected = torch.tensor(means, dtype=torch.float64)
    assert oracle["splits"]["heldout_test"]["mean"] == pytest.approx(expected.mean(0).tolist())
    assert oracle["splits"]["heldout_test"]["stderr"] == pytest.approx(
        (expected.std(0) / math.sqrt(2)).tolist()
    )
    # One seed of RL2: its s.e. is the spread over its test tasks.
    rl2 = report["algorithms"]["rl2"]["splits"]["heldout_test"]
    assert rl2["stderr"] == pytest.approx(records[0]["splits"]["heldout_test"]["stderr"])
    assert any("saturate" in note for note in report["notes"])
    assert any("training prior" in note for note in report["notes"])
    # Survives JSON (NaN s.e. of totals with one seed included).
    check_ood_report(json.loads(json.dumps(report)))


def test_ood_report_refuses_runs_of_different_splits_or_horizons(records):
    other = {**records[0], "episodes": 4}
    with pytest.raises(ValueError, match="different episodes"):
        ood_report([records[1], other])
    other = {**records[0], "split_seed": 1}
    with pytest.raises(ValueError, match="different split_seed"):
        ood_report([records[1], other])


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("schema",), "v0", "schema must be"),
        (("distributions", "heldout_train", "role"), "test", "training one first"),
        (("algorithms", "rl2", "splits", "heldout_test", "mean"), [1.0], "list of 6 numbers"),
        (("algorithms", "rl2", "splits", "heldout_test", "mean"), [math.nan] * 6, "finite"),
        (("distributions", "heldout_test", "bayes_optimal"), [1.0] * 5, "bayes_optimal"),
        (("algorithms", "rl2", "seeds"), [0, 1], "one entry per seed"),
        (("stderr_over",), "runs", "stderr_over must be"),
    ],
)
def test_check_ood_report_names_the_bad_entry(records, path, value, message):
    report = json.loads(json.dumps(ood_report(records[:1])))
    node = report
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ValueError, match=message):
        check_ood_report(report)


def test_markdown_puts_each_distribution_side_by_side_with_its_bayes_optimal(records):
    table = ood_markdown(ood_report(records))
    header = next(line for line in table.splitlines() if line.startswith("| episode"))
    assert header.split(" | ")[1:] == [
        "RL2 `heldout_train`",
        "Belief oracle `heldout_train`",
        "Bayes-optimal `heldout_train`",
        "RL2 `heldout_test`",
        "Belief oracle `heldout_test`",
        "Bayes-optimal `heldout_test` |",
    ]
    assert "| 6 |" in table and "| total |" in table
    assert "`heldout_test` (OOD, disjoint from training, 80 test tasks)" in table


# -- bamdp-eval ---------------------------------------------------------------------------------
def test_bamdp_eval_writes_the_ood_report_of_one_run(runs, capsys):
    run = runs / "belief_oracle_seed0"
    eval_main([f"run_dir={run}", "episodes=6"])  # test_tasks from the run's config
    report = json.loads((run / "ood_report.json").read_text())
    check_ood_report(report)
    assert report["stderr_over"] == "tasks" and report["episodes"] == 6
    meta = json.loads((run / "meta_test.json").read_text())  # in distribution, as before
    train = report["algorithms"]["belief_oracle"]["splits"]["heldout_train"]
    assert meta["mean"] == pytest.approx(train["mean"]) and len(meta["mean"]) == 6
    assert "Bayes-optimal `heldout_test`" in (run / "ood_report.md").read_text()


def test_bamdp_eval_of_a_folder_writes_one_ood_summary(runs, tmp_path):
    out = tmp_path / "summary"
    eval_main([f"run_dir={runs}", "episodes=6", "test_tasks=heldout_test", f"out={out}"])
    check_ood_report(json.loads(Path(f"{out}_ood.json").read_text()))
    assert Path(f"{out}.json").exists() and Path(f"{out}_ood.md").exists()


def test_bamdp_eval_with_an_unknown_test_distribution_exits_2(runs, capsys):
    with pytest.raises(SystemExit) as err:
        eval_main([f"run_dir={runs / 'rl2_seed0'}", "test_tasks=heldout,region_test"])
    assert err.value.code == 2
    message = capsys.readouterr().err
    assert "'heldout' is not a task distribution" in message and "'heldout_test'" in message


def test_a_checkpoint_of_another_training_distribution_is_refused(runs, tmp_path):
    import shutil

    from torchrl_bamdp.trainers import CheckpointError

    run = tmp_path / "copy"
    shutil.copytree(runs / "rl2_seed0", run)
    config = _config("rl2", eval_tasks=84)
    config["env"] = {**config["env"], "train_tasks": "all", "test_tasks": []}
    with pytest.raises(CheckpointError, match="env.train_tasks: checkpoint 'heldout_train'"):
        Trainer(load_config(config), run)
