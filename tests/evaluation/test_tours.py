"""GridNavi tours: true cells per step, returns that agree with the meta-test, the CLI
(``python -m torchrl_bamdp.trainers.runs tours``)."""

from __future__ import annotations

import json

import pytest
import torch
from torchrl.envs import TransformedEnv

from torchrl_bamdp.configs import config_to_dict, load_config
from torchrl_bamdp.envs import make_env
from torchrl_bamdp.evaluation.meta_test import meta_test
from torchrl_bamdp.evaluation.tours import GoalTour, format_tours, gridnavi_tours
from torchrl_bamdp.policies import BayesOptimalPolicy, uniform_random_policy
from torchrl_bamdp.trainers import Trainer
from torchrl_bamdp.trainers.runs import main
from torchrl_bamdp.transforms import exact_belief_transforms


def bayes_optimal_env(episodes: int = 2) -> TransformedEnv:
    base = make_env(num_envs=21, episodes_per_task=episodes, stratified=True)
    return TransformedEnv(base, exact_belief_transforms(grid_size=5))


def test_bayes_optimal_tours_rule_out_14_cells_and_leave_a_sweepable_set():
    env = bayes_optimal_env()
    tours = gridnavi_tours(env, BayesOptimalPolicy.from_env(env))
    assert sorted(t.goal for t in tours) == sorted(
        (x, y) for x in range(5) for y in range(5) if x > 1 or y > 1
    )
    means = [sum(t.returns[k] for t in tours) / 21 for k in range(2)]
    assert means == pytest.approx([4.0, 232.5 / 21], abs=1e-5)
    missed = [t for t in tours if t.found_at[0] is None]
    assert len(missed) == 7  # episode 1 rules out 14 of the 21 cells
    left = {frozenset(t.unvisited_after(1, grid_size=5)) for t in missed}
    assert left == {frozenset({(2, 0), (3, 0), (4, 0), (4, 1), (4, 2), (4, 3), (4, 4)})}
    for tour in missed:  # episode 2 walks a shortest path to each of them
        x, y = tour.goal
        assert tour.found_at[1] == x + y


def test_the_last_step_of_an_episode_shows_the_cell_reached_not_the_start():
    env = bayes_optimal_env()
    tours = {t.goal: t for t in gridnavi_tours(env, BayesOptimalPolicy.from_env(env))}
    # (1, 2) is the last cell of the Bayes-optimal episode-1 tour: found on step 15, after which
    # the env puts the agent back on (0, 0).
    assert tours[(1, 2)].found_at == (15, 3)
    assert tours[(1, 2)].paths[0][-1] == (1, 2)
    assert tours[(1, 2)].returns[0] == pytest.approx(1.0 - 14 * 0.1)
    for tour in tours.values():
        for path in tour.paths:  # every step moves to a neighbour (or stays)
            cells = [(0, 0), *path]
            pairs = zip(cells[:-1], cells[1:], strict=True)
            steps = [abs(a[0] - b[0]) + abs(a[1] - b[1]) for a, b in pairs]
            assert max(steps) <= 1


def test_tour_returns_equal_the_meta_test_returns_of_the_same_policy():
    env = make_env(num_envs=21, episodes_per_task=3, stratified=True)
    tours = gridnavi_tours(env, uniform_random_policy(env.action_spec.n, seed=3), seed=7)
    policy = uniform_random_policy(env.action_spec.n, seed=3)
    result = meta_test(env, policy, episodes=3, episode_length=15, seed=7)
    assert torch.tensor([t.returns for t in tours]) == pytest.approx(result.returns, abs=1e-5)
    for tour in tours:  # a return is -0.1 per step plus 1.1 per step on the goal
        for path, ret in zip(tour.paths, tour.returns, strict=True):
            hits = sum(cell == tour.goal for cell in path)
            assert ret == pytest.approx(-1.5 + 1.1 * hits, abs=1e-5)


def test_format_tours_lists_every_goal_and_the_mean_returns():
    tours = [
        GoalTour((2, 0), (((1, 0), (2, 0)), ((1, 0), (2, 0))), (0.9, 0.9)),
        GoalTour((0, 2), (((1, 0), (2, 0)), ((0, 1), (0, 2))), (-0.2, 0.9)),
    ]
    text = format_tours(tours, grid_size=3)
    lines = text.splitlines()
    assert lines[1] == "02 | - 2 | -0.20, 0.90 | 10 20 | 02 12 21 22"
    assert lines[2] == "20 | 2 2 | 0.90, 0.90 | 10 20 | 02 12 21 22"
    assert lines[-1] == "mean return per episode: 0.350 0.900"


def test_main_prints_a_runs_tours_next_to_the_bayes_optimal_ones(tmp_path, capsys):
    config = load_config(
        {
            "env": {"num_envs": 4},
            "algo": {"ppo": {"minibatches": 4}, "elbo": {"batch_trajectories": 8}},
            "train": {
                "total_frames": 240,
                "eval_tasks": 21,
                "progress_bar": False,
                "figures": False,
            },
        }
    )
    Trainer(config, tmp_path / "run").train()
    main(["tours", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert out.startswith(f"varibad ({tmp_path / 'run'})")
    assert "Bayes-optimal (exact DP)" in out
    assert out.count("mean return per episode") == 2
    assert out.rstrip().endswith("mean return per episode: 4.000 11.071")


def test_main_refuses_a_run_of_another_task_family(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    config = load_config({"env": {"name": "point_robot_sparse"}})
    (run_dir / "config.json").write_text(json.dumps(config_to_dict(config)))
    with pytest.raises(SystemExit, match="env.name='point_robot_sparse'"):
        main(["tours", str(run_dir)])


def test_main_refuses_fewer_than_one_episode(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["tours", str(tmp_path), "--episodes", "0"])
    assert info.value.code == 2
    assert "--episodes must be >= 1 (got 0)" in capsys.readouterr().err
