"""Tests of ``torchrl_bamdp.evaluation.report``, the multi-run ``bamdp-eval``, ``bamdp-plot`` and
``benchmarks/gridworld_baselines.py`` on tiny runs (480 frames, 4 envs, 21 test tasks)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

from torchrl_bamdp.cli import (  # noqa: E402
    PLOT_USAGE,
    compose_config,
    eval_main,
    plot_main,
    run_training,
)
from torchrl_bamdp.envs import candidate_goal_cells  # noqa: E402
from torchrl_bamdp.evaluation.report import (  # noqa: E402
    aggregate,
    bayes_optimal_returns,
    find_runs,
    last_eval_report,
    markdown_table,
    record_belief_rollout,
)
from torchrl_bamdp.policies import BayesOptimalGridNavi, GridNaviSpec  # noqa: E402
from torchrl_bamdp.trainers.runs import evaluate_run, open_run  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BASELINES = ROOT / "benchmarks" / "gridworld_baselines.py"
TINY = [
    "env.num_envs=4",
    "algo.ppo.minibatches=4",
    "train.total_frames=480",
    "train.eval_tasks=21",
    "train.progress_bar=false",
    "train.figures=false",
    "train.eval_interval=1",
]
FIGURES = ("fig4_per_episode", "fig4_learning_curves", "fig3a_belief_rollout", "fig3b_latents")


def train(run_dir: Path, algo: str, seed: int = 0) -> Path:
    run_training(compose_config([f"algo={algo}", f"seed={seed}", *TINY]), run_dir)
    return run_dir


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def _agg(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """``folder`` holds varibad and oracle, seeds 0 and 1; ``bayes_optimal`` is apart."""
    base = tmp_path_factory.mktemp("report_runs")
    folder = base / "runs"
    for algo in ("varibad", "oracle"):
        for seed in (0, 1):
            train(folder / algo / f"seed{seed}", algo, seed)
    return {
        "folder": folder,
        "varibad": folder / "varibad" / "seed0",
        "oracle": folder / "oracle" / "seed0",
        "bayes_optimal": train(base / "bayes_optimal", "bayes_optimal"),
    }


def report(algo: str, seed: int, mean: list[float], frames: int = 100) -> dict:
    return {
        "algo": algo,
        "seed": seed,
        "mean": mean,
        "frames": frames,
        "train_seconds": 60.0 * (seed + 1),
        "run_dir": f"runs/{algo}/seed{seed}",
    }


# -- aggregate / markdown_table ----------------------------------------------------------------
def test_aggregate_mean_and_stderr_over_seeds():
    values = {0: [1.0, 2.0, 4.0], 1: [3.0, 2.0, 0.0], 2: [2.0, 5.0, 2.0]}
    agg = aggregate([report("rl2", s, values[s], frames=10 * s) for s in (2, 0, 1)])
    assert list(agg) == ["rl2"]
    rl2 = agg["rl2"]
    means = torch.tensor([values[s] for s in (0, 1, 2)], dtype=torch.float64)
    assert rl2["label"] == "RL2"
    assert rl2["seeds"] == [0, 1, 2]  # sorted by seed
    assert rl2["mean"] == pytest.approx(means.mean(0).tolist())
    expected_se = means.std(0, correction=1) / math.sqrt(3)
    assert rl2["stderr"] == pytest.approx(expected_se.tolist())
    assert rl2["stderr"][0] == pytest.approx(1.0 / math.sqrt(3))  # std of 1,3,2 is 1
    totals = means.sum(1)  # 7, 5, 9
    assert rl2["total_mean"] == pytest.approx(7.0)
    assert rl2["total_stderr"] == pytest.approx(float(totals.std(correction=1)) / math.sqrt(3))
    assert rl2["frames"] == [0, 10, 20]
    assert rl2["train_seconds"] == [60.0, 120.0, 180.0]
    assert [p["seed"] for p in rl2["per_seed"]] == [0, 1, 2]
    assert rl2["per_seed"][1] == {
        "seed": 1,
        "run_dir": "runs/rl2/seed1",
        "frames": 10,
        "train_seconds": 120.0,
        "mean": values[1],
    }


def test_aggregate_one_seed_has_nan_stderr():
    agg = aggregate([report("varibad", 4, [1.0, 2.0])])["varibad"]
    assert agg["mean"] == [1.0, 2.0] and agg["total_mean"] == 3.0
    assert all(math.isnan(s) for s in agg["stderr"]) and len(agg["stderr"]) == 2
    assert math.isnan(agg["total_stderr"])


def test_aggregate_rejects_different_episode_counts():
    reports = [report("oracle", 0, [1.0, 2.0]), report("oracle", 1, [1.0, 2.0, 3.0])]
    with pytest.raises(ValueError, match="'oracle'.*different episode counts"):
        aggregate(reports)
    # different algorithms may differ
    assert len(aggregate([report("oracle", 0, [1.0]), report("rl2", 0, [1.0, 2.0])])) == 2


def test_aggregate_orders_algorithms_as_the_paper():
    names = ["random", "zeta", "bayes_optimal", "alpha", "belief_oracle", "oracle", "rl2"]
    names.append("varibad")
    agg = aggregate([report(n, 0, [0.0]) for n in names])
    assert list(agg) == [
        "varibad",
        "rl2",
        "oracle",
        "belief_oracle",
        "bayes_optimal",
        "random",
        "alpha",
        "zeta",
    ]
    labels = [a["label"] for a in agg.values()]
    assert labels[:6] == ["VariBAD", "RL2", "Oracle", "Belief oracle", "Bayes-optimal", "Random"]
    assert labels[6:] == ["alpha", "zeta"]  # unknown algorithms keep their name


def test_markdown_table_rows_and_columns():
    reports = [report("varibad", s, [s + 1.0, 2.0 * s], frames=480) for s in (0, 1)]
    reports.append(report("random", 0, [-1.5, -1.25], frames=0))
    lines = markdown_table(aggregate(reports)).splitlines()
    assert len(lines) == 4
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == [
        "algorithm",
        "episode 1",
        "episode 2",
        "total",
        "seeds",
        "frames per run",
        "minutes per run",
    ]
    assert lines[1] == "|" + "---|" * 7
    # VariBAD: episode 1 is 1, 2 (mean 1.5, s.e. 0.5); episode 2 is 0, 2; totals 1, 4
    assert lines[2] == (
        "| VariBAD | 1.500 +- 0.500 | 1.000 +- 1.000 | 2.500 +- 1.500 | 2 | 480 | 1.5 |"
    )
    # one seed: no "+-"; 60 s -> 1.0 minute
    assert lines[3] == "| Random | -1.500 | -1.250 | -2.750 | 1 | 0 | 1.0 |"


def test_markdown_table_lists_different_frame_budgets():
    reports = [report("rl2", 0, [1.0], frames=960), report("rl2", 1, [1.0], frames=480)]
    row = markdown_table(aggregate(reports)).splitlines()[2]
    assert "| 480/960 |" in row
    assert "| 1.000 +- 0.000 |" in row


# -- find_runs / evaluate_run ------------------------------------------------------------------
def test_find_runs(runs, tmp_path):
    folder = runs["folder"]
    found = find_runs([folder])
    assert found == sorted(folder / a / f"seed{s}" for a in ("oracle", "varibad") for s in (0, 1))
    assert find_runs([runs["varibad"], runs["varibad"]]) == [runs["varibad"]]
    assert find_runs([tmp_path]) == []
    with pytest.raises(FileNotFoundError, match="neither a run directory nor a folder"):
        find_runs([tmp_path / "missing"])


def test_evaluate_run_schema_on_varibad(runs):
    run_dir = runs["varibad"]
    before = {p: digest(p) for p in run_dir.rglob("*") if p.is_file()}
    result = evaluate_run(run_dir, tasks=21)
    assert set(result) >= {
        "run_dir",
        "env",
        "algo",
        "seed",
        "frames",
        "train_seconds",
        "num_tasks",
        "episodes",
        "mean",
        "stderr",
        "total_mean",
    }
    assert result["run_dir"] == str(run_dir)
    assert (result["env"], result["algo"], result["seed"]) == ("gridworld", "varibad", 0)
    assert result["frames"] == 480 and result["train_seconds"] > 0
    assert result["num_tasks"] == 21 and result["episodes"] == 4
    assert len(result["mean"]) == len(result["stderr"]) == 4
    assert result["total_mean"] == pytest.approx(sum(result["mean"]), abs=1e-4)
    json.dumps(result)  # JSON-serialisable as is
    # same fixed test tasks and greedy actions as the run's last evaluation during training
    assert result["mean"] == pytest.approx(last_eval_report(run_dir)["mean"], abs=1e-6)
    # read-only: nothing in the run directory changes, nothing is added
    after = {p: digest(p) for p in run_dir.rglob("*") if p.is_file()}
    assert after == before

    six = evaluate_run(run_dir, tasks=21, episodes=6, deterministic=False)
    assert six["episodes"] == 6 and len(six["mean"]) == len(six["stderr"]) == 6


def test_evaluate_run_bayes_optimal_matches_dynamic_programming(runs):
    run_dir = runs["bayes_optimal"]
    result = evaluate_run(run_dir, tasks=21)
    assert result["algo"] == "bayes_optimal" and result["frames"] == 0
    assert result["num_tasks"] == 21
    expected = BayesOptimalGridNavi().expected_returns()
    assert result["mean"] == pytest.approx(expected, abs=1e-5)

    six = evaluate_run(run_dir, tasks=21, episodes=6)
    assert six["episodes"] == 6 and len(six["mean"]) == 6
    dp6 = BayesOptimalGridNavi(GridNaviSpec(episodes_per_task=6)).expected_returns()
    assert six["mean"] == pytest.approx(dp6, abs=1e-5)
    config = open_run(run_dir).config
    assert bayes_optimal_returns(config, 4) == pytest.approx(expected)
    assert bayes_optimal_returns(config, 6) == pytest.approx(dp6)


# -- record_belief_rollout ---------------------------------------------------------------------
def _check_walk(positions: torch.Tensor, done: torch.Tensor, grid: int = 5) -> None:
    """Cells in the grid, one move (or none) per step, back at the start after an episode."""
    assert positions.min() >= 0 and positions.max() < grid
    assert positions[0].tolist() == [0, 0]
    last = len(done) - 1
    for t in range(1, len(positions)):
        if done[t] and t < last:  # BAMDPEnv returns the next episode's start state there
            assert positions[t].tolist() == [0, 0], t
        else:
            step = (positions[t] - positions[t - 1]).abs().sum()
            assert step <= 1, (t, positions[t - 1].tolist(), positions[t].tolist())


def test_record_belief_rollout_on_varibad(runs):
    trainer = open_run(runs["varibad"])
    rollout = record_belief_rollout(trainer.agent, trainer.config, (4, 2))
    steps = 4 * 15 + 1
    assert tuple(rollout.positions.shape) == (steps, 2)
    assert tuple(rollout.reward_probs.shape) == (steps, 25)
    assert tuple(rollout.exact_probs.shape) == (steps, 25)
    assert tuple(rollout.mean.shape) == tuple(rollout.logvar.shape) == (steps, 5)
    assert rollout.goal == (4, 2) and rollout.grid_size == 5
    assert rollout.reward_probs.min() >= 0 and rollout.reward_probs.max() <= 1
    assert torch.isfinite(rollout.mean).all() and torch.isfinite(rollout.logvar).all()
    decoder = trainer.agent.elbo_loss.reward_decoder
    assert torch.allclose(rollout.reward_probs, decoder.probabilities(rollout.mean))

    # inner-episode ends at every 15th step; the last step ends the task
    done = rollout.episode_done
    assert done.dtype == torch.bool and tuple(done.shape) == (steps,)
    assert done.nonzero().flatten().tolist() == [15, 30, 45, 60]

    exact = rollout.exact_probs
    assert torch.allclose(exact.sum(1), torch.ones(steps), atol=1e-5)
    cells = candidate_goal_cells(5)
    prior = torch.zeros(25)
    prior[cells[:, 0] * 5 + cells[:, 1]] = 1.0 / 21
    assert torch.allclose(exact[0], prior, atol=1e-6)

    positions = rollout.positions
    _check_walk(positions, done)
    # the exact posterior rules out every cell the agent stood on (it never reached the goal
    # there, or it is one-hot on the goal from then on)
    goal_index = 4 * 5 + 2
    for t in range(1, steps):
        if done[t] and t < steps - 1:
            continue  # the observation is the start state, not the cell landed in
        cell = int(positions[t, 0] * 5 + positions[t, 1])
        if cell == goal_index:
            assert exact[t, goal_index] == pytest.approx(1.0)
        else:
            assert exact[t, cell] == 0.0, t

    # the prior (t = 0) does not depend on the task; a shorter task has fewer steps
    other = record_belief_rollout(trainer.agent, trainer.config, (2, 4), episodes=2)
    assert tuple(other.positions.shape) == (31, 2) and tuple(other.reward_probs.shape) == (31, 25)
    assert other.episode_done.nonzero().flatten().tolist() == [15, 30]
    assert torch.allclose(other.mean[0], rollout.mean[0])
    assert torch.allclose(other.reward_probs[0], rollout.reward_probs[0])
    assert torch.allclose(other.exact_probs[0], prior, atol=1e-6)


def test_record_belief_rollout_follows_the_env_to_the_goal(runs):
    """With the goal on the first candidate cell the agent visits, the rollout is the same up to
    that step and the exact posterior becomes one-hot there (the reward came from the env)."""
    trainer = open_run(runs["varibad"])
    first = record_belief_rollout(trainer.agent, trainer.config, (4, 2))
    candidates = {tuple(c) for c in candidate_goal_cells(5).tolist()}
    last = len(first.episode_done) - 1
    visits = [
        t
        for t in range(1, last + 1)
        if tuple(first.positions[t].tolist()) in candidates
        and (not first.episode_done[t] or t == last)
        and tuple(first.positions[t].tolist()) != (4, 2)
    ]
    if not visits:
        pytest.skip("the tiny agent visits no candidate cell other than (4, 2)")
    t = visits[0]
    goal = tuple(first.positions[t].tolist())
    second = record_belief_rollout(trainer.agent, trainer.config, goal)
    assert torch.equal(second.positions[: t + 1], first.positions[: t + 1])
    one_hot = torch.zeros(25)
    one_hot[goal[0] * 5 + goal[1]] = 1.0
    assert torch.allclose(second.exact_probs[t], one_hot)
    assert not torch.allclose(first.exact_probs[t], one_hot)


def test_record_belief_rollout_rejects_non_varibad_runs(runs):
    with pytest.raises(ValueError, match="belief rollouts need a VariBAD run.*algo='oracle'"):
        oracle = open_run(runs["oracle"])
        record_belief_rollout(oracle.agent, oracle.config, (4, 2))


# -- last_eval_report --------------------------------------------------------------------------
def test_last_eval_report_reads_the_last_valid_line(tmp_path):
    config = {"env": {"name": "gridworld"}, "algo": {"name": "rl2"}, "seed": 7}
    (tmp_path / "config.json").write_text(json.dumps(config))
    lines = [
        json.dumps({"frames": 240, "mean": [1.0, 2.0], "total_mean": 3.0}),
        json.dumps({"frames": 480, "mean": [2.0, 4.0], "total_mean": 6.0}),
        '{"frames": 720, "mean": [9.0',  # torn by a kill
    ]
    (tmp_path / "eval.jsonl").write_text("\n".join(lines))
    last = last_eval_report(tmp_path)
    assert last["frames"] == 480 and last["mean"] == [2.0, 4.0] and last["total_mean"] == 6.0
    assert (last["algo"], last["seed"], last["env"]) == ("rl2", 7, "gridworld")
    assert last["run_dir"] == str(tmp_path) and math.isnan(last["train_seconds"])

    (tmp_path / "eval.jsonl").write_text("")
    with pytest.raises(ValueError, match="no evaluation yet"):
        last_eval_report(tmp_path)
    (tmp_path / "eval.jsonl").unlink()
    with pytest.raises(ValueError, match="no evaluation yet"):
        last_eval_report(tmp_path)


def test_last_eval_report_of_a_real_run(runs):
    last = last_eval_report(runs["varibad"])
    assert last["frames"] == 480 and last["num_tasks"] == 21 and len(last["mean"]) == 4
    assert (last["algo"], last["seed"]) == ("varibad", 0)


# -- bamdp-eval with several runs --------------------------------------------------------------
def test_eval_main_folder_of_runs_writes_summary(runs, tmp_path, capsys):
    folder = runs["folder"]
    checkpoints = {p: digest(p) for p in folder.rglob("last.pt")}
    out = tmp_path / "summary"
    eval_main([f"run_dir={folder}", "tasks=21", f"out={out}"])
    printed = capsys.readouterr().out
    assert f"wrote {out}.json and {out}.md" in printed

    summary = json.loads(out.with_suffix(".json").read_text())
    assert set(summary) == {"runs", "envs"} and list(summary["envs"]) == ["gridworld"]
    assert len(summary["runs"]) == 4
    assert {(r["algo"], r["seed"]) for r in summary["runs"]} == {
        (a, s) for a in ("varibad", "oracle") for s in (0, 1)
    }
    assert all(r["num_tasks"] == 21 and len(r["mean"]) == 4 for r in summary["runs"])
    assert list(summary["envs"]["gridworld"]) == ["varibad", "oracle"]
    for algo, agg in summary["envs"]["gridworld"].items():
        assert set(agg) >= {"mean", "stderr", "seeds", "frames", "train_seconds", "per_seed"}
        assert agg["seeds"] == [0, 1] and agg["frames"] == [480, 480]
        assert len(agg["train_seconds"]) == 2 and all(s > 0 for s in agg["train_seconds"])
        assert len(agg["mean"]) == len(agg["stderr"]) == 4
        per_run = [r["mean"] for r in summary["runs"] if r["algo"] == algo]
        assert agg["mean"] == pytest.approx(torch.tensor(per_run).mean(0).tolist(), abs=1e-6)
        assert [p["seed"] for p in agg["per_seed"]] == [0, 1]
        assert all(Path(p["run_dir"]).parent.parent == folder for p in agg["per_seed"])

    table = out.with_suffix(".md").read_text().splitlines()
    assert len(table) == 4
    assert table[2].startswith("| VariBAD |") and table[3].startswith("| Oracle |")
    assert table[0] in printed
    # runs are opened read-only, and nothing is written into the folder
    assert {p: digest(p) for p in folder.rglob("last.pt")} == checkpoints
    assert not list(folder.rglob("meta_test*"))


def test_eval_main_repeated_run_dir(runs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    eval_main([f"run_dir={runs['varibad']}", f"run_dir={runs['oracle']}", "tasks=21"])
    summary = json.loads((tmp_path / "meta_test_summary.json").read_text())  # default out
    assert [r["run_dir"] for r in summary["runs"]] == [str(runs["oracle"]), str(runs["varibad"])]
    assert list(summary["envs"]["gridworld"]) == ["varibad", "oracle"]
    for agg in summary["envs"]["gridworld"].values():
        assert agg["seeds"] == [0]
        assert all(math.isnan(s) for s in agg["stderr"])  # one seed: NaN (JSON NaN)
    table = (tmp_path / "meta_test_summary.md").read_text().splitlines()
    assert len(table) == 4 and "+-" not in table[2]
    assert not (runs["varibad"] / "meta_test.json").exists()


def test_eval_main_folder_default_out_is_in_the_folder(runs, tmp_path, capsys):
    folder = tmp_path / "copy"
    shutil.copytree(runs["folder"] / "oracle", folder / "oracle")
    eval_main([f"run_dir={folder}", "tasks=21", "episodes=2"])
    summary = json.loads((folder / "meta_test_summary.json").read_text())
    assert summary["envs"]["gridworld"]["oracle"]["seeds"] == [0, 1]
    assert all(r["episodes"] == 2 for r in summary["runs"])
    assert (folder / "meta_test_summary.md").is_file()


def test_eval_and_plot_group_runs_by_env_family(runs, tmp_path, capsys):
    """A folder of GridNavi and point-robot VariBAD runs: one group, table and figure folder
    per env family (they were mixed into one group, which failed on the episode counts)."""
    folder = tmp_path / "runs"
    shutil.copytree(runs["varibad"], folder / "gridworld")
    run_training(
        compose_config(
            [
                "env=point_robot_sparse",
                "env.num_envs=2",
                "env.episode_length=10",
                "algo.ppo.minibatches=2",
                "train.total_frames=60",
                "train.eval_tasks=4",
                "train.progress_bar=false",
                "train.figures=false",
            ]
        ),
        folder / "point_robot",
    )
    out = tmp_path / "summary"
    eval_main([f"run_dir={folder}", "tasks=21", f"out={out}"])
    summary = json.loads(out.with_suffix(".json").read_text())
    assert list(summary["envs"]) == ["gridworld", "point_robot_sparse"]
    assert summary["envs"]["gridworld"]["varibad"]["seeds"] == [0]
    assert len(summary["envs"]["gridworld"]["varibad"]["mean"]) == 4
    assert len(summary["envs"]["point_robot_sparse"]["varibad"]["mean"]) == 3
    table = out.with_suffix(".md").read_text()
    assert "### gridworld" in table and "### point_robot_sparse" in table
    assert table.count("| VariBAD |") == 2

    figures = tmp_path / "figs"
    plot_main([f"run_dir={folder}", f"out={figures}"])
    assert "fig4_per_episode.png" in _figures(figures / "gridworld")
    assert "fig4_per_episode.png" in _figures(figures / "point_robot_sparse")
    # a mixed list is refused by aggregate itself, naming the families
    with pytest.raises(ValueError, match="several env families"):
        aggregate(summary["runs"])


def test_eval_main_folder_without_runs_exits_2(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exc:
        eval_main([f"run_dir={tmp_path / 'empty'}", f"run_dir={tmp_path / 'empty'}"])
    assert exc.value.code == 2
    assert "bamdp-eval: no run (a folder with config.json) under" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        eval_main([f"run_dir={tmp_path / 'empty'}", f"run_dir={tmp_path / 'missing'}"])
    assert exc.value.code == 2
    assert "missing holds no config.json" in capsys.readouterr().err
    assert not list(tmp_path.rglob("meta_test*"))


def test_eval_main_single_run_unchanged(runs, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(runs["varibad"], run_dir)
    eval_main([f"run_dir={run_dir}", "tasks=21"])
    report = json.loads((run_dir / "meta_test.json").read_text())
    assert report["run_dir"] == str(run_dir) and report["frames"] == 480
    assert report["num_tasks"] == 21 and report["episodes"] == 4 and len(report["mean"]) == 4
    assert (run_dir / "meta_test.md").read_text().startswith("| episode | return (mean +- s.e.) |")
    assert not (run_dir / "meta_test_summary.json").exists()
    assert not (tmp_path / "meta_test_summary.json").exists()


# -- bamdp-plot --------------------------------------------------------------------------------
def _figures(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.suffix in (".png", ".pdf")}


def test_plot_main_on_a_folder_writes_every_figure(runs, tmp_path, capsys):
    out = tmp_path / "figs"
    plot_main([f"run_dir={runs['folder']}", f"out={out}", "goal=4,2"])
    expected = {f"{stem}{suffix}" for stem in FIGURES for suffix in (".png", ".pdf")}
    assert _figures(out) == expected
    for name in expected:
        assert (out / name).stat().st_size > 0
        if name.endswith(".pdf"):
            assert (out / name).read_bytes()[:5] == b"%PDF-"
    printed = capsys.readouterr().out
    assert printed.count("bamdp-plot: wrote ") == 8
    assert not (runs["folder"] / "figures").exists()


def test_plot_main_on_an_oracle_run_draws_only_fig4(runs, tmp_path, capsys):
    run_dir = tmp_path / "oracle"
    shutil.copytree(runs["oracle"], run_dir)
    plot_main([f"run_dir={run_dir}"])  # default out: <run_dir>/figures
    names = {f"{stem}{suffix}" for stem in FIGURES[:2] for suffix in (".png", ".pdf")}
    assert _figures(run_dir / "figures") == names
    assert all((run_dir / "figures" / n).stat().st_size > 0 for n in names)


@pytest.mark.parametrize("goal", ["1", "a,b", "1,2,3"])
def test_plot_main_bad_goal_exits_2(runs, tmp_path, capsys, goal):
    with pytest.raises(SystemExit) as exc:
        plot_main([f"run_dir={runs['oracle']}", f"goal={goal}", f"out={tmp_path / 'f'}"])
    assert exc.value.code == 2
    assert f"bamdp-plot: goal must be two integers x,y (got {goal!r})" in capsys.readouterr().err
    assert not (tmp_path / "f").exists()


def test_plot_main_usage_errors_exit_2(tmp_path, capsys):
    for argv in ([], [f"out={tmp_path}"], [f"run_dir={tmp_path}", "colour=red"]):
        with pytest.raises(SystemExit) as exc:
            plot_main(argv)
        assert exc.value.code == 2
        assert PLOT_USAGE in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        plot_main([f"run_dir={tmp_path}"])  # a folder without runs
    assert exc.value.code == 2
    assert "bamdp-plot: no run" in capsys.readouterr().err


def test_plot_console_script(tmp_path):
    script = BIN / "bamdp-plot"
    assert script.is_file() and os.access(script, os.X_OK)
    proc = subprocess.run(
        [str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 2
    assert "usage: bamdp-plot run_dir=" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- benchmarks/gridworld_baselines.py ---------------------------------------------------------
def test_gridworld_baselines_end_to_end_and_skips_finished_runs(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("gridworld_baselines", BASELINES)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    runs_dir, out = tmp_path / "runs", tmp_path / "out"
    argv = [
        "--seeds",
        "0",
        "--algos",
        "oracle",
        "random",
        "--frames",
        "480",
        "--jobs",
        "2",
        "--runs-dir",
        str(runs_dir),
        "--out",
        str(out),
        "--eval-tasks",
        "21",
        "--override",
        "env.num_envs=4",
        "algo.ppo.minibatches=4",
        "train.eval_tasks=21",
    ]
    module.main(argv)
    first = capsys.readouterr().out
    assert "start  " in first and first.count("done   ") == 2

    report = json.loads((out / "gridworld_baselines.json").read_text())
    assert set(report) >= {
        "command",
        "environment",
        "env",
        "eval_tasks",
        "bayes_optimal_dp",
        "algorithms",
        "frames_budget",
    }
    assert "--frames 480" in report["command"] and "gridworld_baselines.py" in report["command"]
    assert report["frames_budget"] == 480 and report["eval_tasks"] == 21
    assert report["env"] == {
        "name": "gridworld",
        "grid_size": 5,
        "episode_length": 15,
        "episodes": 4,
    }
    assert report["bayes_optimal_dp"] == pytest.approx(BayesOptimalGridNavi().expected_returns())
    assert list(report["algorithms"]) == ["oracle", "random"]
    assert report["algorithms"]["oracle"]["frames"] == [480]
    assert report["algorithms"]["random"]["frames"] == [0]
    table = (out / "gridworld_baselines.md").read_text().splitlines()
    assert len(table) == 4 and table[2].startswith("| Oracle |")
    assert table[3].startswith("| Random |")
    assert {"fig4_per_episode.png", "fig4_learning_curves.pdf"} <= _figures(out)
    assert not (out / "fig3a_belief_rollout.png").exists()  # no VariBAD run

    run = runs_dir / "oracle" / "seed0"
    log, checkpoint = run / "train.log", run / "checkpoints" / "last.pt"
    assert "480 frames" in log.read_text()
    stamps = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in (log, checkpoint)}
    ref_checkpoint = runs_dir / "random" / "seed0" / "checkpoints" / "last.pt"
    ref_stamp = ref_checkpoint.stat().st_mtime_ns

    module.main(argv)  # every run is finished: only evaluated again
    second = capsys.readouterr().out
    assert "start  " not in second
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in (log, checkpoint)} == stamps
    assert ref_checkpoint.stat().st_mtime_ns == ref_stamp
    again = json.loads((out / "gridworld_baselines.json").read_text())
    assert again["algorithms"]["oracle"]["mean"] == report["algorithms"]["oracle"]["mean"]


def test_baselines_benchmark_runs_another_family_with_its_tuning(tmp_path, capsys):
    """``--env``: the same comparison on a continuous family, named after it, tuned for it."""
    spec = importlib.util.spec_from_file_location("gridworld_baselines", BASELINES)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    runs_dir, out = tmp_path / "runs", tmp_path / "out"
    module.main(
        [
            "--env",
            "point_robot_sparse",
            "--seeds",
            "0",
            "--algos",
            "oracle",
            "--frames",
            "1200",
            "--runs-dir",
            str(runs_dir),
            "--out",
            str(out),
            "--eval-tasks",
            "4",
            "--override",
            "env.num_envs=4",
            "env.episode_length=10",
            "algo.ppo.minibatches=4",
            "train.eval_tasks=4",
        ]
    )
    capsys.readouterr()
    report = json.loads((out / "point_robot_sparse_baselines.json").read_text())
    assert report["env"]["name"] == "point_robot_sparse" and report["bayes_optimal_dp"] is None
    assert report["algorithms"]["oracle"]["frames"] == [1200]
    assert (out / "point_robot_sparse_baselines.md").read_text().count("| Oracle |") == 1
    config = json.loads((runs_dir / "oracle" / "seed0" / "config.json").read_text())
    assert config["algo"]["ppo"]["hidden"] == [128, 128, 128]  # tuning/_point_robot.yaml
    assert config["algo"]["ppo"]["normalize_reward"] is True
