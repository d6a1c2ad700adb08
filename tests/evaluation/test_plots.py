"""Tests of the pure plotting functions in ``torchrl_bamdp.evaluation.plots``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from torchrl_bamdp.evaluation.plots import (  # noqa: E402
    BeliefRollout,
    EvalCurves,
    load_eval_curves,
    plot_belief_rollout,
    plot_latents,
    plot_learning_curves,
    plot_per_episode_returns,
)


def _check_written(paths: list[Path], stem: Path, min_px: int = 200) -> np.ndarray:
    assert paths == [stem.parent / f"{stem.name}.png", stem.parent / f"{stem.name}.pdf"]
    for path in paths:
        assert path.is_file() and path.stat().st_size > 0
    assert paths[1].read_bytes()[:5] == b"%PDF-"
    image = mpimg.imread(paths[0])
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert min(image.shape[:2]) >= min_px and max(image.shape[:2]) < 6000
    assert image[..., :3].std() > 0.01  # something was drawn
    return image


def _grid_rollout(grid_size: int, episode_length: int, episodes: int, seed: int = 0):
    """A random walk of ``episodes x episode_length`` steps, reset to (0, 0) at episode ends."""
    gen = np.random.default_rng(seed)
    moves = np.array([(0, 0), (0, 1), (1, 0), (0, -1), (-1, 0)])
    steps = episode_length * episodes
    positions = np.zeros((steps + 1, 2), dtype=np.int64)
    done = np.zeros(steps + 1, dtype=bool)
    cell = np.zeros(2, dtype=np.int64)
    for t in range(1, steps + 1):
        cell = np.clip(cell + moves[gen.integers(5)], 0, grid_size - 1)
        if t % episode_length == 0:
            done[t] = True
            if t < steps:
                cell = np.zeros(2, dtype=np.int64)
        positions[t] = cell
    probs = gen.random((steps + 1, grid_size * grid_size))
    probs /= probs.sum(1, keepdims=True)
    return positions, probs, done


# ---------------------------------------------------------------------------------------------
# Fig 3a
# ---------------------------------------------------------------------------------------------
def test_belief_rollout_small_grid(tmp_path):
    positions, probs, done = _grid_rollout(grid_size=3, episode_length=3, episodes=2)
    stem = tmp_path / "figs" / "fig3a"  # parent directory does not exist yet
    paths = plot_belief_rollout(positions, probs, (2, 2), done, stem, grid_size=3, title="t")
    _check_written(paths, stem)


def test_belief_rollout_accepts_torch_and_exact(tmp_path):
    positions, probs, done = _grid_rollout(grid_size=3, episode_length=3, episodes=2)
    stem = tmp_path / "fig3a_exact"
    paths = plot_belief_rollout(
        torch.as_tensor(positions),
        torch.as_tensor(probs, dtype=torch.float32),
        torch.tensor([2, 1]),
        torch.as_tensor(done).unsqueeze(-1),  # TorchRL's [T+1, 1]
        stem,
        exact_probs=torch.as_tensor(probs).reshape(-1, 3, 3),  # square [T+1, x, y] form
        grid_size=3,
    )
    _check_written(paths, stem)


def test_belief_rollout_exact_adds_rows(tmp_path):
    positions, probs, done = _grid_rollout(grid_size=3, episode_length=3, episodes=2)
    single = plot_belief_rollout(positions, probs, (2, 2), done, tmp_path / "a", grid_size=3)
    both = plot_belief_rollout(
        positions, probs, (2, 2), done, tmp_path / "b", exact_probs=probs, grid_size=3
    )
    h_single = mpimg.imread(single[0]).shape[0]
    h_both = mpimg.imread(both[0]).shape[0]
    assert h_both > 1.5 * h_single


def test_belief_rollout_of_a_whole_gridnavi_task(tmp_path):
    # (How long it takes is no test's business: timed checks fail on a loaded machine.)
    positions, probs, done = _grid_rollout(grid_size=5, episode_length=15, episodes=4)
    stem = tmp_path / "fig3a_full"
    paths = plot_belief_rollout(
        positions, probs, (3, 4), done, stem, exact_probs=probs, grid_size=5
    )
    _check_written(paths, stem, min_px=500)


def test_belief_rollout_max_steps(tmp_path):
    positions, probs, done = _grid_rollout(grid_size=5, episode_length=15, episodes=4)
    full = plot_belief_rollout(positions, probs, (3, 4), done, tmp_path / "full")
    cut = plot_belief_rollout(positions, probs, (3, 4), done, tmp_path / "cut", max_steps=30)
    assert mpimg.imread(cut[0]).shape[0] < mpimg.imread(full[0]).shape[0]  # 2 rows, not 4


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"positions": np.zeros((7, 3))}, "positions"),
        ({"positions": np.full((7, 2), 5)}, "positions"),  # off the 3x3 grid
        ({"reward_probs": np.zeros((7, 8))}, "reward_probs"),
        ({"reward_probs": np.zeros((6, 9))}, "reward_probs"),
        ({"exact_probs": np.zeros((7, 4))}, "exact_probs"),
        ({"episode_done": np.zeros(6, dtype=bool)}, "episode_done"),
        ({"goal": (1, 2, 3)}, "goal"),
        ({"grid_size": 0}, "grid_size"),
        ({"max_steps": -1}, "max_steps"),
    ],
)
def test_belief_rollout_bad_shapes(tmp_path, kwargs, name):
    positions, probs, done = _grid_rollout(grid_size=3, episode_length=3, episodes=2)
    args = {
        "positions": positions,
        "reward_probs": probs,
        "goal": (2, 2),
        "episode_done": done,
        "path_stem": tmp_path / "bad",
        "grid_size": 3,
        **kwargs,
    }
    with pytest.raises(ValueError, match=name):
        plot_belief_rollout(**args)
    assert not (tmp_path / "bad.png").exists()


# ---------------------------------------------------------------------------------------------
# Fig 3b
# ---------------------------------------------------------------------------------------------
def test_latents(tmp_path):
    steps = 31
    gen = np.random.default_rng(1)
    mean = torch.as_tensor(gen.normal(size=(steps, 5)))
    logvar = -torch.linspace(0, 3, steps)[:, None].repeat(1, 5)
    done = np.zeros(steps, dtype=bool)
    done[[15, 30]] = True
    stem = tmp_path / "sub" / "fig3b"
    _check_written(plot_latents(mean, logvar, done, stem, title="latents"), stem)


def test_latents_bad_shapes(tmp_path):
    done = np.zeros(11, dtype=bool)
    with pytest.raises(ValueError, match="logvar"):
        plot_latents(np.zeros((11, 4)), np.zeros((11, 3)), done, tmp_path / "x")
    with pytest.raises(ValueError, match="mean"):
        plot_latents(np.zeros((11, 4, 2)), np.zeros((11, 4, 2)), done, tmp_path / "x")
    with pytest.raises(ValueError, match="episode_done"):
        plot_latents(np.zeros((11, 4)), np.zeros((11, 4)), done[:-1], tmp_path / "x")


def test_belief_rollout_container(tmp_path):
    positions, probs, done = _grid_rollout(grid_size=3, episode_length=3, episodes=2)
    rollout = BeliefRollout(
        positions, probs, (2, 2), done, mean=np.zeros((7, 2)), logvar=np.zeros((7, 2)), grid_size=3
    )
    _check_written(rollout.plot_belief(tmp_path / "c3a"), tmp_path / "c3a")
    _check_written(rollout.plot_latents(tmp_path / "c3b"), tmp_path / "c3b")
    with pytest.raises(ValueError, match="logvar"):
        BeliefRollout(positions, probs, (2, 2), done, grid_size=3).plot_latents(tmp_path / "n")


# ---------------------------------------------------------------------------------------------
# Fig 4 and learning curves
# ---------------------------------------------------------------------------------------------
def test_per_episode_returns(tmp_path):
    nan = float("nan")
    results = {
        "VariBAD": (torch.tensor([2.0, 6.5, 7.0, 7.1]), [0.3, 0.2, 0.2, 0.1]),
        "RL2": (np.array([1.0, 4.0, 5.5, 6.0]), [0.4, nan, 0.3, 0.2]),
        "one seed": ([1.5, 2.0, 2.5, 3.0], [nan] * 4),
    }
    references = {"Bayes-optimal": [2.6, 6.9, 7.3, 7.3], "oracle": 8.2}
    stem = tmp_path / "fig4"
    paths = plot_per_episode_returns(results, stem, references=references, title="GridNavi")
    _check_written(paths, stem)


def test_per_episode_returns_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="results"):
        plot_per_episode_returns({}, tmp_path / "x")
    with pytest.raises(ValueError, match="'VariBAD'.*stderr"):
        plot_per_episode_returns({"VariBAD": ([1.0, 2.0], [0.1])}, tmp_path / "x")
    with pytest.raises(ValueError, match="'VariBAD'"):
        plot_per_episode_returns({"VariBAD": ([1.0, 2.0],)}, tmp_path / "x")
    with pytest.raises(ValueError, match="references"):
        plot_per_episode_returns(
            {"a": ([1.0], [0.1])}, tmp_path / "x", references={"r": [[1.0, 2.0]]}
        )


def test_learning_curves(tmp_path):
    frames = np.arange(0, 100_001, 10_000)
    curves = {
        "VariBAD": (frames, np.linspace(-5, 20, frames.size), np.full(frames.size, 1.0)),
        "RL2": (frames.tolist(), np.linspace(-5, 12, frames.size), None),
        "two": (frames, np.linspace(0, 5, frames.size)),
    }
    stem = tmp_path / "curves.v1"  # a dot in the stem is kept
    paths = plot_learning_curves(curves, stem, references={"Bayes-optimal": 27.0})
    _check_written(paths, stem)


def test_learning_curves_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="curves"):
        plot_learning_curves({}, tmp_path / "x")
    with pytest.raises(ValueError, match="'a'.*mean"):
        plot_learning_curves({"a": ([0, 1, 2], [1.0, 2.0], None)}, tmp_path / "x")
    with pytest.raises(ValueError, match="'a'.*stderr"):
        plot_learning_curves({"a": ([0, 1], [1.0, 2.0], [0.1])}, tmp_path / "x")
    with pytest.raises(ValueError, match="references"):
        plot_learning_curves({"a": ([0, 1], [1.0, 2.0])}, tmp_path / "x", {"r": [1.0, 2.0]})


def test_suffix_in_stem_is_dropped(tmp_path):
    paths = plot_learning_curves({"a": ([0, 1], [1.0, 2.0])}, tmp_path / "c.png")
    assert [p.name for p in paths] == ["c.png", "c.pdf"]


# ---------------------------------------------------------------------------------------------
# load_eval_curves
# ---------------------------------------------------------------------------------------------
def _write_run(run_dir: Path, points: list[tuple[int, float]], torn: bool = False) -> Path:
    run_dir.mkdir(parents=True)
    lines = [
        json.dumps(
            {
                "iteration": i,
                "frames": frames,
                "total_mean": total,
                "mean": [total / 2, total / 2],
                "stderr": [0.1, 0.1],
                "num_tasks": 21,
                "episodes": 2,
            }
        )
        for i, (frames, total) in enumerate(points)
    ]
    text = "\n".join(lines) + "\n"
    if torn:
        text += '{"iteration": 99, "frames": 9999, "total_m'  # killed mid-write
    (run_dir / "eval.jsonl").write_text(text)
    return run_dir


def test_load_eval_curves_mean_and_stderr(tmp_path):
    a = _write_run(tmp_path / "a", [(0, -6.0), (100, 1.0), (200, 4.0)], torn=True)
    b = _write_run(tmp_path / "b", [(0, -4.0), (100, 3.0), (200, 8.0)])
    c = _write_run(tmp_path / "c", [(0, -5.0), (100, 2.0), (200, 6.0), (300, 9.0)])
    curves = load_eval_curves([a, str(b), c])
    assert isinstance(curves, EvalCurves)
    frames, mean, stderr = curves
    np.testing.assert_array_equal(frames, [0, 100, 200])  # 300 is only in run c
    np.testing.assert_allclose(mean, [-5.0, 2.0, 6.0])
    # std(ddof=1) of (-6,-4,-5) = 1, of (1,3,2) = 1, of (4,8,6) = 2; divided by sqrt(3).
    np.testing.assert_allclose(stderr, np.array([1.0, 1.0, 2.0]) / math.sqrt(3))


def test_load_eval_curves_single_run(tmp_path):
    a = _write_run(tmp_path / "a", [(0, -6.0), (100, 1.0)], torn=True)
    frames, mean, stderr = load_eval_curves(a)
    np.testing.assert_array_equal(frames, [0, 100])
    np.testing.assert_allclose(mean, [-6.0, 1.0])
    assert np.isnan(stderr).all() and stderr.shape == (2,)


def test_load_eval_curves_disjoint_schedules_interpolate(tmp_path):
    a = _write_run(tmp_path / "a", [(0, 0.0), (100, 10.0), (200, 20.0)])
    b = _write_run(tmp_path / "b", [(50, 0.0), (150, 10.0)])
    frames, mean, _ = load_eval_curves([a, b])
    np.testing.assert_array_equal(frames, [50, 150])  # the shortest run's frames
    np.testing.assert_allclose(mean, [(5.0 + 0.0) / 2, (15.0 + 10.0) / 2])


def test_load_eval_curves_errors(tmp_path):
    with pytest.raises(ValueError, match="run_dirs"):
        load_eval_curves([])
    with pytest.raises(FileNotFoundError):
        load_eval_curves([tmp_path / "missing"])
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "eval.jsonl").write_text('{"frames": 1, "tot\n')
    with pytest.raises(ValueError, match="no valid"):
        load_eval_curves([tmp_path / "torn"])


def test_curves_roundtrip_to_plot(tmp_path):
    a = _write_run(tmp_path / "a", [(0, -6.0), (100, 1.0), (200, 4.0)])
    b = _write_run(tmp_path / "b", [(0, -4.0), (100, 3.0), (200, 8.0)])
    stem = tmp_path / "lc"
    _check_written(plot_learning_curves({"VariBAD": load_eval_curves([a, b])}, stem), stem)
