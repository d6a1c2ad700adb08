"""Every tutorial runs end to end (with tiny budgets) and renders as a notebook.

Each ``tutorials/0*.py`` is executed as a script in a subprocess with
``BAMDP_TUTORIAL_FAST=1`` (tiny budgets) and ``BAMDP_TUTORIAL_OUT`` pointing to a temporary
folder; the test checks its exit code, the figures it wrote and the key numbers it printed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TUTORIALS = sorted((ROOT / "tutorials").glob("0*.py"))

# Figures (PNG, relative to the output folder) and printed lines a tutorial must produce. A
# tutorial without an entry here is still run and must exit 0.
EXPECTED = {
    "01_bamdp_basics": {
        "figures": [
            "goals.png",
            "exact_belief_random_policy.png",
            "exact_belief_bayes_optimal.png",
        ],
        "printed": [
            "21 candidate goals",
            "same seed, same tasks: True",
            "episode_done fired 4 times, TorchRL done 1 time (at t = 59)",
            "Bayes-optimal expected return per episode (DP): 4.000 11.071 11.071 11.071",
            "expected return of walking straight to a known goal: 11.071",
            "BayesOptimalPolicy reproduces the DP values: True",
            "Bayes-optimal policy, candidates left at the end of each episode: [7, 1, 1, 1]",
        ],
    },
    "02_varibad_gridworld": {
        "figures": [
            "learning_curve.png",
            "fig3a_belief_rollout.png",
            "fig3b_latents.png",
            "fig3a_via_trainer.png",
        ],
        "printed": [
            "hyper_state size: 12 = 2 + 5 + 5",
            "Bayes-optimal (exact DP)        4.000     11.071     11.071     11.071     37.214",
            "record_belief_rollout gives the same path as the hand-built rollout: True",
        ],
    },
    "05_wandb_logging": {
        "figures": [
            "run/figures/fig3a_belief_rollout.png",
            "run/figures/fig4_learning_curves.png",
        ],
        "printed": [
            "figures logged as W&B images: ['fig3a_belief_rollout_",
            "per-episode tables, the last one: ['episode', 'mean', 'stderr']",
            "to upload: wandb sync ",
            "resumed at 7680 frames",
            "(one per session), all with id ",
            "gridworld-varibad-seed0-",
            "gridworld-varibad-seed1-",
        ],
    },
    "03_custom_task_family": {
        "figures": ["per_episode_returns.png", "run/figures/fig4_learning_curves.png"],
        "printed": [
            "check_env_specs: passed",
            "goal distribution: [-4, -3, -2, 2, 3, 4]",
            "known-goal return per episode (upper bound): 9.800",
            "reward decoder: mse | policy reads: latent",
            "bamdp-train env=custom env.name=corridor env.factory=my_tasks.corridor:make_corridor "
            "+env.kwargs.half_width=4",
            "checkpoint: run/checkpoints/last.pt",
            "session 2 resumes at 1152 frames",  # half of the fast budget, from the checkpoint
            "session 2: trained to 2304 frames",
            "VariBAD beats random in every episode: True",
        ],
    },
    "04_swap_the_belief": {
        "figures": ["per_episode_returns.png"],
        "printed": [
            "hyper_state size: 27 = 2 (position) + 25 (visit map)",
            "exact DP values: 4.000 11.071 11.071 11.071",
            "registered algorithms: varibad, varibad_original, varibad_switching, rl2, "
            "rl2_original, oracle, belief_oracle, bayes_optimal, random, visit_map",
            "reopened 'visit_map' run at 960 frames, same meta-test: True",
        ],
    },
    "06_beyond_the_paper": {
        "figures": [
            "heldout_split.png",
            "switching_posterior.png",
            "pixel_frames.png",
            "pixel_belief_rollout.png",
        ],
        "printed": [
            # 1. out of distribution
            "heldout split (split_seed=0): 16 training goals, held out: "
            "[(0, 2), (1, 2), (2, 4), (3, 3), (4, 0)]",
            "the split never overlaps: True",
            "Bayes-optimal per episode under heldout_train: 5.58 10.94 10.94 10.94 10.94 10.94",
            "Bayes-optimal per episode under heldout_test: 9.28 11.48 11.48 11.48 11.48 11.48",
            "trained VariBAD on heldout_train for 960 frames",
            "heldout_test   (test, out of distribution):",
            "| episode | VariBAD `heldout_train` | Bayes-optimal `heldout_train` | VariBAD "
            "`heldout_test` | Bayes-optimal `heldout_test` |",
            # 2. task switching
            "SwitchingBAMDPEnv: hazard 0.05, horizon 60, batch torch.Size([8])",
            "check_env_specs: passed",
            "make_env gives the same env: True",
            "TorchRL done fired 8 times (8 rollouts)",
            "exact filter + greedy walk: return per 100 steps",
            # 3. pixels
            "pixel observation: shape (4, 3, 32, 32), dtype torch.uint8",
            "check_env_specs (pixels): passed",
            "frames show the state env's cells: True",
            "algo.cnn.policy=shared: 1 CNN in the encoder, 0 more in the actor and critic",
            "algo.cnn.policy=separate: 1 CNN in the encoder, 1 more in the actor and critic",
            "trained VariBAD on pixel GridNavi for 960 frames",
            "Bayes-optimal per episode:        4.00 11.07 11.07 11.07",
        ],
    },
}


def _run(tutorial: Path, tmp_path: Path) -> tuple[str, Path]:
    out = tmp_path / "out"
    env = {
        **os.environ,
        "BAMDP_TUTORIAL_FAST": "1",
        "BAMDP_TUTORIAL_OUT": str(out),
        "MPLBACKEND": "Agg",
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
    }
    proc = subprocess.run(
        [sys.executable, str(tutorial)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, (
        f"{tutorial.name} exited with {proc.returncode}\n--- stdout ---\n{proc.stdout[-4000:]}"
        f"\n--- stderr ---\n{proc.stderr[-4000:]}"
    )
    return proc.stdout, out


def _numbers(line: str) -> list[float]:
    return [float(x) for x in re.findall(r"-?\d+\.\d+", line)]


def _line(stdout: str, prefix: str) -> str:
    lines = [line for line in stdout.splitlines() if line.strip().startswith(prefix)]
    assert lines, f"no line starting with {prefix!r} in the output:\n{stdout}"
    return lines[-1]


def test_tutorials_are_found():
    assert set(EXPECTED) <= {t.stem for t in TUTORIALS}


def _per_episode(stdout: str, name: str) -> list[float]:
    """The returns of a ``<name> ... | per episode: r1 r2 ...`` line of tutorial 4."""
    for line in stdout.splitlines():
        if line.startswith(f"{name} ") and "per episode:" in line:
            return _numbers(line.split("per episode:")[1])
    raise AssertionError(f"no per-episode line for {name!r} in the output:\n{stdout}")


@pytest.mark.parametrize("tutorial", TUTORIALS, ids=[t.stem for t in TUTORIALS])
def test_tutorial_runs(tutorial: Path, tmp_path: Path):
    stdout, out = _run(tutorial, tmp_path)
    expected = EXPECTED.get(tutorial.stem)
    if expected is None:
        return
    for name in expected["figures"]:
        path = out / name
        assert path.is_file() and path.stat().st_size > 1000, f"missing or empty figure {path}"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for text in expected["printed"]:
        assert text in stdout, f"{text!r} not printed by {tutorial.name}:\n{stdout}"
    assert f"done: tutorial {int(tutorial.stem[:2])}" in stdout
    # Nothing is written outside BAMDP_TUTORIAL_OUT (the subprocess ran in tmp_path).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    if tutorial.stem == "01_bamdp_basics":
        dp = _numbers(_line(stdout, "Bayes-optimal (DP)"))
        env_returns = _numbers(_line(stdout, "BayesOptimalPolicy (env)"))
        assert dp == pytest.approx([4.0, 11.071, 11.071, 11.071], abs=1e-3)
        assert env_returns == dp  # printed with 3 decimals: the policy reproduces the DP
        random = _numbers(_line(stdout, "random policy  "))
        assert len(random) == 4 and max(random) < 0
    if tutorial.stem == "02_varibad_gridworld":
        trainer = _numbers(_line(stdout, "Trainer.evaluate():"))
        ours = _numbers(_line(stdout, "our meta_test:"))
        assert len(ours) == 4 and trainer == ours
    if tutorial.stem == "03_custom_task_family":
        # The user's family was trained by the Trainer: it beats random, and the run directory
        # holds what any run holds.
        learned, random = _numbers(_line(stdout, "learned vs random, total return:"))
        assert learned > random + 1.0, (learned, random)
        assert len(_numbers(_line(stdout, "VariBAD (greedy)"))) == 4  # 3 episodes + total
        saved = json.loads((out / "run" / "config.json").read_text())
        assert saved["env"]["name"] == "corridor" and saved["env"]["kwargs"] == {"half_width": 4}
    if tutorial.stem == "04_swap_the_belief":
        for name in ("varibad", "belief_oracle", "rl2", "oracle", "visit_map", "random"):
            assert len(_per_episode(stdout, name)) == 4
        trainer_bo = _per_episode(stdout, "bayes_optimal")
        assert trainer_bo == pytest.approx([4.0, 11.07, 11.07, 11.07], abs=1e-6)
        for name in ("varibad", "belief_oracle", "rl2", "oracle", "visit_map"):
            saved = json.loads((out / "runs" / name / "config.json").read_text())
            assert saved["algo"]["name"] == name  # the user's agent runs under its own name
    if tutorial.stem == "06_beyond_the_paper":
        from torchrl_bamdp.evaluation.report import check_ood_report

        report = json.loads((out / "ood_report.json").read_text())
        check_ood_report(report)
        assert list(report["distributions"]) == ["heldout_train", "heldout_test"]
        assert report["episodes"] == 6 and report["trained_episodes"] == 4
        saved = json.loads((out / "ood_run" / "config.json").read_text())
        assert saved["env"]["train_tasks"] == "heldout_train"
        for name in ("varibad_switching", "varibad", "belief_oracle"):
            line = _line(stdout, f"{name} ")
            assert "return per 100 steps on the switching env" in line
            assert -10.0 - 1e-6 <= _numbers(line.split(":")[-1])[0] <= 100.0
            saved = json.loads((out / "switching_runs" / name / "config.json").read_text())
            assert saved["env"]["switching_hazard"] == (0.0 if name == "varibad" else 0.05)
        # The pixel agent's meta-test: 4 episodes, each between never and always at the goal.
        returns = _numbers(_line(stdout, "meta-test per episode (21 goals):").split(":")[1])
        assert len(returns) == 4 and all(-1.5 - 1e-6 <= r <= 15.0 for r in returns)
        saved = json.loads((out / "pixel_run" / "config.json").read_text())
        assert (
            saved["env"]["observation"] == "pixels" and saved["algo"]["cnn"]["policy"] == "shared"
        )


@pytest.mark.parametrize("tutorial", TUTORIALS, ids=[t.stem for t in TUTORIALS])
def test_tutorial_is_a_notebook(tutorial: Path):
    jupytext = pytest.importorskip("jupytext")
    notebook = jupytext.read(tutorial)
    kinds = [cell.cell_type for cell in notebook.cells]
    assert kinds.count("markdown") >= 4 and kinds.count("code") >= 4, kinds
    assert notebook.cells[0].cell_type == "markdown"
    assert notebook.cells[0].source.startswith("# Tutorial")
    # Round trip: the notebook written back as a percent script keeps every cell.
    again = jupytext.reads(jupytext.writes(notebook, fmt="py:percent"), fmt="py:percent")
    assert [c.cell_type for c in again.cells] == kinds
