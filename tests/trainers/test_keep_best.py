"""train.keep_best: a run ends with the best policy of a validation meta-test, not of the tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from torchrl_bamdp.configs import ConfigError, load_config
from torchrl_bamdp.evaluation.meta_test import MetaTestResult
from torchrl_bamdp.trainers import Trainer
from torchrl_bamdp.trainers.checkpoint import load_policy_state
from torchrl_bamdp.trainers.trainer import EVAL_SEED, VALIDATION_SEED

BATCH = 4 * 60  # 4 envs x one 60-step BAMDP


def config(total_frames: int = 4 * BATCH, **train):
    return load_config(
        {
            "seed": 0,
            "env": {"num_envs": 4},
            # A large learning rate: the policy changes visibly from one batch to the next.
            "algo": {"ppo": {"minibatches": 4, "lr": 3e-2}, "elbo": {"batch_trajectories": 8}},
            "train": {
                "total_frames": total_frames,
                "eval_tasks": 21,
                "eval_interval": 1,
                "checkpoint_interval": 1,
                "keep_best": True,
                "progress_bar": False,
                "figures": False,
                **train,
            },
        }
    )


def actor_weights(trainer: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer.agent.actor.parameters()]


def test_bad_keep_best_settings_name_the_field():
    with pytest.raises(ConfigError, match="train.keep_best=true selects .*train.eval_interval=0"):
        load_config({"train": {"keep_best": True, "eval_interval": 0}})
    with pytest.raises(ConfigError, match="train.validation_tasks is an option of"):
        load_config({"train": {"validation_tasks": 21}})
    with pytest.raises(ConfigError, match=r"train.validation_tasks \(20\) must be a multiple"):
        load_config({"train": {"keep_best": True, "validation_tasks": 20}})
    assert load_config({"train": {"keep_best": True, "validation_tasks": 42}}).train.keep_best


def test_validation_tasks_are_not_the_test_tasks(tmp_path):
    """On a continuous family the validation stream draws other tasks than the tests'."""
    cfg = load_config(
        {
            "env": {"name": "point_robot_dense", "num_envs": 2},
            "train": {"keep_best": True, "progress_bar": False, "figures": False},
        }
    )
    trainer = Trainer(cfg, tmp_path)
    draws = {}
    for seed in (EVAL_SEED, VALIDATION_SEED):
        env = trainer._make_eval_env(8, 1, seed=seed)
        draws[seed] = env.reset()["task"].clone()
        env.close()
    assert not torch.allclose(draws[EVAL_SEED], draws[VALIDATION_SEED])


def _scripted_scores(trainer: Trainer, monkeypatch, totals: list[float]) -> None:
    """Validation meta-tests that score ``totals`` in turn (one episode each)."""
    scores = iter(totals)

    def evaluate(*args, seed=EVAL_SEED, **kwargs):
        value = next(scores) if seed == VALIDATION_SEED else 0.0
        return MetaTestResult(torch.tensor([[value]]))

    monkeypatch.setattr(trainer, "evaluate", evaluate)


def test_best_is_a_copy_ties_go_to_the_later_policy_and_worse_ones_are_not_kept(
    tmp_path, monkeypatch
):
    trainer = Trainer(config(), tmp_path)
    _scripted_scores(trainer, monkeypatch, [1.0, 5.0, 5.0, 3.0])
    snapshots = []
    for step in range(4):
        trainer.frames = step * BATCH
        trainer._validate()
        snapshots.append(actor_weights(trainer))
        with torch.no_grad():  # the next "update"
            for p in trainer.agent.actor.parameters():
                p.add_(1.0)
    assert trainer.best["frames"] == 2 * BATCH  # 5.0 twice: the later one; 3.0 is worse
    assert trainer.best["validated_frames"] == 3 * BATCH
    last = actor_weights(trainer)
    trainer._use_best()
    for kept, now in zip(snapshots[2], actor_weights(trainer), strict=True):
        assert torch.equal(kept, now)  # the snapshot did not follow the later updates
    lines = (tmp_path / "validation.jsonl").read_text().splitlines()
    assert [json.loads(line)["total_mean"] for line in lines] == [1.0, 5.0, 5.0, 3.0]
    # A second train() continues from the last policy, not the selected one.
    load_policy_state(trainer, trainer._last_policy)
    for a, b in zip(last, actor_weights(trainer), strict=True):
        assert torch.equal(a, b)


def test_a_run_ends_with_its_best_validated_policy_and_resumes_from_its_last(tmp_path):
    trainer = Trainer(config(), tmp_path)
    result = trainer.train()
    validations = [
        json.loads(line) for line in (tmp_path / "validation.jsonl").read_text().splitlines()
    ]
    # Every evaluation was validated, and the final policy (already validated at its frames).
    assert [v["frames"] for v in validations] == [BATCH, 2 * BATCH, 3 * BATCH, 4 * BATCH]
    totals = [v["total_mean"] for v in validations]
    best = max(range(len(totals)), key=lambda i: (totals[i], i))  # ties: the later
    selected = result["eval"]["selected"]
    assert selected["frames"] == validations[best]["frames"]
    assert selected["validation_total_mean"] == totals[best]
    # The test result is the selected policy's on the test tasks; the last policy's beside it.
    assert result["last_eval"]["frames"] == 4 * BATCH
    assert json.loads((tmp_path / "selected.json").read_text())["selected"] == selected
    test_now = trainer.evaluate().to_dict()
    assert test_now["mean"] == pytest.approx(result["eval"]["mean"])
    # bamdp-eval (a read_only trainer) gets the selected policy as well.
    reopened = Trainer(config(), tmp_path, read_only=True)
    assert reopened.evaluate().to_dict()["mean"] == pytest.approx(result["eval"]["mean"])
    # The checkpoint's policy is the last one: a resume trains on from there.
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    for key, value in trainer._last_policy["actor"].items():
        assert torch.equal(state["actor"][key], value)
    assert state["best"]["frames"] == selected["frames"]


def test_resume_keeps_the_best_so_far(tmp_path):
    first = Trainer(config(total_frames=2 * BATCH), tmp_path).train()
    resumed = Trainer(config(total_frames=4 * BATCH), tmp_path)
    assert resumed.best["frames"] == first["eval"]["selected"]["frames"]
    result = resumed.train()
    lines = (tmp_path / "validation.jsonl").read_text().splitlines()
    frames = [json.loads(line)["frames"] for line in lines]
    assert frames == [BATCH, 2 * BATCH, 3 * BATCH, 4 * BATCH]  # none twice, none lost
    totals = [json.loads(line)["total_mean"] for line in lines]
    assert result["eval"]["selected"]["validation_total_mean"] == max(totals)


def test_without_keep_best_nothing_is_validated(tmp_path):
    result = Trainer(config(total_frames=BATCH, keep_best=False), tmp_path).train()
    assert "selected" not in result["eval"] and "last_eval" not in result
    assert not Path(tmp_path / "validation.jsonl").exists()


def test_validation_does_not_change_training(tmp_path):
    """keep_best changes which policy a run ends with, not what it trains: the last policy
    of a run with it is bit-identical to that of the same run without it."""
    last = {}
    for keep_best in (False, True):
        trainer = Trainer(config(keep_best=keep_best), tmp_path / str(keep_best))
        trainer.train()
        policy = trainer._last_policy if keep_best else None
        last[keep_best] = policy["actor"] if policy else trainer.agent.actor.state_dict()
    assert last[False].keys() == last[True].keys()
    for key, value in last[False].items():
        assert torch.equal(value, last[True][key]), key
