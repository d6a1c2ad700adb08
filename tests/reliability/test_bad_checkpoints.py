"""Corrupt and mismatched checkpoints: a clear CheckpointError (API) or exit code 2 (CLI).

Each message names the checkpoint path, the run (env, algo, seed) and what failed; nothing of
the run directory (config.json, metrics.csv) is rewritten by a failed resume.
"""

from __future__ import annotations

import copy
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from torchrl_bamdp.cli import EXIT_BAD_INPUT, eval_main, run_training
from torchrl_bamdp.configs import config_to_dict, load_config
from torchrl_bamdp.trainers import CheckpointError, Trainer
from torchrl_bamdp.trainers.checkpoint import (
    OPTIONAL_ENTRIES,
    REQUIRED_ENTRIES,
    architecture_differences,
)

RUN = "env=gridworld algo=varibad seed=0"
BIN = Path(sys.executable).parent


def tiny(**changes) -> dict:
    data = {
        "seed": 0,
        "env": {"num_envs": 4},
        "algo": {"ppo": {"minibatches": 4}, "elbo": {"batch_trajectories": 8}},
        "train": {
            "total_frames": 240,
            "eval_tasks": 21,
            "eval_interval": 0,
            "checkpoint_interval": 0,
            "progress_bar": False,
            "figures": False,
        },
    }
    for path, value in changes.items():
        node = data
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return data


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A tiny finished run (240 frames, one checkpoint); tests work on copies."""
    run_dir = tmp_path_factory.mktemp("ckpt") / "run"
    Trainer(load_config(tiny()), run_dir).train()
    return run_dir


@pytest.fixture
def run_dir(trained_run, tmp_path):
    copy_dir = tmp_path / "run"
    shutil.copytree(trained_run, copy_dir)
    return copy_dir


def ckpt(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "last.pt"


def digests(run_dir: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run_dir.iterdir() if p.is_file()
    }


def load_state(run_dir: Path) -> dict:
    return torch.load(ckpt(run_dir), weights_only=False)


# -- corrupt files -----------------------------------------------------------------------------
def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 64)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _not_a_dict(path: Path) -> None:
    torch.save([1, 2, 3], path)


def _missing_entries(path: Path) -> None:
    state = torch.load(path, weights_only=False)
    del state["actor"], state["buffer"]
    torch.save(state, path)


def _config_not_a_dict(path: Path) -> None:
    state = torch.load(path, weights_only=False)
    state["config"] = "gridworld"
    torch.save(state, path)


def _bad_frames(path: Path) -> None:
    state = torch.load(path, weights_only=False)
    state["frames"] = "many"
    torch.save(state, path)


def _bad_optimizer(path: Path) -> None:
    state = torch.load(path, weights_only=False)
    state["ppo_optimizer"] = {"param_groups": []}
    torch.save(state, path)


CORRUPTIONS = {
    "truncated": (_truncate, "corrupt or truncated"),
    "garbage": (_garbage, "corrupt or truncated"),
    "empty": (_empty, "corrupt or truncated"),
    "not_a_dict": (_not_a_dict, "holds a list, not a checkpoint dict"),
    "missing_entries": (_missing_entries, "entries missing: actor, buffer"),
    "config_not_a_dict": (_config_not_a_dict, "'config' entry is a str"),
    "bad_frames": (_bad_frames, "frames/iteration: invalid literal for int()"),
    "bad_optimizer": (_bad_optimizer, "ppo_optimizer:"),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corrupt_checkpoint_is_rejected_clearly(run_dir, kind):
    corrupt, phrase = CORRUPTIONS[kind]
    corrupt(ckpt(run_dir))
    before = digests(run_dir)
    with pytest.raises(CheckpointError) as info:
        Trainer(load_config(tiny(**{"train.total_frames": 480})), run_dir)
    msg = str(info.value)
    assert str(ckpt(run_dir)) in msg, msg
    assert RUN in msg and str(run_dir) in msg, msg
    assert phrase in msg, msg
    assert "\n" not in msg  # one readable line, not a torch dump
    assert digests(run_dir) == before  # config.json, metrics.csv, run_info.json untouched


def test_corrupt_checkpoint_read_only(run_dir):
    _truncate(ckpt(run_dir))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        Trainer(load_config(tiny()), run_dir, read_only=True)


def test_required_entries_match_what_is_saved(run_dir):
    state = load_state(run_dir)
    assert set(REQUIRED_ENTRIES) <= state.keys()
    assert set(state) - set(REQUIRED_ENTRIES) <= set(OPTIONAL_ENTRIES)
    assert {"health", "train_seconds"} <= state.keys()


# -- mismatched architecture / env -------------------------------------------------------------
MISMATCHES = [
    ("algo.encoder.latent_dim", 8, "algo.encoder.latent_dim: checkpoint 5, this run 8"),
    ("algo.encoder.hidden_size", 32, "algo.encoder.hidden_size: checkpoint 64, this run 32"),
    ("algo.ppo.hidden", [32], "algo.ppo.hidden: checkpoint [64, 64], this run [32]"),
    ("algo.ppo.encoder_grad", True, "algo.ppo.encoder_grad: checkpoint False, this run True"),
    ("algo.ppo.time_features", False, "algo.ppo.time_features: checkpoint True, this run False"),
    ("algo.ppo.critic_task", False, "algo.ppo.critic_task: checkpoint True, this run False"),
    ("algo.policy_belief", "latent", "algo.policy_belief: checkpoint 'auto', this run 'latent'"),
    ("algo.decoders.reward", "mse", "decoders.reward: checkpoint 'auto', this run 'mse'"),
    ("env.episode_length", 10, "env.episode_length: checkpoint 15, this run 10"),
    ("env.grid_size", 6, "env.grid_size: checkpoint 5, this run 6"),
]


@pytest.mark.parametrize(("field", "value", "phrase"), MISMATCHES, ids=[m[0] for m in MISMATCHES])
def test_mismatched_checkpoint_is_rejected_before_loading(run_dir, field, value, phrase):
    changes = {field: value}
    if field == "env.grid_size":
        changes["train.eval_stratified"] = False
    if field == "algo.ppo.encoder_grad":
        changes["algo.ppo.minibatches"] = 2
    before = digests(run_dir)
    with pytest.raises(CheckpointError) as info:
        Trainer(load_config(tiny(**changes)), run_dir)
    msg = str(info.value)
    assert str(ckpt(run_dir)) in msg and RUN in msg, msg
    assert "different architecture or env" in msg and phrase in msg, msg
    assert digests(run_dir) == before  # the run's config.json still matches its checkpoint
    # the run itself is intact: its own config resumes it
    assert Trainer(load_config(tiny()), run_dir).frames == 240


def test_non_architecture_changes_are_allowed(run_dir):
    trainer = Trainer(
        load_config(tiny(**{"algo.ppo.lr": 1e-4, "train.total_frames": 480})), run_dir
    )
    assert trainer.frames == 240


def test_state_dict_mismatch_names_the_module(run_dir, tmp_path):
    """A checkpoint whose config claims this architecture but whose weights are another's."""
    other = Trainer(load_config(tiny(**{"algo.ppo.hidden": [32]})), tmp_path / "other")
    state = load_state(run_dir)
    state["actor"] = other.agent.actor.state_dict()
    torch.save(state, ckpt(run_dir))
    with pytest.raises(CheckpointError) as info:
        Trainer(load_config(tiny()), run_dir)
    msg = str(info.value)
    assert str(ckpt(run_dir)) in msg and RUN in msg
    assert "actor: Error(s) in loading state_dict" in msg and "size mismatch for" in msg, msg
    assert "\n" not in msg


def test_architecture_differences_lists_every_field():
    a = config_to_dict(load_config(tiny()))
    b = copy.deepcopy(a)
    b["algo"]["encoder"]["latent_dim"] = 3
    b["algo"]["ppo"]["activation"] = "relu"
    b["algo"]["ppo"]["lr"] = 0.5  # not architecture
    b["seed"] = 7  # not architecture
    assert architecture_differences(a, b) == [
        "algo.encoder.latent_dim: checkpoint 5, this run 3",
        "algo.ppo.activation: checkpoint 'tanh', this run 'relu'",
    ]
    del b["algo"]["decoders"]["task_hidden"]
    assert "algo.decoders.task_hidden: checkpoint [64, 32], this run missing" in (
        architecture_differences(a, b)
    )


LEGACY = {
    "algo.ppo.time_features": False,
    "algo.ppo.critic_task": False,
    "algo.policy_belief": "latent",
}


def test_checkpoint_older_than_a_field_resumes_with_the_old_behaviour(tmp_path):
    """A checkpoint written before time_features, critic_task and policy_belief existed (its
    config lacks them) was trained without them: it resumes with their old values, and a run
    with the new defaults is refused with a message that says why."""
    run_dir = tmp_path / "run"
    Trainer(load_config(tiny(**LEGACY)), run_dir).train()
    state = load_state(run_dir)
    del state["config"]["algo"]["ppo"]["time_features"]
    del state["config"]["algo"]["ppo"]["critic_task"]
    del state["config"]["algo"]["policy_belief"]
    torch.save(state, ckpt(run_dir))
    resumed = Trainer(load_config(tiny(**LEGACY, **{"train.total_frames": 480})), run_dir)
    assert resumed.frames == 240
    assert resumed.train()["frames"] == 480
    state = load_state(run_dir)  # the saved config now records the fields
    assert state["config"]["algo"]["ppo"]["critic_task"] is False
    del state["config"]["algo"]["ppo"]["critic_task"]
    torch.save(state, ckpt(run_dir))
    with pytest.raises(CheckpointError) as info:
        Trainer(load_config(tiny(**{**LEGACY, "algo.ppo.critic_task": True})), run_dir)
    phrase = "checkpoint False (not recorded: older checkpoint), this run True"
    assert f"algo.ppo.critic_task: {phrase}" in str(info.value)


def test_checkpoint_older_than_the_original_options_resumes(tmp_path):
    """A checkpoint written before the original's network options existed (2026-12-01: its
    config lacks encoder.done_input, the decoders' embeddings and the policy's options, some
    inside whole sections) resumes with their old values and is refused with others."""
    run_dir = tmp_path / "run"
    Trainer(load_config(tiny()), run_dir).train()
    state = load_state(run_dir)
    algo = state["config"]["algo"]
    del algo["encoder"]["done_input"]
    for name in ("reward_obs_embed", "reward_action_embed", "state_obs_embed"):
        del algo["decoders"][name]
    del algo["decoders"]["state_action_embed"]
    for name in ("policy_dist", "input_embed", "done_input"):
        del algo["ppo"][name]
    torch.save(state, ckpt(run_dir))
    resumed = Trainer(load_config(tiny(**{"train.total_frames": 480})), run_dir)
    assert resumed.frames == 240 and resumed.train()["frames"] == 480
    state = load_state(run_dir)
    del state["config"]["algo"]["encoder"]["done_input"]
    torch.save(state, ckpt(run_dir))
    with pytest.raises(CheckpointError) as info:
        Trainer(load_config(tiny(**{"algo.encoder.done_input": True})), run_dir)
    phrase = "checkpoint False (not recorded: older checkpoint), this run True"
    assert f"algo.encoder.done_input: {phrase}" in str(info.value)


# -- the console scripts -----------------------------------------------------------------------
def test_eval_cli_exits_2_on_corrupt_checkpoint(run_dir, capsys):
    _garbage(ckpt(run_dir))
    with pytest.raises(SystemExit) as info:
        eval_main([f"run_dir={run_dir}", "tasks=21"])
    assert info.value.code == EXIT_BAD_INPUT == 2
    err = capsys.readouterr().err
    assert err.startswith("bamdp-eval: ") and str(ckpt(run_dir)) in err and RUN in err
    assert "Traceback" not in err


def test_eval_cli_exits_2_on_missing_checkpoint(run_dir, capsys):
    ckpt(run_dir).unlink()
    with pytest.raises(SystemExit) as info:
        eval_main([f"run_dir={run_dir}"])
    assert info.value.code == 2
    assert "no checkpoint to evaluate" in capsys.readouterr().err


def test_train_cli_exits_2_on_mismatched_checkpoint(run_dir, capsys):
    config = load_config(tiny(**{"algo.encoder.latent_dim": 8}))
    with pytest.raises(SystemExit) as info:
        run_training(config, run_dir)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("bamdp-train: checkpoint ") and str(ckpt(run_dir)) in err
    assert "algo.encoder.latent_dim: checkpoint 5, this run 8" in err


def _cli_env(cwd: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", MPLBACKEND="Agg", HYDRA_FULL_ERROR="0")
    env.update(WANDB_CONFIG_DIR=str(cwd / ".wandb_config"), WANDB_CACHE_DIR=str(cwd / ".wandb"))
    env.pop("WANDB_API_KEY", None)
    return env


def test_bamdp_train_resume_of_corrupt_and_mismatched_checkpoints(run_dir, tmp_path):
    """End to end: the installed script prints the message, no traceback, exit code 2."""
    before = digests(run_dir)
    args = [str(BIN / "bamdp-train"), f"resume={run_dir}", "train.total_frames=480"]
    # a mismatched architecture given on the command line ...
    proc = subprocess.run(
        [*args, "algo.ppo.hidden=[32]"],
        cwd=tmp_path,
        env=_cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "algo.ppo.hidden: checkpoint [64, 64], this run [32]" in proc.stderr
    assert str(ckpt(run_dir)) in proc.stderr and "Traceback" not in proc.stderr
    assert digests(run_dir) == before  # config.json still the checkpoint's
    # ... and a truncated checkpoint
    _truncate(ckpt(run_dir))
    proc = subprocess.run(
        args,
        cwd=tmp_path,
        env=_cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "corrupt or truncated" in proc.stderr and str(ckpt(run_dir)) in proc.stderr
    assert RUN in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("arg", ["tasks=abc", "tasks=0", "episodes=-2", "episodes=1.5"])
def test_eval_cli_rejects_bad_numbers_before_loading(run_dir, arg, capsys):
    _garbage(ckpt(run_dir))  # never read: the arguments are checked first
    with pytest.raises(SystemExit) as info:
        eval_main([f"run_dir={run_dir}", arg])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "tasks and episodes must be positive integers" in err and "usage:" in err


def test_eval_cli_exits_2_on_corrupt_config_json(run_dir, capsys):
    (run_dir / "config.json").write_text('{"env": {"num_envs": 4')
    with pytest.raises(SystemExit) as info:
        eval_main([f"run_dir={run_dir}"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "config.json is invalid" in err and "not JSON" in err
