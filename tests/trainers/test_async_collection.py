"""``train.collector=process_async``: one worker process collects the next batch while the
trainer updates on this one (TorchRL's ``MultiAsyncCollector``).

One small GridNavi run (worker start-up dominates): frames counted once, whole tasks, beliefs
reset per task, the behaviour log-probabilities recorded by the worker reach PPO unchanged,
and the first batch is the one the trainer's own weights give.
"""

from __future__ import annotations

import copy
import csv
import multiprocessing

import pytest
import torch

from torchrl_bamdp.configs import ConfigError, load_config
from torchrl_bamdp.modules.actor_critic import add_log_probs
from torchrl_bamdp.trainers import Trainer
from torchrl_bamdp.transforms.belief import BELIEF_HIDDEN, reencode_hyper_state

ITERATIONS = 4
TINY = {
    "env": {"num_envs": 4},
    "algo": {"ppo": {"minibatches": 4}},
    "train": {
        "total_frames": ITERATIONS * 4 * 60,
        "eval_tasks": 21,
        "eval_interval": 0,
        "checkpoint_interval": 0,
        "progress_bar": False,
        "figures": False,
        "collector": "process_async",
    },
}


def _train(run_dir):
    """Train; per batch: the batch as PPO gets it, its hyper-state and log-probabilities with
    the trainer's weights of that moment, and a copy of the actor of that moment."""
    trainer = Trainer(load_config(TINY), run_dir)
    seen = []
    ppo_update = trainer.ppo_update

    def recording_ppo_update(batch):
        with torch.no_grad():
            again = reencode_hyper_state(trainer.agent.make_transforms(), batch)
            ours = add_log_probs(trainer.agent.actor, batch.clone())["action_log_prob"]
        seen.append((batch.clone(), again, ours, copy.deepcopy(trainer.agent.actor)))
        return ppo_update(batch)

    trainer.ppo_update = recording_ppo_update
    return trainer.train(), seen


def _losses(run_dir) -> list[str]:
    rows = csv.DictReader((run_dir / "metrics.csv").open())
    return [row["value"] for row in rows if row["metric"] == "ppo/loss_objective"]


@pytest.fixture(scope="module")
def async_run(tmp_path_factory):
    before = set(multiprocessing.active_children())
    run_dir = tmp_path_factory.mktemp("async")
    result, seen = _train(run_dir)
    return result, seen, set(multiprocessing.active_children()) - before, run_dir


def test_async_collection_trains_whole_tasks_counted_once(async_run):
    result, seen, left_running, _ = async_run
    assert result["frames"] == ITERATIONS * 240 and result["iterations"] == ITERATIONS
    assert len(seen) == ITERATIONS  # the batch in flight at the end is dropped, not counted
    assert not left_running
    for batch, *_ in seen:
        assert batch.shape == (4, 60)
        done = batch["next", "done"].squeeze(-1)
        assert done[:, -1].all() and not done[:, :-1].any()  # one whole task per env
        assert (batch[BELIEF_HIDDEN][:, 0] == 0).all()  # the prior at every task start
        assert (batch[BELIEF_HIDDEN][:, 15] != 0).any(-1).all()  # kept across inner episodes
    tasks = torch.stack([batch["task"][:, 0] for batch, *_ in seen])
    assert not torch.equal(tasks[0], tasks[1])  # new tasks every batch


def test_ppo_starts_from_the_log_probs_the_worker_acted_with(async_run):
    _, seen, _, _ = async_run
    for batch, *_ in seen:
        recorded = batch["action_log_prob"]
        assert recorded.shape == (4, 60) and torch.isfinite(recorded).all()
    # Batch 1 was collected with the weights the trainer holds before its first update.
    first, again, ours, _ = seen[0]
    torch.testing.assert_close(first["action_log_prob"], ours)
    torch.testing.assert_close(first["hyper_state"][:, 1:], again[:, 1:])
    # Batch k >= 2 was collected during update k - 1, with the weights before it (the actor
    # copied when batch k - 1 reached PPO): one update of lag, not the weights the trainer holds
    # when batch k arrives, whose log-probs PPO would otherwise take as the behaviour policy's.
    for k in range(1, len(seen)):
        batch, _, ours, _ = seen[k]
        acted = seen[k - 1][3]
        expected = add_log_probs(acted, batch.clone())["action_log_prob"]
        torch.testing.assert_close(batch["action_log_prob"], expected, msg=f"batch {k + 1}")
        assert not torch.allclose(batch["action_log_prob"], ours), f"batch {k + 1}"


def test_async_collection_is_reproducible_per_seed(async_run, tmp_path):
    """The weights reach the worker between batches, never during one: a seed gives the same
    run whatever the timing of worker and trainer."""
    _, seen, _, run_dir = async_run
    _, again = _train(tmp_path)
    assert _losses(tmp_path) == _losses(run_dir)
    for (batch, *_), (other, *_) in zip(seen, again, strict=True):
        assert torch.equal(batch["action"], other["action"])


def test_async_collection_needs_one_worker():
    with pytest.raises(ConfigError, match="num_collectors must be 1"):
        load_config({**TINY, "train": {**TINY["train"], "num_collectors": 2}})
