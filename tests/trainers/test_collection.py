"""Training collection on TorchRL's multi-process and Ray collectors (``train.collector``).

One training run per backend (worker start-up dominates: a few seconds each): the process run
checks frames, whole tasks, belief resets and that the workers act with the trainer's latest
weights; the Ray run must reproduce the process run number for number (same seed, same worker
seeds: the result is a function of the seed, whatever runs the workers).
"""

from __future__ import annotations

import csv
import multiprocessing
import os
import pickle

import pytest
import torch
from tensordict import TensorDict

from torchrl_bamdp.configs import load_config
from torchrl_bamdp.trainers import Trainer
from torchrl_bamdp.trainers.collection import (
    HYPER_STATE_ATTR,
    RAY_WORKER_NICENESS,
    WorkerEnvFactory,
    local_ray_init,
    whole_task_batch,
    worker_seeds,
)
from torchrl_bamdp.transforms.belief import (
    BELIEF_HIDDEN,
    BELIEF_LOGVAR,
    BELIEF_MEAN,
    reencode_hyper_state,
)

# GridNavi VariBAD as shipped (the policy reads the decoded belief: encoder *and* decoder must
# reach the workers), 4 tasks in 2 workers, 3 iterations. Sequential updates, so that the
# weights at the start of ppo_update are the ones the batch was collected with.
TINY = {
    "env": {"num_envs": 4},
    "algo": {"ppo": {"minibatches": 4}},
    "train": {
        "total_frames": 3 * 4 * 60,
        "eval_tasks": 21,
        "eval_interval": 0,
        "checkpoint_interval": 0,
        "progress_bar": False,
        "figures": False,
        "parallel_updates": False,
        "num_collectors": 2,
    },
}


def _config(collector: str, **train):
    return load_config({**TINY, "train": {**TINY["train"], "collector": collector, **train}})


def _train(collector: str, run_dir):
    """Train, recording every batch with the hyper-state the trainer's own transforms give it
    with the weights of that moment (before the batch's updates)."""
    trainer = Trainer(_config(collector), run_dir)
    seen = []
    ppo_update = trainer.ppo_update

    def recording_ppo_update(batch):
        with torch.no_grad():
            again = reencode_hyper_state(trainer.agent.make_transforms(), batch)
        seen.append((batch.clone(), again))
        return ppo_update(batch)

    trainer.ppo_update = recording_ppo_update
    result = trainer.train()
    return result, seen, _metrics(run_dir)


def _metrics(run_dir) -> list[dict[str, str]]:
    rows = csv.DictReader((run_dir / "metrics.csv").open())
    return [row for row in rows if not row["metric"].startswith("perf/")]


@pytest.fixture(scope="module")
def process_run(tmp_path_factory):
    before = set(multiprocessing.active_children())
    run = _train("process", tmp_path_factory.mktemp("process"))
    return (*run, set(multiprocessing.active_children()) - before)


def test_process_backend_trains_whole_tasks_counted_once(process_run):
    result, seen, metrics, left_running = process_run
    assert result["frames"] == 720 and result["iterations"] == 3
    assert [int(row["frames"]) for row in metrics if row["metric"] == "ppo/loss_objective"] == [
        240,
        480,
        720,
    ]
    assert not left_running  # the collector's worker processes stopped with training
    assert torch.get_num_threads() == 1  # train.num_threads, also after TorchRL's shutdown
    tasks = []
    for batch, _ in seen:
        assert batch.shape == (4, 60)
        done = batch["next", "done"].squeeze(-1)
        assert done[:, -1].all() and not done[:, :-1].any()  # one whole task per env
        assert (batch["episode"][:, 0] == 0).all()
        tasks.append(batch["task"][:, 0])
    tasks = torch.stack(tasks)  # [batch, env, task]
    # Each worker draws its own tasks (its own seed), and new ones at every task.
    assert not torch.equal(tasks[:, :2], tasks[:, 2:])
    assert not torch.equal(tasks[0], tasks[1])


def test_process_backend_resets_beliefs_per_task_only(process_run):
    _, seen, _, _ = process_run
    for batch, _ in seen:
        for key in (BELIEF_MEAN, BELIEF_LOGVAR, BELIEF_HIDDEN):
            assert (batch[key][:, 0] == 0).all()  # the prior at the start of every task
        # Inner episodes (15 steps) go on with the belief of the task: not back to the prior.
        for start in (15, 30, 45):
            assert (batch[BELIEF_HIDDEN][:, start] != 0).any(dim=-1).all()


def test_process_workers_act_on_the_latest_weights(process_run):
    """The hyper-state the workers stored is what the trainer's transforms give with the
    trainer's current weights: encoder and decoder were synced after every update (without
    the sync, batches 2 and 3 would carry the belief of the initial weights)."""
    _, seen, _, _ = process_run
    for i, (batch, again) in enumerate(seen):
        # Step 0 holds the decoded prior written by the previous batch's final reset, i.e.
        # before that batch's updates, as with train.collector=single.
        torch.testing.assert_close(batch["hyper_state"][:, 1:], again[:, 1:], msg=f"batch {i + 1}")


def test_ray_backend_reproduces_the_process_run(process_run, tmp_path, monkeypatch):
    """A local Ray started by the run (2 collectors, 2 CPUs): the same run, number for number,
    as the worker processes. The run starts Ray's workers at niceness 0, not Ray's 15: at 15,
    beside two busy training processes, they starved and TorchRL's 60 s weight-sync
    rendezvous timed out."""
    ray = pytest.importorskip("ray")  # CI installs it (ci/setup.sh: the distributed extra)
    monkeypatch.delenv(RAY_WORKER_NICENESS, raising=False)
    assert not ray.is_initialized()
    try:
        result, seen, metrics = _train("ray", tmp_path)
    finally:
        ray.shutdown()
    process_result, process_seen, process_metrics, _ = process_run
    assert result["frames"] == 720
    assert metrics == process_metrics
    assert result["eval"] == process_result["eval"]
    for (batch, _), (process_batch, _) in zip(seen, process_seen, strict=True):
        assert torch.equal(batch["hyper_state"], process_batch["hyper_state"])


@pytest.mark.slow
def test_process_backend_is_reproducible_per_seed(process_run, tmp_path):
    _, seen, metrics, _ = process_run
    _, again, metrics_again = _train("process", tmp_path)
    assert metrics_again == metrics
    for (batch, _), (batch_again, _) in zip(seen, again, strict=True):
        assert torch.equal(batch["action"], batch_again["action"])


# -- the parts, in this process --------------------------------------------------------------
def test_worker_factory_is_picklable_and_builds_a_seeded_replica():
    config = _config("process")
    factory = pickle.loads(pickle.dumps(WorkerEnvFactory(config, seed=5, num_envs=2)))
    env, same = factory(), factory()
    assert env.batch_size == (2,)
    modules = getattr(env, HYPER_STATE_ATTR)
    assert sorted(modules) == ["elbo_loss", "transforms"]
    # The transforms read the replica's own encoder and decoder, the modules that are synced.
    assert modules["transforms"] is env.transform
    assert modules["transforms"][0].encoder is modules["elbo_loss"].encoder
    torch.testing.assert_close(env.reset()["task"], same.reset()["task"], rtol=0, atol=0)
    other = WorkerEnvFactory(config, seed=6, num_envs=2)()
    assert not torch.equal(env.reset()["task"], other.reset()["task"])


def test_worker_seeds_depend_on_seed_worker_and_frames():
    seeds = worker_seeds(0, 3)
    assert len(set(seeds)) == 3 and seeds == worker_seeds(0, 3)
    assert worker_seeds(0, 2) == seeds[:2]  # a worker's stream does not depend on how many
    assert set(worker_seeds(1, 3)).isdisjoint(seeds)
    assert set(worker_seeds(0, 3, frames=240)).isdisjoint(seeds)


def test_whole_task_batch_joins_the_workers_parts_in_order():
    parts = TensorDict({"worker": torch.arange(2).repeat_interleave(6).reshape(2, 2, 3)}, [2, 2, 3])
    batch = whole_task_batch(parts, 4, 3)
    assert batch.shape == (4, 3) and batch["worker"][:, 0].tolist() == [0, 0, 1, 1]
    with pytest.raises(RuntimeError, match=r"\[env.num_envs, steps_per_batch\] = \[4, 6\]"):
        whole_task_batch(parts, 4, 6)


def test_local_ray_workers_run_at_niceness_zero_unless_the_environment_says(monkeypatch):
    """What the run's local Ray gives its workers: niceness 0 (Ray's default is 15), or the
    user's RAY_worker_niceness; the process environment is not changed."""
    ray = pytest.importorskip("ray")
    monkeypatch.delenv(RAY_WORKER_NICENESS, raising=False)

    @ray.remote
    def worker_niceness() -> int:
        return os.nice(0)

    for user_value, expected in ((None, 0), ("7", 7)):
        if user_value is not None:
            monkeypatch.setenv(RAY_WORKER_NICENESS, user_value)
        ray.init(**local_ray_init(1), log_to_driver=False)
        try:
            assert ray.get(worker_niceness.remote()) == expected
        finally:
            ray.shutdown()
        assert os.environ.get(RAY_WORKER_NICENESS) == user_value
