"""A task family that is not shipped gets everything the shipped ones get (issue 16).

``tests/user_families/windy_grid.py`` (a grid whose dynamics depend on the task) is trained by
``Trainer`` from Python, registered through the public call, and by ``bamdp-train`` through its
import path; checkpointed, resumed, meta-tested (``bamdp-eval``) and plotted (``bamdp-plot``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from torchrl_bamdp.configs import ConfigError, load_config
from torchrl_bamdp.registry import register_task_family, unregister_task_family
from torchrl_bamdp.trainers import Trainer

FAMILIES = Path(__file__).resolve().parents[1] / "user_families"
BIN = Path(sys.executable).parent
ENV = {
    "num_envs": 8,
    "episode_length": 8,
    "episodes_per_task": 2,
}
# Figures on: a registered family's figures are part of what this file checks.
TRAIN = {"total_frames": 256, "eval_tasks": 16, "eval_interval": 1, "progress_bar": False}


@pytest.fixture
def windy(monkeypatch):
    monkeypatch.syspath_prepend(str(FAMILIES))
    from windy_grid import make_env

    register_task_family("windy", make_env, description="test-only windy grid")
    yield make_env
    unregister_task_family("windy")


def test_registered_family_trains_checkpoints_resumes_and_meta_tests(windy, tmp_path):
    config = load_config(
        {"env": {"name": "windy", **ENV}, "algo": {"ppo": {"minibatches": 4}}, "train": TRAIN}
    )
    assert config.reward_decoder == "mse" and config.policy_belief == "latent"  # generic
    trainer = Trainer(config, tmp_path / "run")
    assert type(trainer.env.task_env).__name__ == "WindyGridEnv"
    result = trainer.train()
    assert result["frames"] == 256 and len(result["eval"]["mean"]) == 2
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    assert (tmp_path / "run" / "figures" / "fig4_learning_curves.png").is_file()

    resumed = load_config(
        {
            "env": {"name": "windy", **ENV},
            "algo": {"ppo": {"minibatches": 4}},
            "train": {**TRAIN, "total_frames": 384},
        }
    )
    trainer = Trainer(resumed, tmp_path / "run")
    assert trainer.frames == 256  # continued from the checkpoint
    assert trainer.train()["frames"] == 384
    evaluation = trainer.evaluate(num_tasks=16, episodes=3)
    assert evaluation.returns.shape == (16, 3)


def test_an_unregistered_name_names_the_registry():
    with pytest.raises(ConfigError, match="not a registered task family") as err:
        load_config({"env": {"name": "windy"}})
    assert "env.factory" in str(err.value) and "register_task_family" in str(err.value)


def test_a_bad_factory_path_fails_at_config_load(monkeypatch):
    monkeypatch.syspath_prepend(str(FAMILIES))
    with pytest.raises(ConfigError, match="cannot import module 'no_such_module'"):
        load_config({"env": {"name": "x", "factory": "no_such_module:make_env"}})
    with pytest.raises(ConfigError, match="has no 'make_envs'"):
        load_config({"env": {"name": "x", "factory": "windy_grid:make_envs"}})
    with pytest.raises(ConfigError, match="must be an import path 'package.module:function'"):
        load_config({"env": {"name": "x", "factory": "windy_grid.make_env"}})
    with pytest.raises(ConfigError, match="options of a task family of your own"):
        load_config({"env": {"name": "gridworld", "kwargs": {"size": 3}}})


def test_a_factory_option_it_does_not_take_is_refused(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(FAMILIES))
    config = load_config(
        {
            "env": {"name": "windy", "factory": "windy_grid:make_env", "kwargs": {"sise": 3}},
            "train": TRAIN,
        }
    )
    with pytest.raises(
        ValueError, match=r"unknown option\(s\) \['sise'\]; windy accepts \['size'\]"
    ):
        Trainer(config, tmp_path / "run")


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(FAMILIES), env.get("PYTHONPATH", "")]),
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        MPLBACKEND="Agg",
    )
    script, *rest = args
    return subprocess.run(
        [str(BIN / script), *rest], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


def test_cli_trains_resumes_evaluates_and_plots_a_family_by_import_path(tmp_path):
    run_dir = tmp_path / "run"
    common = [
        "env=custom",
        "env.name=windy",
        "env.factory=windy_grid:make_env",
        "+env.kwargs.size=3",
        "env.num_envs=8",
        "env.episode_length=8",
        "algo.ppo.minibatches=4",
        "train.eval_tasks=16",
        "train.progress_bar=false",
        "train.figures=false",
    ]
    proc = run(["bamdp-train", *common, "train.total_frames=128", f"run_dir={run_dir}"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["env"]["factory"] == "windy_grid:make_env" and saved["env"]["kwargs"] == {
        "size": 3
    }
    proc = run(["bamdp-train", f"resume={run_dir}", "train.total_frames=256"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "256 frames" in proc.stdout
    proc = run(["bamdp-eval", f"run_dir={run_dir}", "tasks=16", "episodes=3"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((run_dir / "meta_test.json").read_text())
    assert report["frames"] == 256 and len(report["mean"]) == 3
    proc = run(["bamdp-plot", f"run_dir={run_dir}", f"out={tmp_path / 'figs'}"], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "figs" / "fig4_per_episode.png").is_file()


def test_cli_custom_env_without_a_factory_says_what_to_set(tmp_path):
    proc = run(["bamdp-train", "env=custom", f"run_dir={tmp_path / 'run'}"], tmp_path)
    assert proc.returncode == 2
    assert "env.name='custom' is not a registered task family" in proc.stderr
    assert "env.factory='package.module:function'" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_build_agent_checks_the_config_against_the_env(windy):
    from torchrl_bamdp.envs import make_env
    from torchrl_bamdp.trainers import build_agent

    env = make_env("windy", num_envs=2, episode_length=8, episodes_per_task=2)
    ok = load_config({"env": {"name": "windy", **ENV}})
    assert build_agent(ok, env).name == "varibad"
    with pytest.raises(ConfigError, match="config.env.episode_length=20 but the env has 8"):
        build_agent(load_config({"env": {"name": "windy", "episodes_per_task": 2}}), env)
    # the default config (GridNavi's) on a user env: it would pick the per-cell decoder
    grid = load_config({"env": {"episode_length": 8, "episodes_per_task": 2}})
    with pytest.raises(ConfigError) as err:
        build_agent(grid, env)
    assert "needs a GridNavi task env" in str(err.value) and "WindyGridEnv" in str(err.value)
    with pytest.raises(ConfigError, match="build_agent needs a BAMDPEnv"):
        build_agent(ok, env.task_env)
