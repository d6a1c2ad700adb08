"""Trainer: run files, frame accounting, which parameters each update moves, seeding, resume."""

from __future__ import annotations

import copy
import csv
import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from torchrl_bamdp.configs import ConfigError, config_to_dict, load_config
from torchrl_bamdp.trainers import MetricsLogger, Trainer
from torchrl_bamdp.trainers.trainer import SCALED_REWARD_KEY

NUM_ENVS = 4
HORIZON = 60
FRAMES_PER_BATCH = NUM_ENVS * HORIZON  # 240


def tiny(total_frames: int = 480, **sections) -> dict:
    """A tiny config dict; ``sections`` are merged into it (``algo={"ppo": {...}}``)."""
    data = {
        "seed": 0,
        "env": {"num_envs": NUM_ENVS},
        "algo": {"ppo": {"minibatches": 4}, "elbo": {"batch_trajectories": 8}},
        "train": {
            "total_frames": total_frames,
            "eval_tasks": 21,
            "eval_interval": 1,
            "checkpoint_interval": 1,
            "progress_bar": False,
            "figures": False,
        },
    }
    _merge(data, sections)
    return data


def _merge(dst: dict, src: dict) -> None:
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge(dst[key], value)
        else:
            dst[key] = copy.deepcopy(value)


def make_trainer(run_dir: Path, total_frames: int = 480, **sections) -> Trainer:
    return Trainer(load_config(tiny(total_frames, **sections)), run_dir)


def read_rows(run_dir: Path) -> list[dict]:
    with (run_dir / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    after = module.state_dict()
    assert before.keys() == after.keys() and before
    return any(not torch.equal(before[k], after[k]) for k in before)


def unchanged_params(before: dict[str, torch.Tensor], module: torch.nn.Module) -> list[str]:
    """Names of the float parameters that did NOT change."""
    return [name for name, p in module.named_parameters() if torch.equal(before[name], p.detach())]


def collect_batch(trainer: Trainer) -> torch.Tensor:
    """One ``[num_envs, horizon]`` batch, as the collector gathers it (under no_grad)."""
    with torch.no_grad():
        return trainer.train_env.rollout(
            trainer.config.steps_per_batch, trainer.agent.actor, break_when_any_done=False
        )


# -- a whole tiny run --------------------------------------------------------------------------
def test_tiny_run_writes_run_files(tmp_path):
    run_dir = tmp_path / "run"
    trainer = make_trainer(run_dir, 480)
    result = trainer.train()

    assert result["frames"] == 480 == trainer.frames
    assert result["iterations"] == 2
    assert result["eval"]["frames"] == 480
    assert len(result["eval"]["mean"]) == trainer.config.env.episodes_per_task

    saved = json.loads((run_dir / "config.json").read_text())
    assert saved == config_to_dict(trainer.config)
    assert load_config(saved) == trainer.config

    rows = read_rows(run_dir)
    assert rows, "metrics.csv is empty"
    assert list(rows[0].keys()) == ["iteration", "frames", "metric", "value"]
    metrics = {r["metric"] for r in rows}
    for prefix in ("train/", "ppo/", "elbo/", "perf/", "eval/"):
        assert any(m.startswith(prefix) for m in metrics), prefix
    for name in (
        "train/trajectories_added",
        "ppo/loss_objective",
        "ppo/loss_critic",
        "elbo/loss",
        "elbo/loss_reward",
        "elbo/loss_kl",
        "perf/fps",
        "eval/return_total",
        "eval/return_episode_1",
    ):
        assert name in metrics, name
    for r in rows:
        assert int(r["frames"]) == FRAMES_PER_BATCH * int(r["iteration"])
        assert float(r["value"]) == float(r["value"]), f"NaN in {r}"  # no NaN
    added = [float(r["value"]) for r in rows if r["metric"] == "train/trajectories_added"]
    assert added == [NUM_ENVS, NUM_ENVS]  # whole tasks per batch
    # the metrics logger reads back what it wrote
    logged = MetricsLogger(run_dir, trainer.config).read()
    assert len(logged) == len(rows) and logged[0]["iteration"] == 1

    evals = [json.loads(line) for line in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert [e["iteration"] for e in evals] == [1, 2]  # eval_interval=1
    assert [e["frames"] for e in evals] == [240, 480]
    assert all(e["num_tasks"] == 21 and len(e["mean"]) == 4 for e in evals)
    eval_total = [float(r["value"]) for r in rows if r["metric"] == "eval/return_total"]
    assert eval_total == pytest.approx([e["total_mean"] for e in evals])

    ckpt_dir = run_dir / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.iterdir()) == ["last.pt"]  # no .tmp left behind
    assert not list(run_dir.rglob("*.tmp"))
    state = torch.load(ckpt_dir / "last.pt", weights_only=False)
    assert state["frames"] == 480 and state["iteration"] == 2
    assert state["config"] == config_to_dict(trainer.config)
    for key in ("actor", "critic", "elbo_loss", "ppo_optimizer", "elbo_optimizer", "buffer"):
        assert key in state
    for name, value in trainer.agent.actor.state_dict().items():
        assert torch.equal(state["actor"][name], value)


@pytest.mark.parametrize(
    ("total_frames", "steps_per_batch", "frames", "iterations"),
    [
        (480, None, 480, 2),
        (241, None, 480, 2),  # whole batches only: rounded up, never cut a task in half
        (960, 120, 960, 2),  # two tasks per env per batch
    ],
)
def test_frame_count(tmp_path, total_frames, steps_per_batch, frames, iterations):
    trainer = make_trainer(
        tmp_path,
        total_frames,
        train={"steps_per_batch": steps_per_batch, "eval_interval": 0, "checkpoint_interval": 0},
        algo={"elbo": {"updates_per_iteration": 1}},
    )
    result = trainer.train()
    assert result["frames"] == frames and result["iterations"] == iterations
    rows = read_rows(tmp_path)
    assert sorted({int(r["iteration"]) for r in rows}) == list(range(1, iterations + 1))
    added = [float(r["value"]) for r in rows if r["metric"] == "train/trajectories_added"]
    tasks_per_batch = NUM_ENVS * (steps_per_batch or HORIZON) // HORIZON
    assert added == [tasks_per_batch] * iterations
    assert len(trainer.buffer) == tasks_per_batch * iterations
    # eval_interval=0: a single evaluation, at the end
    evals = (tmp_path / "eval.jsonl").read_text().splitlines()
    assert len(evals) == 1 and json.loads(evals[0])["frames"] == frames
    assert (tmp_path / "checkpoints" / "last.pt").exists()


# -- which parameters each update moves --------------------------------------------------------
def test_encoder_is_shared_by_belief_transform_and_elbo(tmp_path):
    trainer = make_trainer(tmp_path)
    encoder = trainer.agent.encoder
    assert trainer.agent.elbo_loss.encoder is encoder
    belief = [t for t in trainer.train_env.transform if hasattr(t, "encoder")]
    assert len(belief) == 1 and belief[0].encoder is encoder


@pytest.mark.parametrize(
    "algo", [{}, {"name": "rl2", "ppo": {"encoder_grad": True}}], ids=["varibad", "rl2"]
)
def test_the_trained_encoder_stays_in_training_mode(tmp_path, algo):
    # cuDNN (on a GPU) refuses the backward pass of a GRU in eval mode.
    trainer = make_trainer(tmp_path, algo=algo)
    trainer.train()
    assert all(module.training for module in trainer.agent.encoder.modules())


def test_ppo_update_moves_policy_not_encoder(tmp_path):
    trainer = make_trainer(tmp_path)
    assert trainer.config.algo.ppo.encoder_grad is False
    batch = collect_batch(trainer)
    assert batch.batch_size == torch.Size([NUM_ENVS, HORIZON])
    actor, critic = params(trainer.agent.actor), params(trainer.agent.critic)
    encoder = params(trainer.agent.encoder)
    decoder = params(trainer.agent.elbo_loss.reward_decoder)

    out = trainer.ppo_update(batch)

    assert {"loss_objective", "loss_critic", "loss_entropy", "grad_norm"} <= out.keys()
    assert all(v == v for v in out.values())  # finite numbers, no NaN
    assert changed(actor, trainer.agent.actor)
    assert changed(critic, trainer.agent.critic)
    assert not changed(encoder, trainer.agent.encoder)
    assert not changed(decoder, trainer.agent.elbo_loss.reward_decoder)
    # no RL gradient reached the encoder at all (the belief is a stored input)
    assert all(p.grad is None for p in trainer.agent.encoder.parameters())


def test_ppo_update_with_encoder_grad_moves_encoder(tmp_path):
    trainer = make_trainer(tmp_path, algo={"ppo": {"encoder_grad": True, "minibatches": 2}})
    batch = collect_batch(trainer)
    actor, critic = params(trainer.agent.actor), params(trainer.agent.critic)
    encoder = params(trainer.agent.encoder)
    decoder = params(trainer.agent.elbo_loss.reward_decoder)

    trainer.ppo_update(batch)

    assert changed(actor, trainer.agent.actor)
    assert changed(critic, trainer.agent.critic)
    assert changed(encoder, trainer.agent.encoder)
    # the GRU weights themselves are trained, not only the output heads
    gru = {k: v for k, v in encoder.items() if "gru" in k}
    assert gru, sorted(encoder)
    after = trainer.agent.encoder.state_dict()
    assert any(not torch.equal(v, after[k]) for k, v in gru.items())
    assert not changed(decoder, trainer.agent.elbo_loss.reward_decoder)


def test_encoder_grad_reencoding_reproduces_stored_hyper_state(tmp_path):
    """The hyper-state PPO re-encodes with gradients equals the one stored during collection."""
    trainer = make_trainer(tmp_path, algo={"ppo": {"encoder_grad": True, "minibatches": 2}})
    batch = collect_batch(trainer)
    with torch.no_grad():
        trainer.gae(batch)
    chunks = list(trainer._trajectory_minibatches(batch, 2))
    assert len(chunks) == 2 and sum(c.numel() for c in chunks) == batch.numel()
    stored = batch["hyper_state"].reshape(-1, batch["hyper_state"].shape[-1])
    for chunk in chunks:
        assert chunk["hyper_state"].requires_grad
        # each chunk holds whole tasks: its steps are a contiguous run of the stored rows
        rows = chunk["hyper_state"].detach()
        distance = (rows[:, None] - stored[None]).abs().amax(-1).min(dim=1).values
        assert distance.max() < 1e-5
        observation = chunk["observation"]
        torch.testing.assert_close(chunk["hyper_state"][:, : observation.shape[-1]], observation)


STEPS = {"ppo": {"encoder_grad": True, "minibatches": 3, "recurrent_minibatch": "steps"}}


def test_step_minibatches_mix_tasks_and_are_reencoded_with_the_current_parameters(tmp_path):
    """recurrent_minibatch=steps (the original's RL2 PPO): every minibatch is a random part of
    all steps of all tasks, re-encoded with gradients by the parameters of that moment."""
    trainer = make_trainer(tmp_path, algo=copy.deepcopy(STEPS))  # 3 does not divide 4 envs
    batch = collect_batch(trainer)
    with torch.no_grad():
        trainer.gae(batch)
    batch.set("step_id", torch.arange(batch.numel()).reshape(batch.shape))
    stored = batch.reshape(-1)["hyper_state"]
    generator = trainer._step_minibatches(batch, 3)
    first = next(generator)
    assert first.numel() == batch.numel() // 3 and first["hyper_state"].requires_grad
    # Each row is its stored step re-encoded (the same values), from more than one task.
    ids = first["step_id"]
    torch.testing.assert_close(first["hyper_state"].detach(), stored[ids], atol=1e-5, rtol=0)
    assert len(set((ids // HORIZON).tolist())) > 1
    # After a parameter change the next minibatch is re-encoded by the new parameters.
    with torch.no_grad():
        for p in trainer.agent.encoder.parameters():
            p.add_(0.05)
    second = next(generator)
    difference = (second["hyper_state"].detach() - stored[second["step_id"]]).abs().max()
    assert difference > 1e-3
    rest = list(generator)
    ids = torch.cat([m["step_id"] for m in [first, second, *rest]])
    assert len(rest) == 1 and sorted(ids.tolist()) == list(range(batch.numel()))


def test_step_minibatches_train_the_memory(tmp_path):
    trainer = make_trainer(tmp_path, algo=copy.deepcopy(STEPS))
    encoder = params(trainer.agent.encoder)
    out = trainer.ppo_update(collect_batch(trainer))
    assert all(v == v for v in out.values())
    assert changed(encoder, trainer.agent.encoder)


@pytest.mark.parametrize("grad_clip", ["joint", "per_network"])
def test_grad_clip_per_network_clips_policy_and_encoder_each_on_their_own(tmp_path, grad_clip):
    """algo.ppo.grad_clip: the norms each optimiser step sees, with a bound every raw norm
    exceeds: the policy's and the encoder's each at the bound (per_network, the original) or
    together at it (joint, ours)."""
    bound = 1e-4
    algo = {"ppo": {"encoder_grad": True, "minibatches": 2, "max_grad_norm": bound}}
    algo["ppo"]["grad_clip"] = grad_clip
    trainer = make_trainer(tmp_path, algo=algo)
    encoder = list(trainer.agent.encoder.parameters())
    encoder_ids = {id(p) for p in encoder}
    policy = [p for p in trainer.agent.policy_parameters() if id(p) not in encoder_ids]
    assert encoder and policy
    seen = []
    step = trainer.ppo_optimizer.step

    def recording_step(*args, **kwargs):
        seen.append(
            [
                torch.linalg.vector_norm(
                    torch.stack([p.grad.norm() for p in group if p.grad is not None])
                )
                for group in (policy, encoder)
            ]
        )
        return step(*args, **kwargs)

    trainer.ppo_optimizer.step = recording_step
    metrics = trainer.ppo_update(collect_batch(trainer))
    assert len(seen) == trainer.config.algo.ppo.epochs * 2
    norms = torch.tensor(seen)
    if grad_clip == "per_network":
        torch.testing.assert_close(norms, torch.full_like(norms, bound), rtol=1e-4, atol=0)
    else:
        torch.testing.assert_close(norms.square().sum(1).sqrt(), torch.full((len(seen),), bound))
        # the encoder's share of one bound: well below the bound it gets per network
        assert bool((norms[:, 1] < bound * 0.99).all())
    assert metrics["grad_norm"] > 100 * bound  # logged: the norm before clipping


def test_grad_clip_is_checked():
    with pytest.raises(ConfigError, match=r"grad_clip must be one of \['joint', 'per_network'\]"):
        load_config(tiny(algo={"ppo": {"grad_clip": "encoder"}}))


def test_recurrent_minibatch_is_checked():
    with pytest.raises(
        ConfigError, match=r"recurrent_minibatch must be one of \['tasks', 'steps'\]"
    ):
        load_config(tiny(algo={"ppo": {"encoder_grad": True, "recurrent_minibatch": "task"}}))
    with pytest.raises(ConfigError, match="recurrent_minibatch='steps' is an option of"):
        load_config(tiny(algo={"ppo": {"recurrent_minibatch": "steps"}}))
    with pytest.raises(ConfigError, match="must divide env.num_envs"):
        load_config(tiny(algo={"ppo": {"encoder_grad": True, "minibatches": 3}}))
    assert load_config(tiny(algo=copy.deepcopy(STEPS))).algo.ppo.minibatches == 3


def test_elbo_update_moves_encoder_and_decoder_not_policy(tmp_path):
    trainer = make_trainer(tmp_path)
    batch = collect_batch(trainer)
    assert trainer.elbo_update() == {}  # nothing to train on yet
    assert trainer.buffer.extend_from_batch(batch) == NUM_ENVS
    actor, critic = params(trainer.agent.actor), params(trainer.agent.critic)
    encoder = params(trainer.agent.encoder)
    decoder = params(trainer.agent.elbo_loss.reward_decoder)

    out = trainer.elbo_update()

    assert {"loss", "loss_reward", "loss_kl"} <= out.keys()
    assert changed(encoder, trainer.agent.encoder)
    assert changed(decoder, trainer.agent.elbo_loss.reward_decoder)
    assert not unchanged_params(decoder, trainer.agent.elbo_loss.reward_decoder)
    assert not changed(actor, trainer.agent.actor)
    assert not changed(critic, trainer.agent.critic)


# -- seeding -----------------------------------------------------------------------------------
def _metric_values(run_dir: Path) -> list[tuple[int, int, str, str]]:
    return [
        (int(r["iteration"]), int(r["frames"]), r["metric"], r["value"])
        for r in read_rows(run_dir)
        if not r["metric"].startswith("perf/")
    ]


def test_same_seed_same_metrics(tmp_path):
    cfg = dict(train={"eval_interval": 2, "checkpoint_interval": 0})
    make_trainer(tmp_path / "a", 720, **cfg).train()
    make_trainer(tmp_path / "b", 720, **cfg).train()
    a, b = _metric_values(tmp_path / "a"), _metric_values(tmp_path / "b")
    assert len(a) > 30
    assert {m for _, _, m, _ in a} >= {"ppo/loss_objective", "elbo/loss", "eval/return_total"}
    assert a == b  # exact, as written (string compare of the CSV values)
    ca = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=False)
    cb = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=False)
    for key in ("actor", "critic", "elbo_loss"):
        for name in ca[key]:
            assert torch.equal(ca[key][name], cb[key][name]), (key, name)


def test_parallel_updates_give_the_same_run_as_sequential_ones(tmp_path, monkeypatch):
    train = {"eval_interval": 2, "checkpoint_interval": 0}
    threads = []
    elbo_update = Trainer.elbo_update

    def recording_elbo_update(self):
        threads.append(threading.current_thread().name)
        return elbo_update(self)

    monkeypatch.setattr(Trainer, "elbo_update", recording_elbo_update)
    # Each Trainer seeds torch's global generator: build each just before it trains.
    seq = make_trainer(tmp_path / "seq", 720, train={**train, "parallel_updates": False})
    assert not seq.parallel_updates
    seq.train()
    assert threads and all(name == "MainThread" for name in threads)
    threads.clear()
    par = make_trainer(tmp_path / "par", 720, train=train)
    assert par.parallel_updates
    par.train()
    assert threads and all(name.startswith("elbo-update") for name in threads)
    a, b = _metric_values(tmp_path / "seq"), _metric_values(tmp_path / "par")
    assert {m for _, _, m, _ in a} >= {"ppo/loss_objective", "elbo/loss", "eval/return_total"}
    assert a == b
    for key in ("actor", "critic", "elbo_loss"):
        expected, got = params(getattr(seq.agent, key)), params(getattr(par.agent, key))
        assert expected.keys() == got.keys()
        assert all(torch.equal(expected[k], got[k]) for k in expected), key


def test_parallel_updates_run_sequentially_when_ppo_trains_the_encoder(tmp_path):
    assert not make_trainer(tmp_path / "a", algo={"ppo": {"encoder_grad": True}}).parallel_updates
    rl2 = {"name": "rl2", "ppo": {"encoder_grad": True}}
    assert not make_trainer(tmp_path / "b", algo=rl2).parallel_updates


def test_parallel_ppo_error_waits_for_the_elbo_update_and_is_raised(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path)
    finished = []

    def slow_elbo_update():
        time.sleep(0.2)
        finished.append(True)
        return {}

    def failing_ppo_update(batch):
        raise RuntimeError("ppo broke")

    monkeypatch.setattr(trainer, "elbo_update", slow_elbo_update)
    monkeypatch.setattr(trainer, "ppo_update", failing_ppo_update)
    with ThreadPoolExecutor(max_workers=1) as worker:
        with pytest.raises(RuntimeError, match="ppo broke"):
            trainer._update(collect_batch(trainer), worker)
        assert finished == [True]


def test_different_seed_different_metrics(tmp_path):
    cfg = dict(train={"eval_interval": 0, "checkpoint_interval": 0})
    make_trainer(tmp_path / "a", 240, **cfg).train()
    Trainer(load_config({**tiny(240, **cfg), "seed": 1}), tmp_path / "b").train()
    a = {m: v for _, _, m, v in _metric_values(tmp_path / "a") if m.startswith("ppo/")}
    b = {m: v for _, _, m, v in _metric_values(tmp_path / "b") if m.startswith("ppo/")}
    assert a.keys() == b.keys() and a != b


# -- resume ------------------------------------------------------------------------------------
def test_resume_continues_from_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    first = make_trainer(run_dir, 480)
    first.train()
    trained = {
        "actor": params(first.agent.actor),
        "critic": params(first.agent.critic),
        "elbo_loss": params(first.agent.elbo_loss),
    }
    buffer_len = len(first.buffer)
    rows_before = read_rows(run_dir)
    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)

    resumed = make_trainer(run_dir, 960)
    # state restored before any training
    assert resumed.frames == 480 and resumed.iteration == 2
    assert resumed.last_eval is not None and resumed.last_eval["frames"] == 480
    assert len(resumed.buffer) == buffer_len == 2 * NUM_ENVS
    fresh = make_trainer(tmp_path / "fresh", 480)  # same seed, untrained
    for key, module in (
        ("actor", resumed.agent.actor),
        ("critic", resumed.agent.critic),
        ("elbo_loss", resumed.agent.elbo_loss),
    ):
        for name, value in module.state_dict().items():
            assert torch.equal(value, ckpt[key][name]), (key, name)
            assert torch.equal(value, trained[key][name]), (key, name)
        assert changed(params(getattr(fresh.agent, key)), module), key
    assert (
        resumed.ppo_optimizer.state_dict()["state"][0]["step"]
        == first.ppo_optimizer.state_dict()["state"][0]["step"]
    )
    assert json.loads((run_dir / "config.json").read_text())["train"]["total_frames"] == 960

    result = resumed.train()
    assert result["frames"] == 960 and result["iterations"] == 4

    rows = read_rows(run_dir)
    assert rows[: len(rows_before)] == rows_before  # history kept as it was
    keys = Counter((int(r["iteration"]), r["metric"]) for r in rows)
    assert max(keys.values()) == 1, [k for k, n in keys.items() if n > 1]
    iterations = sorted({i for i, _ in keys})
    assert iterations == [1, 2, 3, 4]
    for r in rows:
        assert int(r["frames"]) == FRAMES_PER_BATCH * int(r["iteration"])
    for it in iterations:
        assert (it, "ppo/loss_objective") in keys and (it, "eval/return_total") in keys
    evals = [json.loads(x) for x in (run_dir / "eval.jsonl").read_text().splitlines()]
    assert [e["frames"] for e in evals] == [240, 480, 720, 960]
    state = torch.load(run_dir / "checkpoints" / "last.pt", weights_only=False)
    assert state["frames"] == 960 and state["iteration"] == 4
    assert not list(run_dir.rglob("*.tmp"))


def test_resume_drops_rows_logged_after_the_checkpoint(tmp_path):
    """A run killed after logging iteration 3 but before checkpointing it redoes iteration 3."""
    run_dir = tmp_path / "run"
    make_trainer(run_dir, 480).train()
    with (run_dir / "metrics.csv").open("a", newline="") as f:
        csv.writer(f).writerows([(3, 720, "ppo/loss_objective", 123.0), (3, 720, "bogus", 1.0)])

    resumed = make_trainer(run_dir, 720)
    assert resumed.iteration == 2
    assert all(int(r["iteration"]) <= 2 for r in read_rows(run_dir))  # stale rows dropped
    resumed.train()
    rows = read_rows(run_dir)
    keys = Counter((int(r["iteration"]), r["metric"]) for r in rows)
    assert max(keys.values()) == 1
    assert (3, "bogus") not in keys
    value = [
        float(r["value"])
        for r in rows
        if (r["iteration"], r["metric"]) == ("3", "ppo/loss_objective")
    ]
    assert len(value) == 1 and value[0] != 123.0


def test_resume_at_budget_does_not_train(tmp_path):
    run_dir = tmp_path / "run"
    make_trainer(run_dir, 480).train()
    rows_before = read_rows(run_dir)
    result = make_trainer(run_dir, 480).train()
    assert result["frames"] == 480 and result["iterations"] == 2
    assert read_rows(run_dir) == rows_before
    assert len((run_dir / "eval.jsonl").read_text().splitlines()) == 2  # no new evaluation


def test_resume_matches_uninterrupted_run(tmp_path):
    # A constant entropy coefficient: the resumed run raises train.total_frames, which stretches
    # the default schedule (its exact continuation is tested with the schedule below).
    cfg = dict(
        train={"eval_interval": 0, "checkpoint_interval": 1},
        algo={"ppo": {"entropy_coef_final": None}},
    )
    make_trainer(tmp_path / "straight", 720, **cfg).train()
    make_trainer(tmp_path / "resumed", 480, **cfg).train()
    make_trainer(tmp_path / "resumed", 720, **cfg).train()

    def train_rows(run_dir):
        return [r for r in _metric_values(run_dir) if not r[2].startswith("eval/")]

    assert train_rows(tmp_path / "resumed") == train_rows(tmp_path / "straight")


# -- checkpoints -------------------------------------------------------------------------------
def test_checkpoint_is_atomic(tmp_path, monkeypatch):
    trainer = make_trainer(tmp_path, 240)
    trainer.train()
    path = tmp_path / "checkpoints" / "last.pt"
    good = path.read_bytes()
    assert not list(tmp_path.rglob("*.tmp"))

    real_save = torch.save

    def crashing_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        with open(f, "r+b") as fh:  # leave a truncated, corrupt file behind
            fh.truncate(16)
        raise OSError("disk full")

    trainer.frames = 999_999
    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(OSError):
        trainer.save_checkpoint()
    monkeypatch.undo()
    # the previous checkpoint is intact and still loads
    assert path.read_bytes() == good
    assert torch.load(path, weights_only=False)["frames"] == 240
    assert make_trainer(tmp_path, 240).frames == 240


# -- evaluation --------------------------------------------------------------------------------
def test_evaluate_is_reproducible_and_uses_fixed_tasks(tmp_path):
    trainer = make_trainer(tmp_path / "a", 240, train={"eval_interval": 0})
    trainer.train()
    first = trainer.evaluate(num_tasks=21, episodes=3)
    assert first.returns.shape == (21, 3)
    assert torch.equal(trainer.evaluate(num_tasks=21, episodes=3).returns, first.returns)
    # the same policy restored from the checkpoint, in a fresh trainer, scores the same
    restored = make_trainer(tmp_path / "a", 240, train={"eval_interval": 0})
    assert torch.equal(restored.evaluate(num_tasks=21, episodes=3).returns, first.returns)
    # evaluation does not consume the training streams
    state = torch.get_rng_state()
    task_state = restored.env.task_generator.get_state()
    restored.evaluate(num_tasks=21, episodes=1)
    assert torch.equal(restored.env.task_generator.get_state(), task_state)
    assert torch.equal(torch.get_rng_state(), state)


def test_anneal_lr_decays_both_learning_rates_linearly_over_the_frame_budget(tmp_path):
    trainer = make_trainer(tmp_path / "run", total_frames=960, train={"anneal_lr": True})
    trainer.train()
    rows = read_rows(tmp_path / "run")
    for metric, base in (
        ("ppo/lr", trainer.config.algo.ppo.lr),
        ("elbo/lr", trainer.config.algo.elbo.lr),
    ):
        lrs = [float(r["value"]) for r in rows if r["metric"] == metric]
        assert lrs == pytest.approx([base * (1 - k / 4) for k in range(4)])


def test_constant_lr_without_annealing(tmp_path):
    trainer = make_trainer(tmp_path / "run", total_frames=480)
    trainer.train()
    lrs = [float(r["value"]) for r in read_rows(tmp_path / "run") if r["metric"] == "ppo/lr"]
    assert lrs == pytest.approx([trainer.config.algo.ppo.lr] * 2)


def ppo_series(run_dir: Path, metric: str) -> list[float]:
    return [float(r["value"]) for r in read_rows(run_dir) if r["metric"] == f"ppo/{metric}"]


def test_entropy_coef_anneals_linearly_over_the_frame_budget_and_reaches_the_loss(tmp_path):
    ppo = {"entropy_coef": 0.03, "entropy_coef_final": 0.0}
    make_trainer(tmp_path / "run", total_frames=960, algo={"ppo": ppo}).train()
    coefs = ppo_series(tmp_path / "run", "entropy_coef")
    assert coefs == pytest.approx([0.03, 0.0225, 0.015, 0.0075])
    # The loss term of every batch used that batch's coefficient: loss_entropy = -coef * entropy
    # per minibatch, so their means over a batch's minibatches obey it too.
    entropy = ppo_series(tmp_path / "run", "entropy")
    loss_entropy = ppo_series(tmp_path / "run", "loss_entropy")
    assert loss_entropy == pytest.approx([-c * e for c, e in zip(coefs, entropy, strict=True)])


def test_entropy_coef_schedule_can_rise_and_is_constant_past_the_budget(tmp_path):
    ppo = {"entropy_coef": 0.01, "entropy_coef_final": 0.05}
    trainer = make_trainer(tmp_path / "run", total_frames=480, algo={"ppo": ppo})
    # frames collected before the batch, as the training loop passes them
    assert trainer.schedules.entropy_coef(0) == pytest.approx(0.01)  # first batch
    assert trainer.schedules.entropy_coef(240) == pytest.approx(0.03)
    # a batch beyond total_frames keeps the final value
    assert trainer.schedules.entropy_coef(4 * 240) == pytest.approx(0.05)
    assert float(trainer.ppo_loss.entropy_coeff) == pytest.approx(0.05)


def test_entropy_coef_schedule_resumes_where_it_stopped(tmp_path):
    ppo = {"algo": {"ppo": {"entropy_coef": 0.03, "entropy_coef_final": 0.0}}}
    run_dir = tmp_path / "run"
    # A wall-clock budget that ends the first invocation after its first batch.
    stopped = Trainer(load_config(tiny(960, **ppo, train={"max_minutes": 1e-9})), run_dir)
    stopped.train()
    assert stopped.frames == 240
    Trainer(load_config(tiny(960, **ppo)), run_dir).train()
    coefs = ppo_series(run_dir, "entropy_coef")
    assert coefs == pytest.approx([0.03, 0.0225, 0.015, 0.0075])


def test_constant_entropy_coef_without_a_schedule(tmp_path):
    ppo = {"entropy_coef": 0.01, "entropy_coef_final": None}
    make_trainer(tmp_path / "run", total_frames=480, algo={"ppo": ppo}).train()
    assert ppo_series(tmp_path / "run", "entropy_coef") == []
    entropy = ppo_series(tmp_path / "run", "entropy")
    loss_entropy = ppo_series(tmp_path / "run", "loss_entropy")
    assert loss_entropy == pytest.approx([-0.01 * e for e in entropy])


def test_run_info_records_versions_commit_and_seed_per_start(tmp_path):
    run_dir = tmp_path / "run"
    make_trainer(run_dir, total_frames=240).train()
    make_trainer(run_dir, total_frames=480).train()  # a resume appends a second entry
    sessions = json.loads((run_dir / "run_info.json").read_text())
    assert len(sessions) == 2
    assert sessions[0]["seed"] == 0
    assert sessions[0]["versions"]["torch"] == torch.__version__
    assert "git_commit" in sessions[0] and "argv" in sessions[0]


def test_the_git_commit_is_read_once_per_process(monkeypatch):
    """A long campaign records the commit its code came from, not HEAD after a later pull."""
    import subprocess
    import types

    from torchrl_bamdp.trainers import trainer as trainer_module

    heads = iter(["aaaaaaa1111", "bbbbbbb2222"])  # HEAD before and after a `git pull`

    def fake_run(*args, **kwargs):
        return types.SimpleNamespace(stdout=next(heads) + "\n")

    trainer_module.process_git_commit.cache_clear()
    monkeypatch.setattr(subprocess, "run", fake_run)
    try:
        first = trainer_module.environment_info(0)["git_commit"]
        assert trainer_module.environment_info(0)["git_commit"] == first == "aaaaaaa1111"
    finally:
        trainer_module.process_git_commit.cache_clear()


# -- reward scaling for PPO only ---------------------------------------------------------------
def test_normalize_reward_scales_ppo_rewards_only(tmp_path):
    plain = make_trainer(tmp_path / "plain")
    scaled = make_trainer(tmp_path / "scaled", algo={"ppo": {"normalize_reward": True}})
    scaled.agent.actor.load_state_dict(plain.agent.actor.state_dict())
    scaled.agent.critic.load_state_dict(plain.agent.critic.state_dict())
    batch = collect_batch(plain)
    raw = batch.get(("next", "reward")).clone()
    scaled.buffer.extend_from_batch(batch)
    torch.manual_seed(0)
    scaled.ppo_update(batch)
    # The batch (metrics, ELBO buffer) keeps the raw rewards; the scaler learned their scale.
    assert torch.equal(batch.get(("next", "reward")), raw)
    stored = scaled.buffer.sample(4)["next", "reward"]
    raw_values = torch.tensor([-0.1, 1.0])  # GridNavi's rewards
    assert torch.isclose(stored.reshape(-1, 1), raw_values).any(-1).all()
    scaler = scaled.return_scaler
    assert scaler is not None and scaler.count.item() == batch.numel()
    assert plain.return_scaler is None
    # PPO saw different rewards: the critic moves differently from the unscaled run.
    torch.manual_seed(0)
    plain.ppo_update(batch)
    assert changed(params(plain.agent.critic), scaled.agent.critic)


@pytest.mark.parametrize("minibatch", ["tasks", "steps"])
def test_rl2_reencodes_the_raw_rewards_it_acted_on_when_ppo_rewards_are_scaled(tmp_path, minibatch):
    """RL2's memory reads the reward. With normalize_reward the re-encoding inside PPO must read
    the raw rewards the belief transform read while acting, so the first minibatch's PPO ratio
    is exactly 1 (the policy has not moved yet); GAE alone reads the scaled rewards.

    Until 2026-12-07 the scaled rewards replaced ("next", "reward") in PPO's copy of the batch:
    every task was re-encoded from rewards the policy never acted on (on walker_rand_params 33%
    of a first minibatch's steps were already clipped, log-ratios up to 127)."""
    minibatches = 2 if minibatch == "tasks" else 3
    algo = {
        "name": "rl2",
        "ppo": {
            "encoder_grad": True,
            "normalize_reward": True,
            "minibatches": minibatches,
            "recurrent_minibatch": minibatch,
        },
    }
    trainer = make_trainer(tmp_path, algo=algo)
    # Train the scaler first, so that the scaled rewards differ from the raw ones a lot.
    steps = (NUM_ENVS, HORIZON)
    trainer.return_scaler.update(torch.full(steps, 5.0), torch.zeros(steps, dtype=torch.bool))
    batch = collect_batch(trainer)
    raw = batch.get(("next", "reward")).clone()
    minibatch_rewards, ratio_stats = [], []
    forward = trainer.ppo_loss.forward

    def recording_forward(minibatch_td):
        minibatch_rewards.append(minibatch_td.get(("next", "reward")).clone())
        out = forward(minibatch_td)
        ratio_stats.append((out["kl_approx"].item(), out["clip_fraction"].item()))
        return out

    trainer.ppo_loss.forward = recording_forward
    gae_inputs = []
    gae = trainer.gae.forward

    def recording_gae(td, *args, **kwargs):
        gae_inputs.append(td.get(("next", SCALED_REWARD_KEY)).clone())
        return gae(td, *args, **kwargs)

    trainer.gae.forward = recording_gae
    trainer.ppo_update(batch)
    first_rewards, (kl, clip_fraction) = minibatch_rewards[0], ratio_stats[0]
    assert abs(kl) < 1e-6 and clip_fraction == 0.0  # float rounding of sub-batch re-encoding
    assert torch.isin(first_rewards, raw).all()  # the minibatch holds the raw rewards
    assert torch.equal(batch.get(("next", "reward")), raw)
    # GAE read the scaled ones: the raw rewards divided by the return scale, not themselves.
    (scaled,) = gae_inputs
    torch.testing.assert_close(scaled, trainer.return_scaler.scale(raw))
    assert not torch.allclose(scaled, raw)


def test_normalize_reward_state_is_checkpointed_and_resumes_exactly(tmp_path):
    cfg = dict(  # constant entropy: the resume raises total_frames (see the test above)
        algo={"ppo": {"normalize_reward": True, "entropy_coef_final": None}},
        train={"eval_interval": 0, "checkpoint_interval": 1},
    )
    straight = make_trainer(tmp_path / "straight", 720, **cfg)
    straight.train()
    make_trainer(tmp_path / "resumed", 480, **cfg).train()
    resumed = make_trainer(tmp_path / "resumed", 480, **cfg)
    assert resumed.return_scaler.count.item() == 480
    make_trainer(tmp_path / "resumed", 720, **cfg).train()

    def train_rows(run_dir):
        return [r for r in _metric_values(run_dir) if not r[2].startswith("eval/")]

    assert train_rows(tmp_path / "resumed") == train_rows(tmp_path / "straight")
    assert straight.return_scaler.count.item() == 720


def test_train_return_per_episode_with_two_tasks_per_batch(tmp_path):
    """train/return_episode_k is the mean over the k-th inner episodes a batch holds whole.

    With two tasks per env per batch it used to be the sum of both tasks' k-th returns, with
    episodes 5-8 logged as empty ones."""
    from torchrl_bamdp.evaluation.meta_test import completed_episode_returns

    trainer = make_trainer(tmp_path / "run", 480, train={"steps_per_batch": 120})
    batch = collect_batch(trainer)
    assert batch.shape == (NUM_ENVS, 120)
    reward = batch["next", "reward"].reshape(NUM_ENVS, 2, 4, 15).sum(-1)  # [env, task, episode]
    expected = reward.mean((0, 1))
    assert torch.allclose(completed_episode_returns(batch, 4), expected)
    # cut 5 steps off the start: the first task's first episode no longer counts
    cut = completed_episode_returns(batch[:, 5:], 4)
    assert torch.allclose(cut[0], reward[:, 1, 0].mean())
    assert torch.allclose(cut[1:], expected[1:])

    trainer.train()
    logged = {
        r["metric"]
        for r in read_rows(tmp_path / "run")
        if r["metric"].startswith("train/return_episode_")
    }
    assert logged == {f"train/return_episode_{k}" for k in (1, 2, 3, 4)}
